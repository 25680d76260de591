"""Release files with any strong hash apt accepts: the strongest listed is the one used.

Ubuntu 26.10 and later list only SHA512 in their InRelease; older archives
list SHA256 (and weaker ones, which never count). The fake archive on
127.0.0.1 carries exactly the fields each case needs; the `network` test reads
Ubuntu's real development series.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from sevimg.archive import deb
from sevimg.archive.compress import ArchiveError
from sevimg.archive.fetch import Fetcher, Network
from sevimg.archive.read import Reader
from sevimg.archive.sources import Source
from sevimg.catalog.index import load_catalog
from sevimg.imaging import keyrings
from sevimg.workspace import Workspace
from tests.conftest import REPO, CliFn
from tests.fakearchive import Served, Signer, write_suite
from tests.test_archive import archive_root, debian13_archive, point_at, server, signer

__all__ = ["archive_root", "server", "signer"]  # fixtures, used by name

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="never: gpg is required")

SHA256_A = "a" * 64
SHA512_B = "b" * 128


def release(fields: str) -> str:
    return f"Suite: x\nCodename: x\n{fields}"


def test_sha512_wins_over_sha256() -> None:
    text = release(
        f"SHA256:\n {SHA256_A} 10 main/Packages\nSHA512:\n {SHA512_B} 10 main/Packages\n"
    )
    entry = deb.parse_release(text, "here").files["main/Packages"]
    assert (entry.algorithm, entry.digest) == ("sha512", SHA512_B)


def test_sha512_alone_is_read() -> None:
    info = deb.parse_release(
        release(f"Acquire-By-Hash: yes\nSHA512:\n {SHA512_B} 10 main/Packages\n"), "here"
    )
    entry = info.files["main/Packages"]
    assert entry.algorithm == "sha512"
    assert (
        info.url("http://m/dists/x/", entry) == f"http://m/dists/x/main/by-hash/SHA512/{SHA512_B}"
    )


def test_sha256_alone_is_read() -> None:
    entry = deb.parse_release(release(f"SHA256:\n {SHA256_A} 10 main/Packages\n"), "here").files[
        "main/Packages"
    ]
    assert (entry.algorithm, entry.digest, entry.size) == ("sha256", SHA256_A, 10)


@pytest.mark.parametrize(
    "fields",
    [
        f"MD5Sum:\n {'c' * 32} 10 main/Packages\nSHA1:\n {'d' * 40} 10 main/Packages\n",
        "",
    ],
)
def test_only_weak_hashes_are_refused(fields: str) -> None:
    with pytest.raises(ArchiveError, match="lists no SHA512 or SHA256 checksums"):
        deb.parse_release(release(fields), "here")


@pytest.mark.parametrize(
    "line",
    [
        f"SHA512:\n {SHA256_A} 10 main/Packages\n",  # a SHA-256 length under SHA512
        f"SHA512:\n {'z' * 128} 10 main/Packages\n",
        f"SHA512:\n {SHA512_B} ten main/Packages\n",
    ],
)
def test_malformed_lines_name_the_field(line: str) -> None:
    with pytest.raises(ArchiveError, match="malformed SHA512 line"):
        deb.parse_release(release(line), "here")


def test_archive_reads_a_sha512_only_release(
    cli: CliFn,
    workspace: Path,
    server: Served,
    signer: Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEVIMG_CACHE", str(workspace / ".cache"))
    monkeypatch.delenv("SEVIMG_OFFLINE")
    point_at(workspace, server.url, signer.keyring)
    debian13_archive(server.root, signer, workspace, hashes=("MD5Sum", "SHA512"))
    inrelease = (server.root / "debian/dists/trixie/InRelease").read_text()
    assert "SHA512:" in inrelease and "SHA256:" not in inrelease
    run = cli("archive", "--json", "debian-13")
    assert run.code == 0, run.output
    (result,) = json.loads(run.stdout)["releases"]
    host = next(r for r in result["reports"] if r["role"] == "host")
    kinds = {c["kind"]: c["package"] for c in host["components"]}
    assert kinds["ovmf"] == "ovmf-amdsev"
    # Fetched by their SHA-512 (the only digest the Release names).
    assert server.count() and any("/by-hash/SHA512/" in p for p, _, _ in server.requests)


def test_a_file_that_does_not_match_its_sha512_is_refused(
    server: Served, signer: Signer, tmp_path: Path
) -> None:
    dist = write_suite(server.root / "debian", "trixie", signer, {"a": "1"}, hashes=("SHA512",))
    packages = dist / "main/binary-amd64/Packages.xz"
    for copy in [packages, *dist.glob("main/binary-amd64/by-hash/SHA512/*")]:
        copy.write_bytes(b"\xfd7zXZ\x00 not what was signed")
    reader = Reader(Fetcher(tmp_path / "cache", Network(timeout=5)))
    source = Source("apt", f"{server.url}/debian", "trixie", ("main",), str(signer.keyring))
    with pytest.raises(ArchiveError) as caught:
        reader.read(source, ())
    bad = b"\xfd7zXZ\x00 not what was signed"
    assert f"its sha512 is {hashlib.sha512(bad).hexdigest()}" in str(caught.value)


@pytest.mark.network
def test_ubuntu_development_series_lists_only_sha512(tmp_path: Path) -> None:
    """The real archive: the devel suite's InRelease has SHA512 only, and is read."""
    # The keyring as tools/setup gets it: the package sevimg.yaml pins, hash-checked.
    ws = Workspace(REPO)
    needed = [n for n in keyrings.needed(load_catalog(ws)) if "ubuntu" in n.path]
    keyrings.install(needed, keyrings.load_keyring_pins(ws), tmp_path / "c", root=tmp_path / "r")
    keyring = tmp_path / "r" / needed[0].path.lstrip("/")
    fetcher = Fetcher(tmp_path / "cache", Network(timeout=60))
    try:
        where = "http://archive.ubuntu.com/ubuntu/dists/devel/InRelease"
        text = deb.verify_inrelease(fetcher.get(where), str(keyring), where)
        info = deb.parse_release(text, where)
        entry = info.pick("main/binary-amd64/Packages")
        assert entry is not None
        assert entry.algorithm == "sha512"
        data = fetcher.get(
            info.url("http://archive.ubuntu.com/ubuntu/dists/devel/", entry),
            sha256=entry.digest,
            size=entry.size,
            algorithm=entry.algorithm,
        )
        assert hashlib.sha512(data).hexdigest() == entry.digest
    finally:
        fetcher.close()
