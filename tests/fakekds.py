"""A fake AMD KDS: a real HTTP server on 127.0.0.1 serving a synthetic chain.

It answers KDS's routes (`/vcek/v1/{product}/{hwid}?...SPL=..` with the
VCEK as DER, `/vcek/v1/{product}/cert_chain` with ASK and ARK as PEM,
`/vcek/v1/{product}/crl` with a CRL signed by the ARK as DER, and the
`/vlek/v1/{product}/` chain and CRL) and 404 for anything else, the way
kdsintf.amd.com does. A CRL set in `crls[key]` ("vcek"/"vlek") is served
instead, as route kind `crl-<key>`. Tests queue faults per route kind
(`faults["vcek"] = [429, 503]`) that are answered first, with a
Retry-After header when `retry_after` is set, and read `requests` (counted
per kind with `seen`) afterwards. `hold` makes every request wait (after it
is counted and `arrived` is set) until the test sets it: a way to have
several requests in flight at once without sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.certkit import PSS, SynthChain, der, pem, rsa_key

NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)


def make_crl(chain: SynthChain, next_update: datetime | None = None) -> bytes:
    """A CRL (DER) issued by the chain's ARK, revoking nothing."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(chain.ark.subject)
        .last_update(NOT_BEFORE)
        .next_update(next_update or NOT_BEFORE + timedelta(days=365 * 30))
    )
    crl = builder.sign(rsa_key("ark"), hashes.SHA384(), rsa_padding=PSS)  # as AMD signs
    return crl.public_bytes(serialization.Encoding.DER)


@dataclass
class FakeKds:
    """The server's state: what it serves, the faults still queued, what it saw."""

    chain: SynthChain
    product: str
    hwid: str
    faults: dict[str, list[int]] = field(default_factory=dict)
    retry_after: str | None = "0"
    bodies: dict[str, bytes] = field(default_factory=dict)  # replaces what a route answers
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    crls: dict[str, bytes] = field(default_factory=dict)  # "vcek"/"vlek" -> the CRL served
    url: str = ""
    hold: threading.Event | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    crl: bytes = b""

    def kind(self, path: str) -> str:
        """vcek, chain, crl, vlek_chain, vlek_crl, or unknown."""
        parts = path.strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["v1", self.product, "crl"] and parts[0] in self.crls:
            return f"crl-{parts[0]}"
        if len(parts) != 4 or parts[1] != "v1" or parts[2] != self.product:
            return "unknown"
        if parts[0] == "vlek" and parts[3] in ("cert_chain", "crl"):
            return "vlek_chain" if parts[3] == "cert_chain" else "vlek_crl"
        if parts[0] != "vcek":
            return "unknown"
        if parts[3] == "cert_chain":
            return "chain"
        if parts[3] == "crl":
            return "crl"
        return "vcek" if parts[3] == self.hwid else "unknown"

    def seen(self, kind: str) -> int:
        """How many requests of a kind (vcek, chain, unknown) arrived."""
        return sum(1 for k, _, _ in self.requests if k == kind)


def _handler(state: FakeKds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(
            self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            split = urlsplit(self.path)
            kind = state.kind(split.path)
            state.requests.append((kind, split.path, parse_qs(split.query)))
            state.authorizations.append(self.headers.get("Authorization"))
            state.arrived.set()
            if state.hold is not None:
                state.hold.wait(timeout=60)
            queued = state.faults.get(kind, [])
            if queued:
                status = queued.pop(0)
                extra = {"Retry-After": state.retry_after} if state.retry_after is not None else {}
                self._send(
                    status,
                    b"Too Many Requests\n" if status == 429 else b"error\n",
                    "text/plain",
                    extra,
                )
            elif kind in state.bodies:
                self._send(200, state.bodies[kind], "application/octet-stream")
            elif kind.startswith("crl-"):
                self._send(200, state.crls[kind[4:]], "application/pkix-crl")
            elif kind == "vcek":
                self._send(200, der(state.chain.vcek), "application/x-x509-ca-cert")
            elif kind in ("chain", "vlek_chain"):
                self._send(
                    200, pem(state.chain.ask) + pem(state.chain.ark), "application/x-pem-file"
                )
            elif kind in ("crl", "vlek_crl"):
                state.crl = state.crl or make_crl(state.chain)
                self._send(200, state.crl, "application/pkix-crl")
            else:
                self._send(404, b"Not Found\n", "text/plain")

    return Handler


@contextmanager
def serve(state: FakeKds) -> Iterator[FakeKds]:
    """Run the server on a free port of 127.0.0.1 for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
