"""`sevimg archive` against a real-format archive served on 127.0.0.1 (signed with a test key).

Every bad answer the issue lists: bad signatures, hash mismatches, truncated
compressed data, a repomd naming a missing file, 404/500, an unreachable
mirror, a redirect loop; the cache's 304s; --offline; --update keeping comments.
"""

from __future__ import annotations

import json
import lzma
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sevimg.archive import deb, rpmmd
from sevimg.archive.check import upstream
from sevimg.archive.compress import ArchiveError, decompress
from sevimg.archive.fetch import Fetcher, Network
from sevimg.archive.read import Reader
from sevimg.archive.sources import Source
from sevimg.archive.update import updated_text
from sevimg.catalog.index import load_catalog
from sevimg.catalog.load import load_text
from sevimg.catalog.resolve import resolve_all
from sevimg.workspace import Workspace
from tests.conftest import CliFn
from tests.fakearchive import Served, Signer, serve, write_rpm_repo, write_suite

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="never: gpg is required")

FIRMWARE = "/usr/share/ovmf/OVMF.amdsev.fd"
QEMU = "/usr/bin/qemu-system-x86_64"
VERSIONS = {
    "linux-image-amd64": "6.12.118-1",
    "qemu-system-x86": "1:10.0.13+ds-0+deb13u1",
    "systemd": "257.13-1~deb13u1",
}


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return Signer(tmp_path_factory.mktemp("gnupg"))


@pytest.fixture
def archive_root(tmp_path: Path) -> Path:
    return tmp_path / "archive"


@pytest.fixture
def server(archive_root: Path) -> Iterator[Served]:
    archive_root.mkdir()
    yield from serve(archive_root)


def point_at(workspace: Path, url: str, keyring: Path) -> None:
    """The workspace reads Debian from `url`, signed by `keyring`."""
    family = workspace / "images/families/debian.yaml"
    family.write_text(
        family.read_text().replace("/usr/share/keyrings/debian-archive-keyring.gpg", str(keyring))
    )
    distro = workspace / "images/debian.yaml"
    distro.write_text(distro.read_text().replace("http://deb.debian.org/debian", f"{url}/debian"))
    (workspace / "sevimg.local.yaml").write_text(
        f"schema_version: 1\nmirrors:\n  debian:\n    url: {url}/debian\n"
        f"    security_url: {url}/debian-security\n"
    )


def debian13_archive(
    root: Path,
    signer: Signer,
    workspace: Path,
    *,
    drop: str = "",
    hashes: tuple[str, ...] = ("SHA256",),
) -> None:
    """trixie (+ -updates, -security) with every package debian-13 installs, and forky with ovmf-amdsev."""
    specs, problems = resolve_all(load_catalog(Workspace(workspace)).get("debian-13"))
    assert not problems
    names = sorted({p for spec in specs for p in spec.packages} - {"ovmf-amdsev", drop})
    packages = {n: VERSIONS.get(n, "1.0-1") for n in names}
    # jq is virtual here: jq-real provides it.
    packages.pop("jq", None)
    packages["jq-real"] = "1.7-1"
    files = {QEMU: ["qemu-system-x86"]}
    write_suite(
        root / "debian",
        "trixie",
        signer,
        packages,
        provides={"jq-real": "jq"},
        files=files,
        hashes=hashes,
    )
    write_suite(root / "debian", "trixie-updates", signer, {"tzdata": "2026a-1"}, hashes=hashes)
    write_suite(
        root / "debian-security", "trixie-security", signer, {"openssl": "3.5.1-1"}, hashes=hashes
    )
    write_suite(
        root / "debian",
        "forky",
        signer,
        {"ovmf-amdsev": "2026.08+ds-2", "ovmf": "2026.08+ds-2", "systemd": "262-1"},
        files={FIRMWARE: ["ovmf-amdsev"]},
        hashes=hashes,
    )


@pytest.fixture
def ws(workspace: Path, server: Served, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEVIMG_CACHE", str(workspace / ".cache"))
    monkeypatch.delenv("SEVIMG_OFFLINE")
    point_at(workspace, server.url, signer.keyring)
    debian13_archive(server.root, signer, workspace)
    return workspace


def as_json(cli: CliFn, *args: str) -> tuple[int, Any]:
    run = cli("archive", "--json", *args)
    return run.code, json.loads(run.stdout)


def test_reports_true_versions_and_the_firmware(cli: CliFn, ws: Path, server: Served) -> None:
    code, data = as_json(cli, "debian-13")
    assert code == 0, data
    (release,) = data["releases"]
    host = next(r for r in release["reports"] if r["role"] == "host")
    got = {c["kind"]: (c["package"], c["version"], c["upstream"]) for c in host["components"]}
    assert got["qemu"] == ("qemu-system-x86", "1:10.0.13+ds-0+deb13u1", "10.0.13")
    assert got["ovmf"] == ("ovmf-amdsev", "2026.08+ds-2", "2026.08")
    # forky is pinned to ovmf-amdsev: its newer systemd is not what the build gets.
    assert got["systemd"] == ("systemd", "257.13-1~deb13u1", "257.13")
    files = {f["what"]: f for f in host["files"]}
    assert files["SEV firmware"]["owners"] == ["ovmf-amdsev"]
    assert files["QEMU binary"]["owners"] == ["qemu-system-x86"]
    jq = next(p for p in host["packages"] if p["name"] == "jq")
    assert jq["via"] == "jq-real"
    assert server.count("/InRelease", 200) == 4


def test_second_run_revalidates_and_offline_needs_no_network(
    cli: CliFn, ws: Path, server: Served
) -> None:
    assert cli("archive", "debian-13").code == 0
    first = len(server.requests)
    assert cli("archive", "debian-13").code == 0
    second = server.requests[first:]
    # Only the InRelease files are asked again, with validators, and answered 304;
    # the indexes they name are kept by hash.
    assert sorted(p for p, _, _ in second) == sorted(
        p for p, _, _ in server.requests[:first] if p.endswith("/InRelease")
    )
    assert all(code == 304 and validators for _, code, validators in second)
    before = len(server.requests)
    assert cli("archive", "debian-13", "--offline").code == 0
    assert len(server.requests) == before


def test_offline_without_cache_says_what_is_missing(cli: CliFn, ws: Path, server: Served) -> None:
    run = cli("archive", "debian-13", "--offline")
    assert run.code == 1
    assert "--offline" in run.output and "trixie/InRelease is not in the cache" in run.output
    assert not server.requests


def test_missing_package_names_the_repositories(
    cli: CliFn, ws: Path, server: Served, signer: Signer
) -> None:
    debian13_archive(server.root, signer, ws, drop="avahi-daemon")
    run = cli("archive", "debian-13")
    assert run.code == 1
    assert "package 'avahi-daemon' is in no repository the build reads" in run.output
    assert f"{server.url}/debian trixie main" in run.output
    assert "Traceback" not in run.output


def test_without_the_forky_repository_the_firmware_is_missing(cli: CliFn, ws: Path) -> None:
    release = ws / "images/debian-13.yaml"
    text = release.read_text()
    release.write_text(text[: text.index("extra_repositories:")])
    code, data = as_json(cli, "debian-13")
    assert code == 1
    host = next(r for r in data["releases"][0]["reports"] if r["role"] == "host")
    assert f"SEV firmware {FIRMWARE} is not in ovmf-amdsev: no package ships it" in host["errors"]
    assert any("'ovmf-amdsev' is in no repository" in e for e in host["errors"])


def test_drift_fails_and_update_writes_it_keeping_comments(cli: CliFn, ws: Path) -> None:
    release = ws / "images/debian-13.yaml"
    before = release.read_text().replace('qemu: "10.0.13"', 'qemu: "10.0.12"  # was checked')
    release.write_text(before)
    run = cli("archive", "debian-13")
    assert run.code == 1
    assert "the catalog declares 10.0.12, the archive has 10.0.13" in run.output
    run = cli("archive", "debian-13", "--update")
    assert run.code == 0, run.output
    after = release.read_text()
    assert after == before.replace(
        'qemu: "10.0.12"  # was checked', 'qemu: "10.0.13"  # was checked'
    )
    assert cli("validate", "debian-13").code == 0


def test_new_fills_in_versions_and_warns_about_what_is_missing(cli: CliFn, ws: Path) -> None:
    run = cli("new", "debian-77", "--codename", "trixie", "--bare", "--no-render")
    assert run.code == 0, run.output
    text = (ws / "images/debian-77.yaml").read_text()
    assert 'kernel: "6.12.118"' in text and 'qemu: "10.0.13"' in text
    # trixie alone has no ovmf-amdsev: the certification failure, before any build.
    assert "archive: error: host: package 'ovmf-amdsev' is in no repository" in run.output
    assert f"SEV firmware {FIRMWARE} is not in ovmf-amdsev" in run.output
    assert "fix what the archive lacks" in run.output
    assert cli("validate", "debian-77").code == 0


def test_new_offline_says_it_could_not_check(
    cli: CliFn, ws: Path, server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli("new", "debian-77", "--codename", "trixie", "--bare", "--no-render", "--offline")
    assert run.code == 0, run.output
    assert "archive: could not check the release's archive: offline" in run.output
    assert "versions:" not in (ws / "images/debian-77.yaml").read_text()
    assert not server.requests


def test_new_with_an_unreachable_archive_says_so(cli: CliFn, ws: Path) -> None:
    (ws / "sevimg.local.yaml").write_text(
        "schema_version: 1\nmirrors:\n  debian:\n    url: http://127.0.0.1:9/debian\n"
    )
    run = cli("new", "debian-77", "--codename", "trixie", "--bare", "--no-render")
    assert run.code == 0, run.output
    assert "archive: could not check the release's archive: cannot reach 127.0.0.1:9" in run.output


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("signature", "the signature does not verify"),
        ("other-key", "the signature does not verify"),
        ("hash", "but the index that names it says"),
        ("truncated", "the compressed index is truncated"),
        ("404", "HTTP 404"),
    ],
)
def test_bad_archives_are_clear_errors(
    cli: CliFn, ws: Path, server: Served, signer: Signer, tmp_path: Path, tamper: str, expected: str
) -> None:
    dist = server.root / "debian/dists/trixie"
    inrelease = dist / "InRelease"
    packages = dist / "main/binary-amd64/Packages.xz"
    if tamper == "signature":
        inrelease.write_bytes(inrelease.read_bytes().replace(b"Suite: trixie", b"Suite: trixiE"))
    elif tamper == "other-key":
        intruder = Signer(tmp_path / "intruder", "someone else")
        text = inrelease.read_bytes()
        body = text.split(b"\n\n", 1)[1].split(b"-----BEGIN PGP SIGNATURE", 1)[0]
        inrelease.write_bytes(intruder.clearsign(body))
    elif tamper == "hash":
        data = lzma.compress(
            lzma.decompress(packages.read_bytes()) + b"\nPackage: evil\nVersion: 1\n"
        )
        for path in (packages, *dist.glob("main/binary-amd64/by-hash/SHA256/*")):
            path.write_bytes(data)
    elif tamper == "truncated":
        # The archive's own key signs the truncated file's hash: only the data is bad.
        good = packages.read_bytes()
        cut = good[: len(good) // 2]
        packages.write_bytes(cut)
        for old in dist.glob("main/binary-amd64/by-hash/SHA256/*"):
            old.unlink()
        release = deb.parse_release(
            signer._gpg("--decrypt", data=inrelease.read_bytes()).decode(), "x"
        )
        entry = release.files["main/binary-amd64/Packages.xz"]
        text = inrelease.read_bytes().split(b"\n\n", 1)[1].split(b"-----BEGIN PGP SIGNATURE", 1)[0]
        import hashlib

        text = text.replace(entry.digest.encode(), hashlib.sha256(cut).hexdigest().encode())
        text = text.replace(f"{entry.size:>10}".encode(), f"{len(cut):>10}".encode())
        inrelease.write_bytes(signer.clearsign(text.rstrip(b"\n") + b"\n"))
    elif tamper == "404":
        shutil.rmtree(dist)
    run = cli("archive", "debian-13")
    assert run.code == 1
    assert expected in run.output, run.output
    assert "Traceback" not in run.output
    if tamper == "404":
        assert "archived: true" in run.output and "archive.debian.org" in run.output


def test_unreachable_mirror_names_it_and_the_settings(cli: CliFn, ws: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    local = ws / "sevimg.local.yaml"
    local.write_text(
        local.read_text().replace(
            local.read_text().split("url: ")[1].split(":")[2].split("/")[0], str(port), 1
        )
    )
    run = cli("archive", "debian-13")
    assert run.code == 1
    assert f"cannot reach 127.0.0.1:{port}" in run.output
    assert "sevimg.local.yaml" in run.output
    assert "Traceback" not in run.output


def fetcher(tmp_path: Path) -> Fetcher:
    return Fetcher(tmp_path / "cache", Network(timeout=10))


def test_redirect_loop_and_server_error(server: Served, tmp_path: Path) -> None:
    fetch = fetcher(tmp_path)
    with pytest.raises(ArchiveError, match="redirects"):
        fetch.get(f"{server.url}/loop")
    with pytest.raises(ArchiveError, match="HTTP 500"):
        fetch.get(f"{server.url}/broken/InRelease")


def test_rpm_md_repository(server: Served, tmp_path: Path) -> None:
    repo = server.root / "fedora/44"
    write_rpm_repo(
        repo,
        {
            "kernel": "6.19.3-200.fc44",
            "qemu-system-x86-core": "2:10.2.0-1.fc44",
            "edk2-ovmf": "20251119-3.fc44",
        },
        {"/usr/share/edk2/ovmf/OVMF.amdsev.fd": ["edk2-ovmf"]},
        provides={"qemu-system-x86-core": "qemu-kvm"},
    )
    reader = Reader(fetcher(tmp_path))
    index = reader.read(
        Source("rpm", f"{server.url}/fedora/44"), ["/usr/share/edk2/ovmf/OVMF.amdsev.fd"]
    )
    assert index.versions["qemu-system-x86-core"] == "2:10.2.0-1.fc44"
    assert upstream(index.versions["qemu-system-x86-core"]) == "10.2.0"
    assert upstream(index.versions["edk2-ovmf"]) == "20251119"
    assert index.provides["qemu-kvm"] == ("qemu-system-x86-core",)
    assert index.files["/usr/share/edk2/ovmf/OVMF.amdsev.fd"] == ("edk2-ovmf",)


@pytest.mark.parametrize("tamper", ["missing", "truncated", "checksum", "xml"])
def test_rpm_md_bad_answers(server: Served, tmp_path: Path, tamper: str) -> None:
    repo = server.root / "el"
    repodata = write_rpm_repo(repo, {"kernel": "6.12.0-55.el10"}, {})
    primary = next(repodata.glob("*primary.xml.zst"))
    if tamper == "missing":
        primary.unlink()
        expected = "names repodata/.*primary.xml.zst, which the mirror does not have"
    elif tamper == "truncated":
        data = primary.read_bytes()[:-8]
        primary.write_bytes(data)
        import hashlib

        md = repodata / "repomd.xml"
        old = primary.name.split("-", 1)[0]
        new = hashlib.sha256(data).hexdigest()
        md.write_text(
            md.read_text()
            .replace(f">{old}<", f">{new}<")
            .replace(f"<size>{len(data) + 8}</size>", f"<size>{len(data)}</size>")
        )
        expected = "truncated"
    elif tamper == "checksum":
        primary.write_bytes(primary.read_bytes()[:-1] + b"\0")
        expected = "but the index that names it says"
    else:
        (repodata / "repomd.xml").write_text("<repomd><data")
        expected = "not valid XML"
    with pytest.raises(ArchiveError, match=expected):
        Reader(fetcher(tmp_path)).read(Source("rpm", f"{server.url}/el"))


# --- pure parts -------------------------------------------------------------------


def test_upstream_versions() -> None:
    assert upstream("1:10.0.13+ds-0+deb13u1") == "10.0.13"
    assert upstream("6.12.118-1") == "6.12.118"
    assert upstream("2026.08+ds-2") == "2026.08"
    assert upstream("2:10.2.0-1.fc44") == "10.2.0"
    assert upstream("6.17.0-5.5") == "6.17.0"


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        ("1.0", "1.0", 0),
        ("1.10", "1.9", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.0^git1", "1.0", 1),
        ("1.0a", "1.0", 1),
        ("fc44", "fc43", 1),
        ("1.0", "1.0.1", -1),
    ],
)
def test_rpmvercmp(a: str, b: str, result: int) -> None:
    assert rpmmd.rpmvercmp(a, b) == result
    assert rpmmd.rpmvercmp(b, a) == -result


def test_contents_lines_split_across_pieces() -> None:
    text = (
        b"usr/bin/qemu-system-x86_64-spice   misc/other\n"
        b"usr/bin/qemu-system-x86_64          otherosfs/qemu-system-x86,otherosfs/qemu-kvm\n"
        b"usr/share/ovmf/OVMF.amdsev.fd       admin/ovmf-amdsev"
    )
    for size in (1, 7, 50, len(text)):
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        owners = deb.contents_owners(pieces, [QEMU, FIRMWARE])
        assert owners == {QEMU: ("qemu-kvm", "qemu-system-x86"), FIRMWARE: ("ovmf-amdsev",)}


@pytest.mark.parametrize("suffix", [".gz", ".xz", ".zst", ".bz2"])
def test_truncated_compression_is_refused(suffix: str) -> None:
    import bz2
    import gzip

    import zstandard

    data = b"Package: a\nVersion: 1\n" * 500
    packers: dict[str, Callable[[bytes], bytes]] = {
        ".gz": gzip.compress,
        ".xz": lzma.compress,
        ".bz2": bz2.compress,
        ".zst": zstandard.ZstdCompressor().compress,
    }
    packed = packers[suffix](data)
    assert decompress(packed, "x" + suffix, "here") == data
    with pytest.raises(ArchiveError, match="truncated|corrupt"):
        decompress(packed[: len(packed) // 2], "x" + suffix, "here")


def test_update_adds_missing_keys_and_blocks() -> None:
    text = '# a comment\nschema_version: 1\nrelease: "45"\nstatus: prerelease\n# tail\n'
    doc = load_text(text, path=Path("images/fedora-45.yaml"), display="images/fedora-45.yaml")
    new = updated_text(doc, text, {"kernel": "7.1.0", "qemu": "11.0.0"})
    assert new == (
        '# a comment\nschema_version: 1\nrelease: "45"\nstatus: prerelease\n'
        'versions:\n  kernel: "7.1.0"\n  qemu: "11.0.0"\n# tail\n'
    )
    doc2 = load_text(new, path=Path("x.yaml"), display="x.yaml")
    assert updated_text(doc2, new, {"ovmf": "20260101"}).count('  ovmf: "20260101"\n') == 1


def test_rpm_release_through_the_cli(
    cli: CliFn, workspace: Path, server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEVIMG_CACHE", str(workspace / ".cache"))
    (workspace / "sevimg.local.yaml").write_text(
        f"schema_version: 1\nmirrors:\n  fedora:\n    url: {server.url}/fedora\n"
    )
    specs, problems = resolve_all(load_catalog(Workspace(workspace)).get("fedora-44"))
    assert not problems
    names = {p for spec in specs for p in spec.packages}
    firmware = "/usr/share/edk2/ovmf/OVMF.amdsev.fd"
    base = server.root / "fedora/linux"
    write_rpm_repo(
        base / "releases/44/Everything/x86_64/os",
        dict.fromkeys(names, "1.0-1.fc44") | {"kernel": "6.19.3-300.fc44"},
        {firmware: ["edk2-ovmf"], QEMU: ["qemu-system-x86-core"]},
    )
    # updates carries a newer kernel and QEMU: the build would get those.
    write_rpm_repo(
        base / "updates/44/Everything/x86_64",
        {
            "kernel": "6.19.10-300.fc44",
            "qemu-system-x86-core": "2:10.2.1-2.fc44",
            "edk2-ovmf": "20251119-3.fc44",
        },
        {firmware: ["edk2-ovmf"]},
    )
    code, data = as_json(cli, "fedora-44")
    host = next(r for r in data["releases"][0]["reports"] if r["role"] == "host")
    got = {c["kind"]: c["upstream"] for c in host["components"]}
    assert got == {"kernel": "6.19.10", "qemu": "10.2.1", "ovmf": "20251119", "systemd": "1.0"}
    assert {f["what"]: f["owners"] for f in host["files"]} == {
        "SEV firmware": ["edk2-ovmf"],
        "QEMU binary": ["qemu-system-x86-core"],
    }
    # fedora-44 declares kernel 6.19 and QEMU 10.2: the archive has moved on.
    assert code == 1
    assert any("declares 10.2, the archive has 10.2.1" in e for e in host["errors"])


def test_a_mirror_password_is_never_shown(
    cli: CliFn, ws: Path, server: Served, signer: Signer
) -> None:
    debian13_archive(server.root, signer, ws, drop="avahi-daemon")
    local = ws / "sevimg.local.yaml"
    local.write_text(
        local.read_text().replace("http://127.0.0.1", "http://builder:s3cret@127.0.0.1")
    )
    for args in (("debian-13",), ("debian-13", "--json")):
        run = cli("archive", *args)
        assert run.code == 1
        assert "package 'avahi-daemon' is in no repository" in run.output
        assert "s3cret" not in run.output and "***@127.0.0.1" in run.output


def test_a_distribution_without_repodata_is_reported_not_checked(
    cli: CliFn, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEVIMG_CACHE", str(workspace / ".cache"))
    code, data = as_json(cli, "opensuse-tumbleweed")
    (release,) = data["releases"]
    assert code == 0 and data["requests"] == 0
    assert "gives no `repository: {url, repodata}`" in release["skipped"]
    run = cli("archive", "opensuse-tumbleweed")
    assert "not checked" in run.output


def test_rawhide_reads_the_development_tree(
    cli: CliFn, workspace: Path, server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEVIMG_CACHE", str(workspace / ".cache"))
    (workspace / "sevimg.local.yaml").write_text(
        f"schema_version: 1\nmirrors:\n  fedora:\n    url: {server.url}/fedora\n"
    )
    cli("archive", "fedora-rawhide")
    asked = {path for path, _, _ in server.requests}
    assert asked == {"/fedora/linux/development/rawhide/Everything/x86_64/os/repodata/repomd.xml"}


@pytest.mark.parametrize(
    ("qemu", "code", "said"),
    [
        ("9.1.2", 0, "qemu: qemu-system-x86 1:9.1.2+ds-1 is below the guide's floor 9.2"),
        ("8.2.2", 1, "is below the SEV floor 9.1 (the sev-snp-guest object landed in QEMU 9.1.0)"),
    ],
)
def test_archive_judges_the_sev_floors_as_everywhere_else(
    cli: CliFn,
    ws: Path,
    server: Served,
    signer: Signer,
    monkeypatch: pytest.MonkeyPatch,
    qemu: str,
    code: int,
    said: str,
) -> None:
    # SEV-SNP works since QEMU 9.1: below the guide's 9.2 warns; without SEV-SNP fails.
    monkeypatch.setitem(VERSIONS, "qemu-system-x86", f"1:{qemu}+ds-1")
    debian13_archive(server.root, signer, ws)
    release = ws / "images/debian-13.yaml"
    release.write_text(release.read_text().replace('qemu: "10.0.13"', f'qemu: "{qemu}"'))
    run = cli("archive", "debian-13")
    assert run.code == code, run.output
    assert said in run.output
