"""`sevimg serve`'s KDS cache and `sevimg kds fetch`, against a fake KDS on 127.0.0.1 that counts requests.

Hosts ask serve (`/kds/vcek/v1/…`); serve answers from its cache folder and
fetches only what it lacks, once per key, honouring KDS's 429s. Waits are
injected (a recording sleep), and concurrent requests are lined up with
events, never with sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sevimg.serve.files import load_jobs
from sevimg.serve.kds import KdsCache
from sevimg.serve.kdspaths import Key, parse_path
from sevimg.serve.server import Handle, serve
from tests import certkit
from tests.artifactkit import make_folder
from tests.conftest import CliFn
from tests.fakekds import FakeKds, closed_port_url, make_crl
from tests.fakekds import serve as serve_kds

HWID = certkit.CHIP_ID.hex()
SPLS = "blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
VCEK = f"/vcek/v1/Genoa/{HWID}?{SPLS}"
PATHS = {
    "vcek": VCEK,
    "chain": "/vcek/v1/Genoa/cert_chain",
    "crl": "/vcek/v1/Genoa/crl",
    "vlek_chain": "/vlek/v1/Genoa/cert_chain",
    "vlek_crl": "/vlek/v1/Genoa/crl",
}


@dataclass
class Waits:
    """A sleep that records instead of waiting, and moves its clock on by as much."""

    seconds: list[float] = field(default_factory=list)
    now: float = 1000.0

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def kds() -> Iterator[FakeKds]:
    state = FakeKds(certkit.make_chain("Genoa"), "Genoa", HWID)
    with serve_kds(state) as running:
        yield running


def cache_for(tmp_path: Path, kds: FakeKds | None, **kw: Any) -> KdsCache:
    kw.setdefault("sleep", Waits())
    return KdsCache(tmp_path / "kds", kds.url if kds else None, **kw)


@pytest.fixture
def lab(tmp_path: Path, kds: FakeKds) -> Iterator[Handle]:
    folder = make_folder(tmp_path / "out", ("debian-13",))
    handle = serve(load_jobs(folder), kds=cache_for(tmp_path, kds))
    yield handle
    handle.stop()


def kds_url(handle: Handle) -> str:
    return f"http://127.0.0.1:{handle.port}/kds"


def split(path: str) -> tuple[str, str]:
    where, _, query = path.partition("?")
    return where, query


# --- the paths ------------------------------------------------------------------------


def test_every_kds_path_is_answered_from_the_cache_after_one_fetch(
    lab: Handle, kds: FakeKds
) -> None:
    with httpx.Client(timeout=30) as host:
        for _ in range(3):
            for path in PATHS.values():
                answer = host.get(kds_url(lab) + path)
                assert answer.status_code == 200, (path, answer.text)
    assert {kind: kds.seen(kind) for kind in PATHS} == dict.fromkeys(PATHS, 1)
    with httpx.Client(timeout=30) as host:
        vcek = host.get(kds_url(lab) + VCEK)
        chain = host.get(kds_url(lab) + PATHS["chain"])
        crl = host.get(kds_url(lab) + PATHS["crl"])
    assert vcek.content == certkit.der(kds.chain.vcek)
    assert vcek.headers["content-type"] == "application/x-x509-ca-cert"
    assert chain.content == certkit.pem(kds.chain.ask) + certkit.pem(kds.chain.ark)
    assert crl.content == kds.crl and crl.headers["content-type"] == "application/pkix-crl"


def test_spls_are_matched_by_value_and_asked_in_amds_spelling(lab: Handle, kds: FakeKds) -> None:
    with httpx.Client(timeout=30) as host:
        first = host.get(
            f"{kds_url(lab)}/vcek/v1/Genoa/{HWID}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"
        )
        again = host.get(
            f"{kds_url(lab)}/vcek/v1/Genoa/{HWID}?ucodeSPL=115&snpSPL=08&teeSPL=00&blSPL=03"
        )
    assert first.status_code == again.status_code == 200
    assert kds.seen("vcek") == 1
    (_, path, query) = next(r for r in kds.requests if r[0] == "vcek")
    assert path == f"/vcek/v1/Genoa/{HWID}"
    assert query == {"blSPL": ["03"], "teeSPL": ["00"], "snpSPL": ["08"], "ucodeSPL": ["115"]}


def test_turin_vceks_carry_fmc_spl_first() -> None:
    hwid = certkit.TURIN_CHIP_ID[:8].hex()
    key = parse_path(f"/vcek/v1/Turin/{hwid}", "blSPL=1&teeSPL=0&snpSPL=4&ucodeSPL=72&fmcSPL=2")
    assert key.path == f"/vcek/v1/Turin/{hwid}?fmcSPL=02&blSPL=01&teeSPL=00&snpSPL=04&ucodeSPL=72"
    with pytest.raises(ValueError, match="fmcSPL"):
        parse_path(f"/vcek/v1/Turin/{hwid}", "blSPL=1&teeSPL=0&snpSPL=4&ucodeSPL=72")


@pytest.mark.parametrize(
    "path",
    [
        f"/vcek/v1/genoa/{HWID}?{SPLS}",  # KDS spells products with a capital
        f"/vcek/v1/Siena/{HWID}?{SPLS}",
        f"/vcek/v1/Genoa/{HWID.upper()}?{SPLS}",
        f"/vcek/v1/Genoa/{HWID[:-2]}?{SPLS}",
        f"/vcek/v1/Genoa/{HWID}",
        f"/vcek/v1/Genoa/{HWID}?blSPL=03&teeSPL=00&snpSPL=08",
        f"/vcek/v1/Genoa/{HWID}?{SPLS}&blSPL=04",
        f"/vcek/v1/Genoa/{HWID}?{SPLS}&x=1",
        f"/vcek/v1/Genoa/{HWID}?blSPL=256&teeSPL=00&snpSPL=08&ucodeSPL=115",
        f"/vcek/v1/Genoa/{HWID}?blSPL=-1&teeSPL=00&snpSPL=08&ucodeSPL=115",
        f"/vcek/v1/Genoa/{HWID}?blSPL=\u0663&teeSPL=00&snpSPL=08&ucodeSPL=115",
        f"/vlek/v1/Genoa/{HWID}?{SPLS}",  # no VLEK by chip ID at KDS
        "/vcek/v1/Genoa/cert_chain?x=1",
        "/vcek/v2/Genoa/cert_chain",
        "/vcek/v1/Genoa/../../../etc/passwd",
        "/vcek/v1/Genoa/cert_chain/",
        "/vcek/v1/Genoa",
        "/",
    ],
)
def test_what_is_not_a_kds_path_is_404_and_never_asked_upstream(
    tmp_path: Path, kds: FakeKds, path: str
) -> None:
    cache = cache_for(tmp_path, kds)
    where, query = split(path)
    answer = cache.answer(where, query)
    assert answer.status == 404 and answer.why
    assert kds.requests == []
    assert not (tmp_path / "kds").exists()


def test_a_raw_request_with_dot_segments_stays_in_the_cache(lab: Handle, kds: FakeKds) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", lab.port), timeout=30) as raw:
        raw.sendall(b"GET /kds/vcek/v1/../../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 404")
    assert kds.requests == []


# --- the folder -----------------------------------------------------------------------


def entry(tmp_path: Path, path: str) -> tuple[Path, Path]:
    key = parse_path(*split(path))
    data = tmp_path / "kds" / key.file
    return data, data.with_name(data.name + ".meta.json")


def test_entries_carry_validated_metadata(tmp_path: Path, kds: FakeKds) -> None:
    cache = cache_for(tmp_path, kds)
    assert cache.answer(*split(VCEK)).status == 200
    data, meta_file = entry(tmp_path, VCEK)
    meta = json.loads(meta_file.read_text())
    assert meta["path"] == VCEK and meta["size"] == len(data.read_bytes())
    assert meta["source"] == kds.url
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize(
    "damage",
    [
        "truncated data",
        "data replaced",
        "metadata not JSON",
        "metadata of another path",
        "metadata missing",
        "metadata deep",
        "metadata huge",
        "data huge",
        "valid metadata over garbage",
    ],
)
def test_a_corrupt_entry_is_dropped_and_fetched_again(
    tmp_path: Path, kds: FakeKds, damage: str
) -> None:
    lines: list[str] = []
    cache = cache_for(tmp_path, kds, log=lines.append)
    good = cache.answer(*split(VCEK))
    data, meta_file = entry(tmp_path, VCEK)
    meta = json.loads(meta_file.read_text())
    if damage == "truncated data":
        data.write_bytes(data.read_bytes()[:-10])
    elif damage == "data replaced":
        data.write_bytes(certkit.der(kds.chain.ask))
    elif damage == "metadata not JSON":
        meta_file.write_bytes(b"\xff{")
    elif damage == "metadata of another path":
        meta_file.write_text(json.dumps({**meta, "path": "/vcek/v1/Genoa/cert_chain"}))
    elif damage == "metadata missing":
        meta_file.unlink()
    elif damage == "metadata deep":
        meta_file.write_text("[" * 100_000)
    elif damage == "metadata huge":
        meta_file.write_text(json.dumps({**meta, "pad": "x" * (1 << 17)}))
    elif damage == "data huge":
        with data.open("ab") as handle:
            handle.truncate(64 << 20)  # sparse: 64 MiB that are never read whole
    else:
        import hashlib

        garbage = b"not a certificate"
        data.write_bytes(garbage)
        meta_file.write_text(
            json.dumps(
                {**meta, "size": len(garbage), "sha256": hashlib.sha256(garbage).hexdigest()}
            )
        )
    again = cache.answer(*split(VCEK))
    assert again.status == 200 and again.body == good.body
    assert kds.seen("vcek") == 2
    assert json.loads(meta_file.read_text())["path"] == VCEK  # whole again
    if damage != "metadata missing":
        assert any("dropped, fetched again" in line for line in lines)


def test_offline_serves_only_the_cache(tmp_path: Path, kds: FakeKds) -> None:
    offline = cache_for(tmp_path, None)
    miss = offline.answer(*split(VCEK))
    assert miss.status == 404 and "sevimg kds fetch" in miss.why
    assert kds.requests == []
    assert cache_for(tmp_path, kds).answer(*split(VCEK)).status == 200
    hit = offline.answer(*split(VCEK))
    assert hit.status == 200 and hit.body == certkit.der(kds.chain.vcek)
    assert kds.seen("vcek") == 1


def test_a_crl_past_its_next_update_is_fetched_again(tmp_path: Path, kds: FakeKds) -> None:
    kds.crl = make_crl(kds.chain, next_update=datetime(2025, 1, 1, tzinfo=UTC))
    now = [datetime(2024, 6, 1, tzinfo=UTC).timestamp()]
    cache = cache_for(tmp_path, kds, wall=lambda: now[0])
    assert cache.answer(*split(PATHS["crl"])).status == 200
    assert cache.answer(*split(PATHS["crl"])).status == 200
    assert kds.seen("crl") == 1
    now[0] = datetime(2025, 6, 1, tzinfo=UTC).timestamp()
    fresh = make_crl(kds.chain, next_update=datetime(2026, 1, 1, tzinfo=UTC))
    kds.crl = fresh
    assert cache.answer(*split(PATHS["crl"])).body == fresh
    assert kds.seen("crl") == 2
    # Past its nextUpdate and KDS down: the old CRL is still served rather than none.
    now[0] = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    kds.faults["crl"] = [404]
    assert cache.answer(*split(PATHS["crl"])).body == fresh


# --- upstream -------------------------------------------------------------------------


def test_one_upstream_request_per_key_however_many_hosts_ask(tmp_path: Path, kds: FakeKds) -> None:
    cache = cache_for(tmp_path, kds)
    kds.hold = threading.Event()
    answers: list[int] = []

    def ask() -> None:
        answers.append(cache.answer(*split(VCEK)).status)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        assert kds.arrived.wait(30)
        assert cache.wait_for_requests(VCEK, 6, 30)  # all six hold or wait for its turn
    finally:
        kds.hold.set()
    for thread in threads:
        thread.join(30)
    assert answers == [200] * 6
    assert kds.seen("vcek") == 1


def test_429_and_retry_after_are_honoured(tmp_path: Path, kds: FakeKds) -> None:
    waits = Waits()
    cache = cache_for(tmp_path, kds, sleep=waits, clock=waits.clock)
    kds.faults["vcek"] = [429, 429]
    kds.retry_after = "3"
    assert cache.answer(*split(VCEK)).status == 200
    assert waits.seconds == [3.0, 3.0] and kds.seen("vcek") == 3


def test_a_long_retry_after_is_passed_on_and_holds_every_key(tmp_path: Path, kds: FakeKds) -> None:
    now = [1000.0]
    cache = cache_for(tmp_path, kds, clock=lambda: now[0])
    kds.faults["vcek"] = [429]
    kds.retry_after = "3600"
    answer = cache.answer(*split(VCEK))
    assert answer.status == 503 and answer.retry_after == 3600
    # Another key, during the quiet time KDS asked for: not sent upstream at all.
    other = cache.answer(*split(PATHS["chain"]))
    assert other.status == 503 and other.retry_after is not None and other.retry_after > 3500
    assert kds.seen("chain") == 0 and kds.seen("vcek") == 1
    now[0] += 3601
    assert cache.answer(*split(PATHS["chain"])).status == 200


def test_server_errors_are_retried_with_backoff(tmp_path: Path, kds: FakeKds) -> None:
    waits = Waits()
    cache = cache_for(tmp_path, kds, sleep=waits, clock=waits.clock)
    kds.faults["chain"] = [500, 503, 502]
    kds.retry_after = None
    assert cache.answer(*split(PATHS["chain"])).status == 200
    assert waits.seconds == [1.0, 2.0, 4.0]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"\x30" * (2 << 20), 502),  # over the cap
        (b"<html>rate limited</html>", 502),  # not a certificate
        (b"", 502),
    ],
)
def test_a_bad_answer_is_refused_and_not_cached(
    tmp_path: Path, kds: FakeKds, body: bytes, status: int
) -> None:
    cache = cache_for(tmp_path, kds)
    kds.bodies["vcek"] = body
    answer = cache.answer(*split(VCEK))
    assert answer.status == status
    assert not entry(tmp_path, VCEK)[0].exists()
    del kds.bodies["vcek"]
    assert cache.answer(*split(VCEK)).status == 200


def test_a_kds_that_never_answers_is_cut_off_by_the_deadline(tmp_path: Path, kds: FakeKds) -> None:
    cache = cache_for(tmp_path, kds, deadline=0.5)
    kds.hold = threading.Event()
    try:
        answer = cache.answer(*split(VCEK))
    finally:
        kds.hold.set()
    assert answer.status in (503, 504) and answer.retry_after is not None


def test_an_unknown_chip_is_404(tmp_path: Path, kds: FakeKds) -> None:
    other = "ab" * 64
    answer = cache_for(tmp_path, kds).answer(f"/vcek/v1/Genoa/{other}", SPLS)
    assert answer.status == 404 and "KDS knows no such chip" in answer.why


def test_an_unreachable_kds_is_a_clear_error(tmp_path: Path) -> None:
    cache = KdsCache(tmp_path / "kds", closed_port_url(), sleep=Waits(), deadline=5)
    answer = cache.answer(*split(VCEK))
    assert answer.status in (503, 504) and "ConnectError" in answer.why


# --- sevimg kds fetch -----------------------------------------------------------------


def test_kds_fetch_fills_the_cache_for_an_offline_serve(
    tmp_path: Path, kds: FakeKds, cli: CliFn
) -> None:
    report = tmp_path / "report.bin"
    report.write_bytes(certkit.signed_report(certkit.ReportSpec()))
    folder = tmp_path / "cache"
    run = cli("kds", "fetch", str(report), "--kds", kds.url, "--kds-cache", str(folder))
    assert run.code == 0, run.output
    assert {k: kds.seen(k) for k in PATHS} == dict.fromkeys(PATHS, 1)
    again = cli("kds", "fetch", str(report), "--kds", kds.url, "--kds-cache", str(folder))
    assert again.code == 0 and "cached " in again.output
    assert kds.seen("vcek") == 1  # nothing fetched twice
    offline = KdsCache(folder, None)
    spec = certkit.ReportSpec()
    key = Key(
        "vcek",
        "vcek",
        "Genoa",
        HWID,
        tuple(
            zip(
                ("blSPL", "teeSPL", "snpSPL", "ucodeSPL"),
                (
                    spec.reported_tcb.bl,
                    spec.reported_tcb.tee,
                    spec.reported_tcb.snp,
                    spec.reported_tcb.ucode,
                ),
                strict=True,
            )
        ),
    )
    assert offline.answer(*split(key.path)).body == certkit.der(kds.chain.vcek)


def test_kds_fetch_by_product_and_vcek_path(tmp_path: Path, kds: FakeKds, cli: CliFn) -> None:
    folder = tmp_path / "cache"
    run = cli(
        "kds", "fetch", "--product", "genoa", "--vcek", f"Genoa/{HWID}?{SPLS}",
        "--kds", kds.url, "--kds-cache", str(folder),
    )  # fmt: skip
    assert run.code == 0, run.output
    assert {k: kds.seen(k) for k in PATHS} == dict.fromkeys(PATHS, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to fetch"),
        (["--product", "Siena"], "--product 'Siena'"),
        (["--vcek", "Genoa/xyz?blSPL=1"], "--vcek"),
        (["--product", "Genoa", "--kds", "ftp://x"], "--kds"),
    ],
)
def test_kds_fetch_refuses_bad_input(
    tmp_path: Path, cli: CliFn, args: list[str], message: str
) -> None:
    run = cli("kds", "fetch", *args, "--kds-cache", str(tmp_path / "cache"))
    assert run.code == 1 and message in run.output and "Traceback" not in run.output


def test_kds_fetch_says_what_failed(tmp_path: Path, cli: CliFn, kds: FakeKds) -> None:
    kds.faults["crl"] = [404]
    run = cli("kds", "fetch", "--product", "Genoa", "--kds", kds.url, "--kds-cache", str(tmp_path))
    assert run.code == 1
    assert "1 of 4 could not be fetched" in run.output and "/vcek/v1/Genoa/crl" in run.output


def test_serve_refuses_kds_and_kds_offline_together(tmp_path: Path, cli: CliFn) -> None:
    folder = make_folder(tmp_path / "out", ("debian-13",))
    both = ["--kds", "http://127.0.0.1:1", "--kds-offline"]
    run = cli("serve", "--from", str(folder), "--results", str(tmp_path / "r"), *both)
    assert run.code == 1 and "--kds and --kds-offline" in run.output
    bad = cli("serve", "--from", str(folder), "--results", str(tmp_path / "r"), "--kds", "ftp://x")
    assert bad.code == 1 and "--kds" in bad.output and "Traceback" not in bad.output


def test_a_slow_kds_is_not_cut_off_by_the_request_deadline(tmp_path: Path, kds: FakeKds) -> None:
    """Once the host's request is read, its deadline is off: the fetch has the cache's own."""
    folder = make_folder(tmp_path / "out", ("debian-13",))
    handle = serve(load_jobs(folder), kds=cache_for(tmp_path, kds), deadline=0.5)
    kds.hold = threading.Event()
    got: list[int] = []
    asker = threading.Thread(
        target=lambda: got.append(httpx.get(kds_url(handle) + VCEK, timeout=60).status_code)
    )
    try:
        asker.start()
        assert kds.arrived.wait(30)  # serve is fetching for the host now
        deadlines = handle.config.deadlines
        assert deadlines is not None and deadlines.armed == 0
    finally:
        kds.hold.set()
        asker.join(60)
        handle.stop()
    assert got == [200]
