"""Pinned payload tools: fetched once over HTTP, checked by SHA-256, taken out of .debs."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import stat
import subprocess
import sys
import tarfile
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import zstandard

from sevimg.imaging import pins, unpack
from sevimg.problems import SevimgError
from sevimg.settings import ToolPin, load_tool_pins
from sevimg.workspace import Workspace
from tests.conftest import CliFn

PROGRAM = b"#!/bin/sh\necho snphost 0.7.0\n"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving tmp_path/www, and the paths it was asked for."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(www), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www, requests
    server.shutdown()


def build_deb(folder: Path) -> Path:
    """A real Debian package holding /usr/bin/snphost, made by dpkg-deb."""
    root = folder / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: snphost\nVersion: 0.7.0-1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test\n"
    )
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "snphost").write_bytes(PROGRAM)
    deb = folder / "snphost_0.7.0-1_amd64.deb"
    subprocess.run(
        ["dpkg-deb", "-Zxz", "--build", "--root-owner-group", str(root), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


def pin_for(url: str, data: bytes, **extra: object) -> ToolPin:
    return ToolPin(
        name="snphost",
        version="0.7.0",
        url=url,
        sha256=hashlib.sha256(data).hexdigest(),
        roles=("host",),
        **extra,  # type: ignore[arg-type]
    )


def test_deb_fetched_once_verified_and_unpacked(
    served: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, www, requests = served
    deb = build_deb(www)
    pin = pin_for(f"{base}/{deb.name}", deb.read_bytes(), format="deb", member="/usr/bin/snphost")
    cache = tmp_path / "cache"
    staged = pins.stage([pin], "host", cache, tmp_path / "tree", None, None)
    assert staged == {"snphost": pin}
    program = tmp_path / "tree" / "usr/local/bin/snphost"
    assert program.read_bytes() == PROGRAM and program.stat().st_mode & 0o111
    assert requests == [f"/{deb.name}"]
    deb.unlink()  # the second time it comes from the cache
    pins.stage([pin], "host", cache, tmp_path / "tree2", None, None)
    assert requests == [f"/{deb.name}"]
    assert pins.stage([pin], "guest", cache, tmp_path / "tree3", None, None) == {}


def test_hash_mismatch_is_refused(served: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    base, www, _ = served
    (www / "snphost").write_bytes(PROGRAM)
    pin = pin_for(f"{base}/snphost", b"something else")
    with pytest.raises(
        SevimgError, match="does not match the pinned SHA-256 of snphost 0.7.0; not used"
    ) as info:
        pins.fetch(pin, tmp_path / "cache")
    assert hashlib.sha256(PROGRAM).hexdigest() in info.value.hint
    assert not (tmp_path / "cache").exists()


def test_http_errors_and_unreachable(served: tuple[str, Path, list[str]], tmp_path: Path) -> None:
    base, _, _ = served
    with pytest.raises(SevimgError, match="answered HTTP 404"):
        pins.fetch(pin_for(f"{base}/missing", PROGRAM), tmp_path)
    with pytest.raises(SevimgError, match="cannot download snphost 0.7.0") as info:
        pins.fetch(pin_for("http://127.0.0.1:1/snphost", PROGRAM), tmp_path)
    assert "--tools-dir" in info.value.hint


def test_tools_dir_for_offline_builds(tmp_path: Path) -> None:
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "snphost").write_bytes(PROGRAM)
    pin = pin_for("http://127.0.0.1:1/snphost", PROGRAM)
    assert pins.fetch(pin, tmp_path / "cache", offline) == PROGRAM
    (offline / "snphost").write_bytes(b"tampered")
    with pytest.raises(SevimgError, match="does not match the pinned SHA-256"):
        pins.fetch(pin, tmp_path / "cache", offline)
    (offline / "snphost").unlink()
    with pytest.raises(SevimgError, match="is not in .* \\(expected a file named snphost\\)"):
        pins.fetch(pin, tmp_path / "cache", offline)


def test_bad_packages(tmp_path: Path) -> None:
    deb = build_deb(tmp_path)
    with pytest.raises(SevimgError, match="the package has no /usr/bin/snpguest"):
        unpack.program(
            pin_for("http://x/a.deb", b"", format="deb", member="/usr/bin/snpguest"),
            deb.read_bytes(),
        )
    with pytest.raises(SevimgError, match="not a Debian package"):
        unpack.program(
            pin_for("http://x/a.deb", b"", format="deb", member="/usr/bin/snphost"), b"plain bytes"
        )


# --- malformed packages: real files, crafted with ar and tarfile -------------------------------


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive as dpkg-deb writes it (names, sizes, even padding)."""
    out = b"!<arch>\n"
    for name, body in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode()
        assert len(header) == 60
        out += header + body + (b"\n" if len(body) % 2 else b"")
    return out


def tar_of(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                info.mode = 0o755
                tar.addfile(info, io.BytesIO(entry[1]))
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".xz": lzma.compress,
    ".lzma": lambda b: lzma.compress(b, format=lzma.FORMAT_ALONE),
    ".bz2": bz2.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
}
GOOD_TAR = tar_of([("./usr/bin/snphost", PROGRAM), ("./usr/share/doc/snphost/README", b"x")])


def deb_with(data: bytes, suffix: str = ".xz") -> bytes:
    return ar_archive(
        [
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", lzma.compress(tar_of([("./control", b"Package: x\n")]))),
            (f"data.tar{suffix}", data),
        ]
    )


DEB_PIN = pin_for("http://127.0.0.1:1/snphost.deb", b"", format="deb", member="/usr/bin/snphost")


@pytest.mark.parametrize("suffix", COMPRESS)
def test_every_dpkg_compression_is_read(suffix: str) -> None:
    assert unpack.program(DEB_PIN, deb_with(COMPRESS[suffix](GOOD_TAR), suffix)) == PROGRAM


def bad_debs() -> list[tuple[str, bytes, str]]:
    """(case, package bytes, what the error says)."""
    good = deb_with(lzma.compress(GOOD_TAR))
    cases = [
        ("empty", b"", "not a Debian package"),
        ("plain bytes", b"plain bytes", "not a Debian package"),
        ("zip", b"PK\x03\x04" + b"\0" * 100, "not a Debian package"),
        ("magic only", b"!<arch>\n", "has no data archive"),
        # the first member's header is bytes 8-68: size at 56-66, terminator at 66-68
        ("bad size", good[:56] + b"abcd      " + good[66:], "bad ar member size"),
        ("negative size", good[:56] + b"-4        " + good[66:], "bad ar member size"),
        ("bad terminator", good[:66] + b"!!" + good[68:], "bad ar member header"),
        ("huge size", good[:56] + b"9999999999" + good[66:], "truncated"),
        ("no data member", ar_archive([("debian-binary", b"2.0\n")]), "has no data archive"),
        ("lz4", deb_with(b"\x04\x22\x4d\x18whatever", ".lz4"), "compression sevimg cannot read"),
        ("data.tar.foo", deb_with(GOOD_TAR, ".foo"), "compression sevimg cannot read"),
        ("xz garbage", deb_with(b"\xfd7zXZ\x00garbage", ".xz"), "is damaged"),
        ("gz garbage", deb_with(b"\x1f\x8bgarbage", ".gz"), "is damaged"),
        ("zst garbage", deb_with(b"garbage", ".zst"), "is damaged"),
        ("bz2 garbage", deb_with(b"BZh9garbage", ".bz2"), "is damaged"),
        ("tar garbage", deb_with(b"not a tar" * 100, ""), "is damaged"),
        (
            "no member",
            deb_with(lzma.compress(tar_of([("./usr/bin/other", b"x")]))),
            "has no /usr/bin/snphost",
        ),
        (
            "symlink",
            deb_with(
                lzma.compress(tar_of([link("./usr/bin/snphost", "/bin/sh", tarfile.SYMTYPE)]))
            ),
            "is a symbolic link",
        ),
        (
            "hard link",
            deb_with(
                lzma.compress(
                    tar_of(
                        [
                            ("./usr/bin/other", b"x"),
                            link("./usr/bin/snphost", "./usr/bin/other", tarfile.LNKTYPE),
                        ]
                    )
                )
            ),
            "is a hard link",
        ),
        (
            "directory",
            deb_with(lzma.compress(tar_of([link("./usr/bin/snphost", "", tarfile.DIRTYPE)]))),
            "not a regular file",
        ),
        (
            "escapes with ..",
            deb_with(lzma.compress(tar_of([("../usr/bin/snphost", PROGRAM)]))),
            "outside its root",
        ),
        (
            "escapes deeper",
            deb_with(
                lzma.compress(tar_of([("./usr/bin/snphost", PROGRAM), ("./a/../../etc/x", b"")]))
            ),
            "outside its root",
        ),
    ]
    for compression in (".xz", ".gz", ".zst", ".bz2"):
        packed = COMPRESS[compression](GOOD_TAR)
        for cut in (1, len(packed) // 2, len(packed) - 1):
            cases.append(
                (
                    f"truncated {compression} at {cut}",
                    deb_with(packed[:cut], compression),
                    "data.tar",
                )
            )
    for cut in (7, 8, 20, 59, 60, 61, 100, len(good) // 2, len(good) - 1):
        cases.append((f"package cut at {cut}", good[:cut], "snphost 0.7.0: "))
    return cases


BAD_DEBS = bad_debs()


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in BAD_DEBS], ids=[c[0] for c in BAD_DEBS]
)
def test_malformed_packages_are_refused_clearly(data: bytes, expected: str) -> None:
    with pytest.raises(SevimgError) as info:
        unpack.program(DEB_PIN, data)
    message = info.value.message
    assert message.startswith("snphost 0.7.0: ") and expected in message, message


def test_a_package_ar_made_is_read(tmp_path: Path) -> None:
    """The same checks hold for an archive the real `ar` wrote."""
    (tmp_path / "debian-binary").write_bytes(b"2.0\n")
    (tmp_path / "data.tar.gz").write_bytes(gzip.compress(GOOD_TAR))
    subprocess.run(
        ["ar", "rcD", "x.deb", "debian-binary", "data.tar.gz"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    deb = (tmp_path / "x.deb").read_bytes()
    assert unpack.program(DEB_PIN, deb) == PROGRAM
    (tmp_path / "data.tar.lz4").write_bytes(b"\x04\x22\x4d\x18")
    subprocess.run(
        ["ar", "rcD", "y.deb", "debian-binary", "data.tar.lz4"], cwd=tmp_path, check=True
    )
    with pytest.raises(SevimgError, match="compression sevimg cannot read"):
        unpack.program(DEB_PIN, (tmp_path / "y.deb").read_bytes())


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in BAD_DEBS[:12]], ids=[c[0] for c in BAD_DEBS[:12]]
)
def test_staging_a_bad_package_leaves_nothing_behind(
    served: tuple[str, Path, list[str]], tmp_path: Path, data: bytes, expected: str
) -> None:
    base, www, requests = served
    (www / "snphost.deb").write_bytes(data)
    pin = pin_for(f"{base}/snphost.deb", data, format="deb", member="/usr/bin/snphost")
    dest = tmp_path / "staged"
    (dest / "usr/local/bin").mkdir(parents=True)
    (dest / "usr/local/bin/stale").write_bytes(b"from an earlier run")
    with pytest.raises(SevimgError, match=expected.replace(".", r"\.")):
        pins.stage([pin], "host", tmp_path / "cache", dest, None, None)
    assert not dest.exists()
    assert requests == ["/snphost.deb"]


# --- URLs without a file name ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tail", ["/..", "/.", "/dir/..", "/dir/.", "/", "/dir/", "/%2e%2e/..", "/a b", "/a\nb"]
)
def test_a_url_without_a_file_name_is_refused_before_downloading(
    served: tuple[str, Path, list[str]], tmp_path: Path, tail: str
) -> None:
    base, _, requests = served
    with pytest.raises(SevimgError, match="does not end in a file name"):
        pins.fetch(pin_for(base + tail, PROGRAM), tmp_path / "cache")
    assert requests == []
    assert not (tmp_path / "cache").exists()


def test_an_impossible_address_is_a_clean_error(tmp_path: Path) -> None:
    for url in ["http://../snphost", "http://-/snphost", "http://127.0.0.1:0/snphost"]:
        with pytest.raises(SevimgError, match="cannot download snphost 0.7.0"):
            pins.fetch(pin_for(url, PROGRAM), tmp_path / "cache")


@pytest.mark.parametrize(
    "case", ["package cut at 100", "lz4", "symlink", "escapes with ..", "truncated .zst at 1"]
)
def test_a_bad_pinned_package_fails_the_build_cleanly(
    cli: CliFn, workspace: Path, served: tuple[str, Path, list[str]], tmp_path: Path, case: str
) -> None:
    base, www, requests = served
    data = next(d for name, d, _ in BAD_DEBS if name == case)
    (www / "snpguest.deb").write_bytes(data)
    (workspace / "sevimg.yaml").write_text(
        "schema_version: 1\ntools:\n  snpguest:\n"
        f'    version: "0.9.2"\n    url: {base}/snpguest.deb\n'
        f"    sha256: {hashlib.sha256(data).hexdigest()}\n"
        "    format: deb\n    member: /usr/bin/snphost\n    roles: [guest]\n"
    )
    cache = tmp_path / "build-cache"
    (workspace / "sevimg.local.yaml").write_text(f"schema_version: 1\ncache_dir: {cache}\n")
    run = cli("build", "debian-13", "--role", "guest", "--mkosi-version", "25.3")
    assert run.code == 1, run.output
    assert "sevimg: error: snpguest 0.9.2: " in run.stderr
    assert "Traceback" not in run.output and "internal error" not in run.output
    assert requests == ["/snpguest.deb"]
    assert not (cache / "staged-tools" / "guest-debian-13").exists()
    out = workspace / "out"
    assert not [p for p in out.rglob("*") if p.is_file()], "no artifact, log or manifest"


# --- format: wheel (a pure-Python library, unpacked as its package folder) ---------------------

WHEEL_LICENSE = b"Apache License 2.0 (test)\n"


def make_wheel(
    extra: list[tuple[zipfile.ZipInfo | str, bytes]] = (),  # type: ignore[assignment]
    *,
    version: str = "1.2.3",
    license_file: bool = True,
) -> bytes:
    """A wheel as pip builds them: the package, another top-level folder, and .dist-info."""
    buffer = io.BytesIO()
    info = "demo-1.2.3.dist-info"
    members: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        ("demo/__init__.py", b"VALUE = 42\n"),
        ("demo/sub/core.py", b"def f() -> int:\n    return 1\n"),
        ("demotests/test_x.py", b"assert True\n"),
        (
            f"{info}/METADATA",
            f"Metadata-Version: 2.1\nName: demo\nVersion: {version}\n\nBody: x\n".encode(),
        ),
        (f"{info}/entry_points.txt", b"[console_scripts]\ndemo = demo:main\n"),
        (f"{info}/RECORD", b""),
        *extra,
    ]
    if license_file:
        members.append((f"{info}/licenses/LICENSE", WHEEL_LICENSE))
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def wheel_pin(url: str, data: bytes, **extra: object) -> ToolPin:
    fields: dict[str, object] = {"format": "wheel", "member": "/demo", **extra}
    return ToolPin(
        name="demo",
        version="1.2.3",
        url=url,
        sha256=hashlib.sha256(data).hexdigest(),
        roles=("host",),
        **fields,  # type: ignore[arg-type]
    )


def test_a_wheel_stages_its_package_folder_and_license_only(
    served: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, www, _ = served
    data = make_wheel()
    (www / "demo-1.2.3-py3-none-any.whl").write_bytes(data)
    pin = wheel_pin(f"{base}/demo-1.2.3-py3-none-any.whl", data)
    assert pin.target == "/usr/lib/sevimg/python/demo"
    dest = tmp_path / "staged"
    assert pins.stage([pin], "host", tmp_path / "cache", dest, None, None) == {"demo": pin}
    folder = dest / "usr/lib/sevimg/python/demo"
    found = {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}
    assert found == {
        f"usr/lib/sevimg/python/demo/{n}"
        for n in ("__init__.py", "sub/core.py", "LICENSES/LICENSE", "PIN")
    }  # no demotests/, no .dist-info, no entry-point scripts
    assert (folder / "LICENSES/LICENSE").read_bytes() == WHEEL_LICENSE
    assert (folder / "PIN").read_text().split()[:3] == ["demo", "1.2.3", pin.sha256]
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in folder.rglob("*") if p.is_file())
    # What was staged imports as the package, beside nothing else.
    proc = subprocess.run(
        [sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import demo.sub.core as c; print(c.f() + 41)", str(dest / "usr/lib/sevimg/python")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.stdout.strip() == "42", proc.stderr
    # The build machine's copy: the same files, in the cache, importable.
    library = pins.python_libraries([pin], tmp_path / "cache", None, None)
    assert library is not None
    assert (library / "demo/sub/core.py").read_bytes() == (folder / "sub/core.py").read_bytes()
    assert pins.python_libraries([], tmp_path / "cache", None, None) is None


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("extra", "kwargs", "message"),
    [
        ([("/etc/passwd", b"x")], {}, "'/etc/passwd', not a plain path inside it"),
        ([("../evil.py", b"x")], {}, "'../evil.py', not a plain path inside it"),
        ([("demo/../../evil.py", b"x")], {}, "not a plain path inside it"),
        ([("demo\\..\\evil.py", b"x")], {}, "not a plain path inside it"),
        ([(_symlink("demo/link.py"), b"/etc/shadow")], {}, "demo/link.py is a link in the wheel"),
        (
            [("demo/big.py", b"\0" * (unpack.MAX_WHEEL_MEMBER + 1))],
            {},
            "demo/big.py is larger than 16 MiB",
        ),
        ([("demo/__init__.py", b"again\n")], {}, "holds 'demo/__init__.py' twice"),
        ([], {"version": "9.9.9"}, "the wheel is version 9.9.9, not the pinned 1.2.3"),
        ([], {"license_file": False}, "carries no license file"),
    ],
)
def test_a_hostile_or_wrong_wheel_is_refused(
    extra: list[tuple[zipfile.ZipInfo | str, bytes]],
    kwargs: dict[str, Any],
    message: str,
    tmp_path: Path,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        data = make_wheel(extra, **kwargs)
    pin = wheel_pin("http://127.0.0.1:1/demo.whl", data)
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "demo.whl").write_bytes(data)
    dest = tmp_path / "staged"
    with pytest.raises(SevimgError) as caught:
        pins.stage([pin], "host", tmp_path / "cache", dest, tmp_path / "tools", None)
    assert caught.value.message.startswith("demo 1.2.3: ")
    assert message in caught.value.message
    assert not dest.exists(), "nothing staged"


def test_a_wheel_without_its_package_or_not_a_zip_is_refused() -> None:
    data = make_wheel()
    with pytest.raises(SevimgError, match="the wheel has no Python package other/"):
        pins.files(wheel_pin("http://x/demo.whl", data, member="/other"), data)
    with pytest.raises(SevimgError, match=r"demo 1\.2\.3: not a wheel \(zip archive\)"):
        pins.files(wheel_pin("http://x/demo.whl", b"PK not really"), b"PK not really")


def test_a_wheel_with_a_wrong_hash_is_never_unpacked(
    served: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    base, www, requests = served
    good = make_wheel()
    (www / "demo.whl").write_bytes(good + b"tampered")
    pin = wheel_pin(f"{base}/demo.whl", good)
    dest = tmp_path / "staged"
    with pytest.raises(SevimgError, match="does not match the pinned SHA-256 of demo 1.2.3"):
        pins.stage([pin], "host", tmp_path / "cache", dest, None, None)
    assert requests == ["/demo.whl"] and not dest.exists()
    assert not (tmp_path / "cache" / "downloads").exists()
    with pytest.raises(SevimgError, match="does not match the pinned SHA-256"):
        pins.python_libraries([pin], tmp_path / "cache", None, None)
    assert not (tmp_path / "cache" / "python").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("    format: wheel\n", "format: wheel needs `member:`"),
        ("    format: wheel\n    member: /demo/sub\n", "is not a top-level package folder"),
        ("    format: wheel\n    member: demo\n", "is not an absolute path"),
        (
            "    format: wheel\n    member: /demo\n    install: /usr/local/bin\n",
            "install it below /usr/lib/sevimg/python/",
        ),
    ],
)
def test_a_wheel_pin_is_checked_where_it_is_written(
    workspace: Path, entry: str, message: str
) -> None:
    (workspace / "sevimg.yaml").write_text(
        "schema_version: 1\ntools:\n  demo:\n"
        '    version: "1.2.3"\n    url: http://127.0.0.1:1/demo.whl\n'
        f"    sha256: {'a' * 64}\n{entry}    roles: [host]\n"
    )
    with pytest.raises(SevimgError) as caught:
        load_tool_pins(Workspace(workspace))
    shown = [str(p) for p in caught.value.problems]
    assert any(s.startswith("sevimg.yaml:") and message in s for s in shown), shown
