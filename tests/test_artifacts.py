"""The artifact folder format: SHA256SUMS, manifests, verification and merging."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sevimg.artifacts.checksums import (
    SHA256_HEX,
    SHA256SUMS,
    format_sha256sums,
    read_sha256sums,
    sha256_file,
    write_sha256sums,
)
from sevimg.artifacts.manifest import MANIFEST_SCHEMA, Manifest, load_manifest
from sevimg.artifacts.manifest_check import check_manifest
from sevimg.artifacts.names import is_plain_name, looks_debug, parse_image_id
from sevimg.problems import SevimgError
from sevimg.release.folder import load_artifact_folder, merge_artifact_folders, verify_artifacts
from tests.artifactkit import make_folder
from tests.conftest import REPO

HEX = "0123456789abcdef" * 4


def messages(problems: Any) -> str:
    return "\n".join(str(p) for p in problems)


def reported(path: Path, expected: str, problems: Any) -> bool:
    """True when `expected` is reported as an error about `path`, at a position or none."""
    shape = re.compile(rf"{re.escape(str(path))}(?::[0-9]+:[0-9]+)?: error: {re.escape(expected)}")
    return any(shape.match(str(p)) for p in problems)


# --- sha256_file and SHA256SUMS ------------------------------------------------------------


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * 4096 + 7)  # several read chunks, odd tail
    path = tmp_path / "big.efi"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_write_sha256sums_is_sorted_exact_and_checked_by_sha256sum(tmp_path: Path) -> None:
    for name, content in (("zeta.efi", b"z"), ("alpha.efi", b"a"), ("Beta.manifest.json", b"{}")):
        (tmp_path / name).write_bytes(content)
    path = write_sha256sums(tmp_path, ["zeta.efi", "alpha.efi", "Beta.manifest.json"])
    text = path.read_text()
    assert text == (
        f"{hashlib.sha256(b'{}').hexdigest()}  Beta.manifest.json\n"
        f"{hashlib.sha256(b'a').hexdigest()}  alpha.efi\n"
        f"{hashlib.sha256(b'z').hexdigest()}  zeta.efi\n"
    )
    assert read_sha256sums(path) == {
        "Beta.manifest.json": hashlib.sha256(b"{}").hexdigest(),
        "alpha.efi": hashlib.sha256(b"a").hexdigest(),
        "zeta.efi": hashlib.sha256(b"z").hexdigest(),
    }
    if shutil.which("sha256sum"):
        done = subprocess.run(
            ["sha256sum", "--strict", "-c", SHA256SUMS],
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_write_sha256sums_defaults_to_images_and_manifests(tmp_path: Path) -> None:
    make_folder(tmp_path, sums=False)
    (tmp_path / "notes.txt").write_text("not an artifact")
    write_sha256sums(tmp_path)
    assert sorted(read_sha256sums(tmp_path / SHA256SUMS)) == [
        "guest-debian-13.efi",
        "guest-debian-13.manifest.json",
        "host-debian-13.efi",
        "host-debian-13.manifest.json",
    ]


@pytest.mark.parametrize("name", ["../etc/passwd", "sub/dir.efi", "/abs.efi", "..", "-rf"])
def test_write_sha256sums_refuses_paths(tmp_path: Path, name: str) -> None:
    with pytest.raises(SevimgError, match="plain file name"):
        write_sha256sums(tmp_path, [name])
    assert not (tmp_path / SHA256SUMS).exists()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"{HEX}  ../escape.efi", "not a plain file name"),
        (f"{HEX}  sub/file.efi", "not a plain file name"),
        (f"{HEX} *binary.efi", "binary-mode"),
        (f"{HEX.upper()}  upper.efi", "expected `<64 lowercase hex"),
        (f"{HEX} one-space.efi", "expected `<64 lowercase hex"),
        (f"{HEX[:-1]}  short.efi", "expected `<64 lowercase hex"),
        (f"{HEX}  crlf.efi\r", "carriage return"),
        (f"\\{HEX}  new\\nline.efi", "escaped file names"),
        ("", "expected `<64 lowercase hex"),
        (f"{HEX}  SHA256SUMS", "cannot list itself"),
    ],
)
def test_read_sha256sums_rejects_odd_lines_naming_file_and_line(
    tmp_path: Path, line: str, why: str
) -> None:
    path = tmp_path / SHA256SUMS
    path.write_text(f"{HEX}  fine.efi\n{line}\n")
    with pytest.raises(SevimgError) as caught:
        read_sha256sums(path)
    text = messages(caught.value.problems)
    assert f"{path}:2:1: error:" in text
    assert why in text


def test_read_sha256sums_rejects_duplicates(tmp_path: Path) -> None:
    path = tmp_path / SHA256SUMS
    path.write_text(f"{HEX}  a.efi\n{'f' * 64}  a.efi\n")
    with pytest.raises(SevimgError) as caught:
        read_sha256sums(path)
    assert "listed twice" in messages(caught.value.problems)


def test_read_sha256sums_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SevimgError, match="not found"):
        read_sha256sums(tmp_path / SHA256SUMS)


# --- manifests ------------------------------------------------------------------------------


def test_manifest_round_trips_with_documented_keys(tmp_path: Path) -> None:
    make_folder(tmp_path)
    path = tmp_path / "host-debian-13.manifest.json"
    data = json.loads(path.read_text())
    assert list(data) == [
        "schema",
        "image_id",
        "role",
        "image",
        "debug",
        "distro",
        "release",
        "artifact",
        "size",
        "sha256",
        "sources",
        "sevimg_version",
        "mkosi_version",
        "tools",
        "packages",
        "embedded_guest",
        "built_at",
    ]
    assert data["schema"] == MANIFEST_SCHEMA
    assert data["role"] == "host"
    assert data["image"] == "debian-13"
    assert data["artifact"] == "host-debian-13.efi"
    assert data["size"] == 4096
    assert data["sha256"] == sha256_file(tmp_path / "host-debian-13.efi")
    assert data["embedded_guest"] == {
        "image_id": "guest-debian-13",
        "sha256": sha256_file(tmp_path / "guest-debian-13.efi"),
    }
    assert data["built_at"] == "2026-05-09T07:35:25Z"
    assert data["tools"]["snphost"] == {"version": "0.7.0", "sha256": "b" * 64}
    manifest = load_manifest(path)
    assert manifest.to_json() == path.read_text()
    assert Manifest.from_json(manifest.to_json()) == manifest
    guest = load_manifest(tmp_path / "guest-debian-13.manifest.json")
    assert guest.embedded_guest is None
    assert guest.tool("snphost") is None
    assert guest.tool("snpguest") is not None


def test_for_artifact_honours_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    path = tmp_path / "guest-fedora-43.efi"
    path.write_bytes(b"uki")
    manifest = Manifest.for_artifact(
        path,
        distro="fedora",
        release="43",
        sources=[],
        mkosi_version="27.1",
        tools={},
        packages=[],
        embedded_guest=None,
    )
    assert manifest.built_at == "2023-11-14T22:13:20Z"
    assert manifest.size == 3
    assert manifest.sha256 == hashlib.sha256(b"uki").hexdigest()


def test_for_artifact_refuses_bad_names_and_a_host_without_guest(tmp_path: Path) -> None:
    bad = tmp_path / "debian-13.efi"
    bad.write_bytes(b"x")
    kwargs: dict[str, Any] = {
        "distro": "debian",
        "release": "13",
        "sources": [],
        "mkosi_version": "25.3",
        "tools": {},
        "packages": [],
        "embedded_guest": None,
    }
    with pytest.raises(SevimgError, match="not named <role>"):
        Manifest.for_artifact(bad, **kwargs)
    host = tmp_path / "host-debian-13.efi"
    host.write_bytes(b"x")
    with pytest.raises(SevimgError) as caught:
        Manifest.for_artifact(host, **kwargs)
    assert "embedded_guest: a host image must name the guest" in messages(caught.value.problems)


def _manifest_data(tmp_path: Path) -> dict[str, Any]:
    make_folder(tmp_path)
    data: dict[str, Any] = json.loads((tmp_path / "host-debian-13.manifest.json").read_text())
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("sha256"), "missing required key 'sha256' at the top level"),
        (lambda d: d.update(colour="blue"), "colour: unknown key"),
        (lambda d: d.update(size="4096"), "size: expected a whole number, got a string"),
        (lambda d: d.update(size=True), "size: expected a whole number, got the boolean true"),
        (lambda d: d.update(size=-1), "size: -1 is less than the minimum of 0"),
        (
            lambda d: d.update(sha256="XYZ"),
            "sha256: 'XYZ' is not a SHA-256: 64 lowercase hex digits",
        ),
        (lambda d: d.update(sha256=HEX.upper()), "sha256: '0123456789ABCDEF"),
        (lambda d: d.update(sha256=HEX + "\n"), "sha256: '0123456789abcdef"),
        (lambda d: d.update(distro="Debian"), "distro: 'Debian' is not a distribution name"),
        (lambda d: d.update(release=13), "release: expected a string, got the number 13"),
        (lambda d: d.update(role="vm"), "role: 'vm' is not one of: 'guest', 'host'"),
        (lambda d: d.update(mkosi_version=""), "mkosi_version: must have at least 1 character"),
        (lambda d: d.update(sources="x"), "sources: expected a list, got a string"),
        (
            lambda d: d.update(sources=[{"path": "x", "sha256": HEX, "size": 1}]),
            "sources[0].size: unknown key 'size'",
        ),
        (
            lambda d: d.update(tools={"snphost": {"version": "0.7.0"}}),
            "tools.snphost: missing required key 'sha256' in tools.snphost",
        ),
        (
            lambda d: d.update(packages=[{"name": "bash", "version": None}]),
            "packages[0].version: expected a string, got nothing",
        ),
        (
            lambda d: d.update(embedded_guest=["guest-debian-13"]),
            "embedded_guest: expected a mapping (key: value) or nothing, got a list",
        ),
        (
            lambda d: d.update(role="guest"),
            "image_id: 'host-debian-13' does not start with its role",
        ),
        (lambda d: d.update(artifact="other.efi"), "artifact: must be 'host-debian-13.efi'"),
        (
            lambda d: d.update(schema="sevimg-manifest/2"),
            "schema: 'sevimg-manifest/2' is not one of: 'sevimg-manifest/1'",
        ),
        (lambda d: d.update(embedded_guest=None), "embedded_guest: a host image must name"),
        (
            lambda d: d.update(built_at="2026-05-09T09:35:25+02:00"),
            "built_at: '2026-05-09T09:35:25+02:00' must be in UTC",
        ),
        (lambda d: d.update(built_at="yesterday"), "built_at: 'yesterday' is not an ISO-8601 time"),
        (
            lambda d: d.update(sources=[{"path": "x"}]),
            "sources[0]: missing required key 'sha256' in sources[0]",
        ),
        (
            lambda d: d.update(tools={"snphost": "0.7.0"}),
            "tools.snphost: expected a mapping (key: value) or nothing, got a string",
        ),
        (lambda d: d.update(packages={}), "packages: expected a list, got a mapping"),
        (lambda d: d.update(image="debian-12"), "image: is 'debian-12' but image_id"),
    ],
)
def test_load_manifest_names_the_field(tmp_path: Path, change: Any, expected: str) -> None:
    data = _manifest_data(tmp_path)
    change(data)
    path = tmp_path / "host-debian-13.manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SevimgError) as caught:
        load_manifest(path)
    assert reported(path, expected, caught.value.problems)


def test_load_manifest_reports_json_syntax_with_position(tmp_path: Path) -> None:
    path = tmp_path / "guest-debian-13.manifest.json"
    path.write_text('{\n  "schema": "sevimg-manifest/1",\n  oops\n}\n')
    with pytest.raises(SevimgError, match="not valid JSON") as caught:
        load_manifest(path)
    assert f"{path}:3:3: error:" in messages(caught.value.problems)


def test_guest_manifest_must_not_embed(tmp_path: Path) -> None:
    make_folder(tmp_path)
    path = tmp_path / "guest-debian-13.manifest.json"
    data = json.loads(path.read_text())
    data["embedded_guest"] = {"image_id": "guest-debian-13", "sha256": HEX}
    path.write_text(json.dumps(data))
    with pytest.raises(SevimgError) as caught:
        load_manifest(path)
    assert "embedded_guest: must be null for a guest image" in messages(caught.value.problems)


def test_parse_image_id() -> None:
    assert parse_image_id("host-debian-13") == ("host", "debian-13", False)
    assert parse_image_id("guest-ubuntu-26.04-debug") == ("guest", "ubuntu-26.04", True)
    assert parse_image_id("guest-debian-forky") == ("guest", "debian-forky", False)
    assert parse_image_id("debian-13") is None
    assert parse_image_id("host-../x") is None


# --- verify_artifacts -----------------------------------------------------------------------


def test_a_clean_folder_verifies(tmp_path: Path) -> None:
    make_folder(tmp_path, ["debian-13", "fedora-43"], guest_only=["fedora-43"])
    assert verify_artifacts(tmp_path) == []
    folder = load_artifact_folder(tmp_path)
    assert [f.name for f in folder.files] == [
        "guest-debian-13.efi",
        "guest-debian-13.manifest.json",
        "guest-fedora-43.efi",
        "guest-fedora-43.manifest.json",
        "host-debian-13.efi",
        "host-debian-13.manifest.json",
        "SHA256SUMS",
    ]
    assert folder.images() == ["debian-13", "fedora-43"]


def test_a_changed_image_fails_against_sha256sums(tmp_path: Path) -> None:
    make_folder(tmp_path)
    with (tmp_path / "host-debian-13.efi").open("ab") as handle:
        handle.write(b"tampered")
    text = messages(verify_artifacts(tmp_path))
    assert f"{tmp_path / 'host-debian-13.efi'}: error: SHA-256 is" in text
    assert "the file changed after the build" in text
    # The manifest disagrees too: its size and sha256 are the build's.
    assert "size: says 4096 bytes; host-debian-13.efi has 4104" in text
    with pytest.raises(SevimgError, match="not publishable"):
        load_artifact_folder(tmp_path)


def test_a_manifest_that_disagrees_with_its_image(tmp_path: Path) -> None:
    make_folder(tmp_path)
    path = tmp_path / "guest-debian-13.manifest.json"
    data = json.loads(path.read_text())
    data["sha256"] = HEX
    path.write_text(json.dumps(data))
    write_sha256sums(tmp_path)  # listed and matching: only the manifest's content is wrong
    text = messages(verify_artifacts(tmp_path))
    assert f"{path}: error: sha256: says {HEX}; guest-debian-13.efi has SHA-256" in text


def test_unlisted_and_missing_files(tmp_path: Path) -> None:
    make_folder(tmp_path)
    sums = read_sha256sums(tmp_path / SHA256SUMS)
    del sums["host-debian-13.manifest.json"]
    (tmp_path / SHA256SUMS).write_text("".join(f"{s}  {n}\n" for n, s in sorted(sums.items())))
    (tmp_path / "guest-debian-13.efi").unlink()
    text = messages(verify_artifacts(tmp_path))
    assert "host-debian-13.manifest.json: error: not listed in SHA256SUMS" in text
    assert "lists guest-debian-13.efi, which is not in" in text
    assert "describes guest-debian-13.efi, which is not in" in text


def test_an_image_without_manifest(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "host-debian-13.manifest.json").unlink()
    write_sha256sums(tmp_path)
    text = messages(verify_artifacts(tmp_path))
    assert "host-debian-13.efi: error: has no manifest (host-debian-13.manifest.json)" in text


def test_missing_sha256sums(tmp_path: Path) -> None:
    make_folder(tmp_path, sums=False)
    assert "SHA256SUMS: error: missing" in messages(verify_artifacts(tmp_path))


def test_logs_are_ignored_and_strays_warned(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    problems = verify_artifacts(tmp_path)
    assert [p.is_error for p in problems] == [False]
    assert "notes.txt: warning: not an image, manifest or SHA256SUMS" in messages(problems)


def test_a_host_embedding_another_guest_is_warned(tmp_path: Path) -> None:
    make_folder(tmp_path)
    (tmp_path / "guest-debian-13.efi").write_bytes(b"rebuilt guest")
    guest = Manifest.from_json((tmp_path / "guest-debian-13.manifest.json").read_text())
    rebuilt = Manifest.for_artifact(
        tmp_path / "guest-debian-13.efi",
        distro="debian",
        release="13",
        sources=guest.sources,
        mkosi_version="25.3",
        tools=dict(guest.tools),
        packages=guest.packages,
        embedded_guest=None,
    )
    (tmp_path / "guest-debian-13.manifest.json").write_text(rebuilt.to_json())
    write_sha256sums(tmp_path)
    problems = verify_artifacts(tmp_path)
    assert len(problems) == 1 and not problems[0].is_error
    assert "embedded_guest.sha256: embeds guest-debian-13" in str(problems[0])


# --- merging ----------------------------------------------------------------------------------


def test_merge_folders_writes_one_sha256sums(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "out-debian-13", ["debian-13"])
    b = make_folder(tmp_path / "out-fedora-43", ["fedora-43"])
    dest = tmp_path / "merged"
    names = merge_artifact_folders([a, b], dest)
    assert len(names) == 8
    sums = read_sha256sums(dest / SHA256SUMS)
    assert sorted(sums) == names
    for name, sha in sums.items():
        assert sha256_file(dest / name) == sha
    assert verify_artifacts(dest) == []
    assert not (dest / "logs").exists()


def test_merge_refuses_conflicts_and_writes_nothing(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", ["debian-13"], generation=1)
    b = make_folder(tmp_path / "b", ["debian-13"], generation=2)
    dest = tmp_path / "merged"
    with pytest.raises(SevimgError, match="disagree") as caught:
        merge_artifact_folders([a, b], dest)
    assert "two builds made different host-debian-13.efi" in messages(caught.value.problems)
    assert not dest.exists()


def test_merge_refuses_a_non_empty_destination_and_a_broken_source(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a")
    dest = tmp_path / "merged"
    dest.mkdir()
    (dest / "old").write_text("x")
    with pytest.raises(SevimgError, match="not an empty folder"):
        merge_artifact_folders([a], dest)
    (a / "host-debian-13.efi").write_bytes(b"broken")
    with pytest.raises(SevimgError, match="not publishable"):
        merge_artifact_folders([a], tmp_path / "other")


# --- debug images and names that are not names ------------------------------------------------


@pytest.mark.parametrize(
    ("image_id", "debug"),
    [
        ("host-debian-13", False),
        ("guest-ubuntu-26.04", False),
        ("host-fedora-rawhide", False),
        ("host-debian-13-debug", True),
        ("guest-ubuntu-26.04-debug", True),
        ("host-debian-debug", True),  # parses as release "debug": still treated as debug
        ("host-debug-13", True),
        ("host-debian-13-DEBUG", True),
        ("host-debian-13-Debug", True),
        ("host-debian-13-debug-debug", True),
        ("host-debugger-13", False),
        ("host-debian-13debug", False),
    ],
)
def test_looks_debug(image_id: str, debug: bool) -> None:
    assert looks_debug(image_id) is debug
    parsed = parse_image_id(image_id)
    if parsed is not None and parsed[2]:
        assert looks_debug(image_id)  # never narrower than the name's own flag


@pytest.mark.parametrize(
    "image_id",
    [
        "host-debian-13\n",
        "host-debian-13-debug\n",
        "\nhost-debian-13",
        "host-debian-13 ",
        "host-../13",
        "host-debian-13/../x",
        "host-debian-13\x00",
        "HOST-debian-13",
    ],
)
def test_parse_image_id_takes_the_whole_string(image_id: str) -> None:
    assert parse_image_id(image_id) is None


@pytest.mark.parametrize(
    "name",
    [
        "x.efi\n",
        "x.efi\r",
        "../x.efi",
        "..",
        ".",
        "/x.efi",
        "a/b.efi",
        "a\\b.efi",
        ".hidden.efi",
        "-rf.efi",
        "x y.efi",
        "x\x00.efi",
        "",
        "é.efi",
        "x" * 256,
    ],
)
def test_no_path_is_a_plain_name(name: str) -> None:
    assert not is_plain_name(name)
    with pytest.raises(SevimgError, match="plain file name"):
        format_sha256sums({name: HEX})


@pytest.mark.parametrize("debug", [False, True])
def test_the_manifest_records_debug_and_it_must_match_the_name(tmp_path: Path, debug: bool) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"], debug=debug)
    suffix = "-debug" if debug else ""
    manifest = load_manifest(folder / f"host-debian-13{suffix}.manifest.json")
    assert manifest.debug is debug
    assert json.loads(manifest.to_json())["debug"] is debug
    image = folder / f"host-debian-13{suffix}.efi"
    with pytest.raises(SevimgError, match="build must"):
        Manifest.for_artifact(
            image,
            distro="debian",
            release="13",
            sources=[],
            mkosi_version="25.3",
            tools={},
            packages=[],
            embedded_guest=manifest.embedded_guest,
            debug=not debug,
        )


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        ("host-debian-13.manifest.json", {"debug": True}, "debug: is true, but image_id"),
        ("guest-debian-13.manifest.json", {"debug": True}, "debug: is true, but image_id"),
        (
            "host-debian-13.manifest.json",
            {"debug": 1},
            "debug: expected true or false, got the number 1",
        ),
        (
            "host-debian-13.manifest.json",
            {"debug": None},
            "debug: expected true or false, got nothing",
        ),
        (
            "host-debian-13.manifest.json",
            {"debug": "true"},
            "debug: expected true or false, got a string",
        ),
        (
            "host-debian-13.manifest.json",
            {"embedded_guest": {"image_id": "guest-debian-13-debug", "sha256": HEX}},
            "embedded_guest.image_id: 'guest-debian-13-debug' is a debug guest",
        ),
        (
            "host-debian-13.manifest.json",
            {"embedded_guest": {"image_id": "guest-debian-debug", "sha256": HEX}},
            "embedded_guest.image_id: 'guest-debian-debug' is a debug guest",
        ),
        (
            "host-debian-13.manifest.json",
            {"image_id": "host-debian-13\n", "artifact": "host-debian-13\n.efi"},
            "image_id: 'host-debian-13\\n' is not a non-empty string without control characters; "
            "it contains a control character (U+000A, line feed)",
        ),
        (
            "host-debian-13.manifest.json",
            {"artifact": "../host-debian-13.efi"},
            "artifact: must be 'host-debian-13.efi', not '../host-debian-13.efi'",
        ),
    ],
)
def test_a_manifest_that_lies_about_debug_or_names_is_refused_everywhere(
    tmp_path: Path, name: str, change: dict[str, Any], expected: str
) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    path = folder / name
    data = json.loads(path.read_text())
    data.update(change)
    path.write_text(json.dumps(data, indent=2))
    write_sha256sums(folder)
    problems = verify_artifacts(folder)
    assert reported(path, expected, problems), messages(problems)
    dest = tmp_path / "merged"
    for allow in (False, True):
        with pytest.raises(SevimgError, match="not publishable"):
            merge_artifact_folders([folder], dest, allow_debug=allow)
        assert not dest.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    "listed",
    [
        "../outside.efi",
        "/etc/passwd",
        "sub/host-debian-13.efi",
        "..",
        "host-debian-13.efi/..",
        "./host-debian-13.efi",
        "logs/guest-debian-13.log",
    ],
)
def test_sha256sums_cannot_point_outside_the_folder(tmp_path: Path, listed: str) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    (tmp_path / "outside.efi").write_bytes(b"secret")
    with (folder / SHA256SUMS).open("a") as sums:
        sums.write(f"{HEX}  {listed}\n")
    problems = messages(verify_artifacts(folder))
    assert f"{folder / SHA256SUMS}:5:1: error: {listed!r} is not a plain file name" in problems
    with pytest.raises(SevimgError, match="not publishable"):
        merge_artifact_folders([folder], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_symlinked_image_is_not_followed_out_of_the_folder(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "out", ["debian-13"])
    image = folder / "host-debian-13.efi"
    outside = tmp_path / "elsewhere.efi"
    image.rename(outside)
    image.symlink_to(outside)  # same bytes, so SHA256SUMS still matches
    problems = messages(verify_artifacts(folder))
    assert f"{image}: warning: not a regular file; it is not published" in problems
    assert "describes host-debian-13.efi, which is not in" in problems
    with pytest.raises(SevimgError, match="not publishable"):
        merge_artifact_folders([folder], tmp_path / "merged")


def test_merge_refuses_debug_images_unless_allowed(tmp_path: Path) -> None:
    release = make_folder(tmp_path / "out-debian-13", ["debian-13"])
    debug = make_folder(tmp_path / "out-debian-13-debug", ["debian-13"], debug=True)
    dest = tmp_path / "merged"
    with pytest.raises(SevimgError, match="are debug images; nothing was merged") as caught:
        merge_artifact_folders([release, debug], dest)
    shown = messages(caught.value.problems)
    assert f"{debug / 'host-debian-13-debug.efi'}: error: a debug image (" in shown
    assert "pass --allow-debug" in caught.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-debian-13", "out-debian-13-debug"]
    names = merge_artifact_folders([release, debug], dest, allow_debug=True)
    assert "host-debian-13-debug.efi" in names and "host-debian-13.efi" in names
    assert verify_artifacts(dest) == []


@pytest.mark.parametrize("after", [0, 3, 7])
def test_an_interrupted_merge_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    # Ctrl-C after `after` files: the destination never appears, no temporary folder stays.
    a = make_folder(tmp_path / "a", ["debian-13"])
    b = make_folder(tmp_path / "b", ["fedora-43"])
    real_link = os.link
    calls = 0

    def link(src: Any, dst: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > after:
            raise KeyboardInterrupt
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link)
    with pytest.raises(KeyboardInterrupt):
        merge_artifact_folders([a, b], tmp_path / "merged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    monkeypatch.setattr(os, "link", real_link)
    assert len(merge_artifact_folders([a, b], tmp_path / "merged")) == 8


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        (lambda d: d.update(size="big"), '"size"', "size: expected a whole number"),
        (lambda d: d.update(sha256="0" * 63), '"sha256"', "sha256: '000"),
        (lambda d: d.update(role="Host"), '"role"', "role: 'Host' is not one of"),
        (
            lambda d: d["tools"]["snphost"].update(version=7),
            '"version": 7',
            "tools.snphost.version",
        ),
        (lambda d: d["sources"][0].update(sha256="x"), '"sha256": "x"', "sources[0].sha256"),
        (lambda d: d["packages"].append({"name": ""}), '"name": ""', "packages[2].name: must"),
        (lambda d: d.update(extra=1), '"extra"', "extra: unknown key 'extra'"),
        (lambda d: d.update(schema=1), '"schema"', "schema: 1 is not one of"),
    ],
)
def test_a_bad_manifest_field_is_reported_at_its_line(
    tmp_path: Path, change: Any, key: str, expected: str
) -> None:
    data = _manifest_data(tmp_path)
    data["packages"] = [{"name": "bash", "version": "5.2"}, {"name": "qemu", "version": "9.2"}]
    change(data)
    path = tmp_path / "host-debian-13.manifest.json"
    text = json.dumps(data, indent=2) + "\n"
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.lstrip().startswith(key))
    with pytest.raises(SevimgError, match="not a valid sevimg manifest") as caught:
        load_manifest(path)
    shown = [str(p) for p in caught.value.problems if expected in str(p)]
    assert shown, messages(caught.value.problems)
    assert any(s.startswith(f"{path}:{line}:") for s in shown), (line, shown)


def test_the_manifest_schema_describes_what_the_manifest_writes(tmp_path: Path) -> None:
    schema = json.loads((REPO / "schema" / "manifest.schema.json").read_text())
    written = json.loads(make_folder(tmp_path).joinpath("host-debian-13.manifest.json").read_text())
    # The documented key order; the expected measurement is written only when computed.
    assert [k for k in schema["properties"] if k != "expected_measurement"] == list(written)
    assert list(schema["properties"])[-1] == "expected_measurement"
    assert set(schema["required"]) == set(written) - {"debug"}  # older manifests lack debug
    assert schema["properties"]["schema"]["const"] == MANIFEST_SCHEMA
    assert schema["$defs"]["sha256"]["pattern"] == f"^{SHA256_HEX.pattern}$"


@pytest.mark.parametrize("size", [-1, -4096, 1.5, "1", None, True])
def test_a_manifest_being_built_names_the_field_without_a_position(
    tmp_path: Path, size: Any
) -> None:
    manifest = load_manifest(make_folder(tmp_path) / "host-debian-13.manifest.json")
    data = manifest.as_dict() | {"size": size}
    problems = check_manifest(data, display=manifest.file_name)
    assert [(p.file, p.line, p.column, p.field) for p in problems] == [
        ("host-debian-13.manifest.json", 0, 0, "size")
    ]


@pytest.mark.parametrize(
    "epoch",
    [
        "99999999999999999999",
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",
        "-1",
        "1.5",
        "1e9",
        "now",
        "0x10",
        "253402300800",
    ],
)
def test_an_odd_source_date_epoch_is_a_clear_error(
    epoch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sevimg.artifacts.manifest import default_build_time
    from sevimg.problems import SevimgError

    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    with pytest.raises(SevimgError, match="SOURCE_DATE_EPOCH"):
        default_build_time()


@pytest.mark.parametrize(("epoch", "year"), [("0", 1970), ("1700000000", 2023), ("", None)])
def test_a_source_date_epoch_sets_the_build_time(
    epoch: str, year: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sevimg.artifacts.manifest import default_build_time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    moment = default_build_time()
    assert moment.tzinfo is not None
    if year is not None:
        assert moment.year == year
