"""A real-format package archive on 127.0.0.1: Debian layout signed with a throwaway
gpg key, and rpm-md repositories. The only fake is where it is served from.

The server answers ETag / If-Modified-Since with 304, counts every request, and
has routes for the network's bad answers (a redirect loop, HTTP 500).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import zstandard


@dataclass
class Served:
    """The running server: its base URL and what it was asked."""

    url: str
    root: Path
    requests: list[tuple[str, int, bool]] = field(
        default_factory=list
    )  # path, status, validators sent

    def count(self, suffix: str = "", status: int | None = None) -> int:
        return sum(
            1 for path, code, _ in self.requests if path.endswith(suffix) and status in (None, code)
        )


def serve(root: Path) -> Iterator[Served]:
    """Serve `root` over HTTP on 127.0.0.1 until the generator is closed."""
    state = Served("", root)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:  # as `sevimg doctor` probes: the status, no body
            path = self.path.split("?", 1)[0]
            file = (root / path.lstrip("/")).resolve()
            found = root.resolve() in file.parents and file.is_file()
            state.requests.append((path, 200 if found else 404, False))
            self.send_response(200 if found else 404)
            self.send_header("Content-Length", str(file.stat().st_size if found else 0))
            self.end_headers()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            validators = "If-None-Match" in self.headers or "If-Modified-Since" in self.headers
            if path.startswith("/loop"):
                state.requests.append((path, 302, validators))
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
                return
            if path.startswith("/broken/"):
                state.requests.append((path, 500, validators))
                self.send_error(500)
                return
            file = (root / path.lstrip("/")).resolve()
            if root.resolve() not in file.parents or not file.is_file():
                state.requests.append((path, 404, validators))
                self.send_error(404)
                return
            data = file.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                state.requests.append((path, 304, validators))
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            state.requests.append((path, 200, validators))
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", formatdate(file.stat().st_mtime, usegmt=True))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class Signer:
    """A throwaway gpg key: signs InRelease files; its public keyring is what gpgv checks."""

    def __init__(self, home: Path, name: str = "sevimg test archive") -> None:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        self._gpg("--quick-gen-key", "--passphrase", "", name, "ed25519", "sign", "never")
        self.keyring = home / "archive-keyring.gpg"
        self.keyring.write_bytes(self._gpg("--export"))

    def _gpg(self, *args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(
            ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", *args],
            input=data,
            env=self.env,
            capture_output=True,
            check=True,
        ).stdout

    def clearsign(self, text: bytes) -> bytes:
        return self._gpg("--clearsign", "--digest-algo", "SHA256", data=text)


def packages_text(packages: Mapping[str, str], provides: Mapping[str, str] | None = None) -> bytes:
    stanzas = []
    for name, version in sorted(packages.items()):
        lines = [f"Package: {name}", f"Version: {version}", "Architecture: amd64"]
        if provides and name in provides:
            lines.append(f"Provides: {provides[name]}")
        lines.append(f"Filename: pool/main/{name[0]}/{name}/{name}_{version}_amd64.deb")
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas).encode()


def contents_text(files: Mapping[str, Sequence[str]]) -> bytes:
    return "".join(
        f"{path.lstrip('/'):<60} {','.join(f'misc/{p}' for p in owners)}\n"
        for path, owners in sorted(files.items())
    ).encode()


def write_suite(
    root: Path,
    suite: str,
    signer: Signer,
    packages: Mapping[str, str],
    *,
    provides: Mapping[str, str] | None = None,
    files: Mapping[str, Sequence[str]] | None = None,
    component: str = "main",
    hashes: Sequence[str] = ("SHA256",),
    fields: str = "",
    codename: str = "",
) -> Path:
    """dists/SUITE/ with Packages.xz, Contents-amd64.gz and a signed InRelease (by-hash too).

    `hashes`: the checksum fields the Release lists (SHA256, SHA512, MD5Sum, ...), each
    with its by-hash copies; `fields`: extra Release lines (Version: 27.04); `codename`:
    the Codename when it is not the suite's name (devel → tenacious).
    """
    dist = root / "dists" / suite
    indexes = {
        f"{component}/binary-amd64/Packages.xz": lzma.compress(packages_text(packages, provides)),
        f"{component}/Contents-amd64.gz": gzip.compress(contents_text(files or {}), mtime=0),
    }
    algorithms = {"MD5Sum": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
    sums: dict[str, list[str]] = {name: [] for name in hashes}
    for rel, data in indexes.items():
        target = dist / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        for name in hashes:
            digest = hashlib.new(algorithms[name], data).hexdigest()
            by_hash = target.parent / "by-hash" / name / digest
            by_hash.parent.mkdir(parents=True, exist_ok=True)
            by_hash.write_bytes(data)
            sums[name].append(f" {digest} {len(data):>10} {rel}")
    release = (
        f"Origin: sevimg-test\nSuite: {suite}\nCodename: {codename or suite}\n{fields}"
        "Architectures: amd64\n"
        f"Components: {component}\nAcquire-By-Hash: yes\n"
        + "".join(f"{name}:\n" + "\n".join(lines) + "\n" for name, lines in sums.items())
    )
    (dist / "InRelease").write_bytes(signer.clearsign(release.encode()))
    return dist


def write_rpm_repo(
    root: Path,
    packages: Mapping[str, str],
    files: Mapping[str, Sequence[str]],
    *,
    provides: Mapping[str, str] | None = None,
) -> Path:
    """repodata/ with repomd.xml, primary.xml.zst and filelists.xml.gz (sha256 checksums)."""
    common = "http://linux.duke.edu/metadata/common"
    rpm = "http://linux.duke.edu/metadata/rpm"
    body = []
    for name, evr in sorted(packages.items()):
        epoch, _, rest = evr.rpartition(":")
        ver, _, rel = rest.rpartition("-")
        extra = ""
        if provides and name in provides:
            extra = f'<rpm:provides><rpm:entry name="{provides[name]}"/></rpm:provides>'
        body.append(
            f'<package type="rpm"><name>{name}</name><arch>x86_64</arch>'
            f'<version epoch="{epoch or 0}" ver="{ver}" rel="{rel}"/>'
            f"<format>{extra}</format></package>"
        )
    primary = (
        f'<?xml version="1.0"?><metadata xmlns="{common}" xmlns:rpm="{rpm}" '
        f'packages="{len(body)}">' + "".join(body) + "</metadata>"
    ).encode()
    owners: dict[str, list[str]] = {}
    for path, names in files.items():
        for name in names:
            owners.setdefault(name, []).append(path)
    filelists = (
        '<?xml version="1.0"?><filelists xmlns="http://linux.duke.edu/metadata/filelists">'
        + "".join(
            f'<package pkgid="x" name="{n}" arch="x86_64"><version epoch="0" ver="1" rel="1"/>'
            + "".join(f"<file>{p}</file>" for p in paths)
            + "</package>"
            for n, paths in sorted(owners.items())
        )
        + "</filelists>"
    ).encode()
    repodata = root / "repodata"
    repodata.mkdir(parents=True, exist_ok=True)
    entries = []
    for kind, name, data in (
        ("primary", "primary.xml.zst", zstandard.ZstdCompressor().compress(primary)),
        ("filelists", "filelists.xml.gz", gzip.compress(filelists, mtime=0)),
    ):
        digest = hashlib.sha256(data).hexdigest()
        (repodata / f"{digest}-{name}").write_bytes(data)
        entries.append(
            f'<data type="{kind}"><checksum type="sha256">{digest}</checksum>'
            f'<location href="repodata/{digest}-{name}"/><size>{len(data)}</size></data>'
        )
    (repodata / "repomd.xml").write_text(
        '<?xml version="1.0"?><repomd xmlns="http://linux.duke.edu/metadata/repo">'
        + "".join(entries)
        + "</repomd>"
    )
    return repodata
