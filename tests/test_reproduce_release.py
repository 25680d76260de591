"""`sevimg reproduce --release`: a published release read from the fake GitHub (127.0.0.1).

The download is real HTTP against tests/fakegithub.py: release lookup,
asset listing, the API's redirect to a signed URL on another host. Time is
the fake's clock (`clock`), moved by the fake while it "drips" an asset;
no test sleeps or reads the wall clock (a server that stops sending holds
one socket read for the 0.5 s left of its deadline). The rebuild itself is
real mkosi (tests/e2e/test_reproducible.py); naming the release and the
command line are tests/test_reproduce_release_cli.py.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sevimg.artifacts.checksums import SHA256SUMS, sha256_file
from sevimg.artifacts.manifest import load_manifest
from sevimg.problems import SevimgError
from sevimg.release import measurements
from sevimg.release.download import ReleaseReader
from sevimg.release.github import Token
from sevimg.release.published import (
    Caps,
    ReleaseRef,
    download_release,
    measurement_disagreements,
)
from sevimg.retry import RetryPolicy
from tests.artifactkit import make_folder
from tests.fakegithub import TOKEN, FakeClock, FakeGitHub, FakeRelease

REF = ReleaseRef("acme/sev-images", "v1.0.0")
UKIS = ("guest-debian-13.efi", "host-debian-13.efi")


def publish(fake: FakeGitHub, tmp_path: Path, *, size: int = 4096) -> tuple[FakeRelease, Path]:
    """A release as `sevimg publish` leaves it: UKIs, manifests, SHA256SUMS, measurements.json."""
    folder = make_folder(tmp_path / "built", ["debian-13"], size=size)
    release = fake.add_release(REF.tag)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            fake.add_asset(release, path.name, path.read_bytes())
    manifests = [load_manifest(p) for p in sorted(folder.glob("*.manifest.json"))]
    fake.add_asset(release, measurements.MEASUREMENTS, measurements.document(manifests, "a" * 40))
    fake.add_asset(release, "README.txt", b"not ours\n")
    return release, folder


def reader(
    fake: FakeGitHub, clock: FakeClock, *, token: str | None = TOKEN, deadline: float = 600
) -> ReleaseReader:
    return ReleaseReader(
        REF.repo,
        Token(token, "test") if token else None,
        deadline=deadline,
        api_url=fake.api_url,
        clock=clock,
        retry=RetryPolicy(attempts=3),
    )


def fetch(fake: FakeGitHub, clock: FakeClock, dest: Path, **kwargs: object) -> Path:
    with reader(fake, clock) as client:
        return download_release(client, REF, dest, **kwargs)  # type: ignore[arg-type]


def downloads(fake: FakeGitHub) -> list[str]:
    """Asset ids whose bytes were sent (the signed-URL requests that succeeded)."""
    return [r.path for r in fake.requests if r.path.startswith("/objects/") and r.status == 200]


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- downloading -----------------------------------------------------------------------------


def test_a_release_downloads_into_a_checked_folder(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    _, built = publish(fake, tmp_path)
    dest = fetch(fake, clock, tmp_path / "dl" / "release")
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(
        [
            *UKIS,
            "guest-debian-13.manifest.json",
            "host-debian-13.manifest.json",
            SHA256SUMS,
            measurements.MEASUREMENTS,
        ]
    )
    for name in (*UKIS, SHA256SUMS):
        assert (dest / name).read_bytes() == (built / name).read_bytes()
    assert leftovers(dest.parent) == []
    # The bytes came from the signed URL on the other host, without the token.
    objects = [r for r in fake.requests if r.path.startswith("/objects/")]
    assert len(objects) == 6 and {r.server for r in objects} == {"uploads"}
    assert not any("Authorization" in r.headers for r in objects)
    api = [r for r in fake.requests if r.server == "api"]
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in api)


def test_a_public_release_needs_no_token(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    with reader(fake, clock, token=None) as client:
        dest = download_release(client, REF, tmp_path / "dl" / "r", images=["guest-debian-13"])
    assert sorted(p.name for p in dest.glob("*.efi")) == ["guest-debian-13.efi"]
    assert not any("Authorization" in r.headers for r in fake.requests)


def test_files_already_downloaded_are_kept_and_a_changed_one_fetched_again(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    dest = fetch(fake, clock, tmp_path / "dl" / "r")
    first = len(downloads(fake))
    (dest / "host-debian-13.efi").write_bytes(b"spoiled")
    fetch(fake, clock, dest)
    # SHA256SUMS and measurements.json are always asked; of the rest only the spoiled UKI.
    assert len(downloads(fake)) - first == 3
    assert (
        sha256_file(dest / "host-debian-13.efi")
        == load_manifest(dest / "host-debian-13.manifest.json").sha256
    )


def test_images_can_be_picked_by_id_or_catalog_name(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    dest = fetch(fake, clock, tmp_path / "a", images=["host-debian-13"])
    assert sorted(p.name for p in dest.glob("*.efi")) == ["host-debian-13.efi"]
    dest = fetch(fake, clock, tmp_path / "b", images=["debian-13"])
    assert sorted(p.name for p in dest.glob("*.efi")) == list(UKIS)
    with pytest.raises(SevimgError, match="has no image debian-14") as info:
        fetch(fake, clock, tmp_path / "c", images=["debian-14"])
    assert "guest-debian-13, host-debian-13" in info.value.hint


def test_a_missing_release_is_a_clear_error_and_writes_nothing(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    fake.add_release("v0.9.0")
    fake.add_release(REF.tag, draft=True)  # not published: the public cannot see it
    with pytest.raises(SevimgError, match=r"acme/sev-images has no published release 'v1\.0\.0'"):
        fetch(fake, clock, tmp_path / "dl" / "r")
    assert not (tmp_path / "dl").exists()


def test_a_release_without_sha256sums_is_refused(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    release.assets = [a for a in release.assets if a.name != SHA256SUMS]
    with pytest.raises(SevimgError, match="has no SHA256SUMS asset"):
        fetch(fake, clock, tmp_path / "dl" / "r")


def test_a_missing_uki_fails_and_leaves_the_earlier_download_as_it_was(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    dest = fetch(fake, clock, tmp_path / "dl" / "r")
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    release.assets = [a for a in release.assets if a.name != "host-debian-13.efi"]
    with pytest.raises(SevimgError, match="has no asset host-debian-13.efi"):
        fetch(fake, clock, dest)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize(
    "name", ["../guest-debian-13.efi", "x/../../SHA256SUMS", "sub/host-debian-13.manifest.json"]
)
def test_an_asset_name_that_is_not_a_plain_file_name_is_refused(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path, name: str
) -> None:
    release, _ = publish(fake, tmp_path)
    fake.add_asset(release, name, b"MZ planted")
    dest = tmp_path / "deep" / "dl" / "r"
    with pytest.raises(SevimgError, match="which is not a plain file name"):
        fetch(fake, clock, dest)
    assert not (tmp_path / "deep" / "guest-debian-13.efi").exists()
    assert not (tmp_path / "deep" / "dl").exists()
    assert downloads(fake) == []


def test_an_asset_over_its_cap_is_refused_before_it_is_downloaded(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path, size=8192)
    with pytest.raises(SevimgError, match="lists it as 8192 bytes, more than the 4096"):
        fetch(fake, clock, tmp_path / "dl" / "r", caps=Caps(image=4096))
    assert not (tmp_path / "dl" / "r").exists()


def test_a_server_sending_more_than_it_lists_is_cut_off(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    uki = release.asset("guest-debian-13.efi")
    assert uki is not None
    fake.served[uki.name] = uki.data + b"\0" * 10_000_000
    with pytest.raises(SevimgError, match="sent more than the 4096 bytes it lists"):
        fetch(fake, clock, tmp_path / "dl" / "r")
    assert leftovers(tmp_path / "dl") == [] and not (tmp_path / "dl" / "r").exists()


def test_bytes_that_are_not_the_ones_github_lists_are_refused(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    uki = release.asset("host-debian-13.efi")
    assert uki is not None
    fake.served[uki.name] = b"X" * len(uki.data)
    with pytest.raises(SevimgError, match="arrived with SHA-256 .* but GitHub's digest"):
        fetch(fake, clock, tmp_path / "dl" / "r")


def test_an_asset_replaced_after_publishing_fails_against_sha256sums(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    uki = release.asset("guest-debian-13.efi")
    assert uki is not None
    uki.data = uki.data[:-1] + b"!"  # GitHub's digest follows the new bytes; SHA256SUMS does not
    with pytest.raises(SevimgError, match="but SHA256SUMS says .* replaced after publishing"):
        fetch(fake, clock, tmp_path / "dl" / "r")
    assert not (tmp_path / "dl" / "r").exists()


def test_a_malformed_sha256sums_names_its_line(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    sums = release.asset(SHA256SUMS)
    assert sums is not None
    sums.data += b"0123  ../../etc/passwd\n"
    with pytest.raises(SevimgError, match="SHA256SUMS of release acme/sev-images@v1.0.0") as info:
        fetch(fake, clock, tmp_path / "dl" / "r")
    assert [p.line for p in info.value.problems] == [5]


def test_a_manifest_sha256sums_does_not_list_is_refused(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, _ = publish(fake, tmp_path)
    sums = release.asset(SHA256SUMS)
    assert sums is not None
    sums.data = b"".join(
        line + b"\n" for line in sums.data.splitlines() if b"guest-debian-13.manifest" not in line
    )
    with pytest.raises(SevimgError, match="does not list guest-debian-13.manifest.json"):
        fetch(fake, clock, tmp_path / "dl" / "r")


def test_a_manifest_under_another_images_name_is_refused(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    release, built = publish(fake, tmp_path)
    host = (built / "host-debian-13.manifest.json").read_bytes()
    guest = release.asset("guest-debian-13.manifest.json")
    sums = release.asset(SHA256SUMS)
    assert guest is not None and sums is not None
    old = sha256_file(built / "guest-debian-13.manifest.json").encode()
    guest.data = host
    sums.data = sums.data.replace(old, sha256_file(built / "host-debian-13.manifest.json").encode())
    with pytest.raises(SevimgError, match="is the manifest of 'host-debian-13', not of 'guest"):
        fetch(fake, clock, tmp_path / "dl" / "r")


def test_a_dripping_server_ends_at_the_deadline(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path, size=64 * 1024)
    fake.download_chunk = 4096

    def slow(name: str, sent: int) -> None:
        if name == "guest-debian-13.efi":
            clock.now += 30  # each chunk takes half a minute: 16 of them, 480 s

    fake.on_download_chunk = slow
    # It is that download that stops, not the next one.
    with (
        reader(fake, clock, deadline=300) as client,
        pytest.raises(
            SevimgError,
            match=r"^downloading guest-debian-13\.efi: .*within the download deadline "
            r"\(300 s, --deadline\)",
        ),
    ):
        download_release(client, REF, tmp_path / "dl" / "r")
    assert leftovers(tmp_path / "dl") == [] and not (tmp_path / "dl" / "r").exists()


def test_a_server_that_stops_sending_ends_at_the_deadline(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    # The fake's clock stands still: the socket read is bounded by what is
    # left of the deadline (0.5 s), and the retry would end past it.
    publish(fake, tmp_path)
    stalled = threading.Event()

    def stall(name: str, sent: int) -> None:
        stalled.wait()

    fake.on_download_chunk = stall
    try:
        with (
            reader(fake, clock, deadline=0.5) as client,
            pytest.raises(SevimgError, match=r"deadline of 0.5 s"),
        ):
            download_release(client, REF, tmp_path / "dl" / "r")
    finally:
        stalled.set()
    assert leftovers(tmp_path / "dl") == [] and not (tmp_path / "dl" / "r").exists()


def test_a_folder_that_is_not_a_download_is_never_replaced(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    built = make_folder(tmp_path / "out", ["debian-13"])  # a build's folder: it has logs/
    before = sorted(p.name for p in built.rglob("*"))
    with pytest.raises(SevimgError, match=r"holds what a release download does not \(logs\)"):
        fetch(fake, clock, built)
    assert sorted(p.name for p in built.rglob("*")) == before and downloads(fake) == []


def test_a_rate_limit_is_waited_out_within_the_deadline_and_refused_past_it(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    fake.primary_rate_limit("GET", r".*/releases/assets/\d+", reset_in=60)
    fetch(fake, clock, tmp_path / "a")
    assert clock.sleeps == [61.0]
    fake.primary_rate_limit("GET", r".*/releases/tags/.*", reset_in=3000)
    with (
        reader(fake, clock, deadline=600) as client,
        pytest.raises(SevimgError, match="did not finish within its deadline of 600 s"),
    ):
        download_release(client, REF, tmp_path / "b")


def test_server_errors_are_retried_and_a_403_is_not(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    fake.fail("GET", r"/objects/\d+", 502)
    fetch(fake, clock, tmp_path / "a")
    assert clock.sleeps == [2.0]
    fake.fail("GET", r".*/releases/assets/\d+", 403)
    with pytest.raises(
        SevimgError, match=r"downloading \S+: GitHub refused \(403 Fault injected\)"
    ):
        fetch(fake, clock, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_an_unreachable_api_is_a_clear_error(clock: FakeClock, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ReleaseReader(
        REF.repo,
        None,
        deadline=600,
        api_url=f"http://127.0.0.1:{port}",
        clock=clock,
        retry=RetryPolicy(attempts=2),
    )
    with client, pytest.raises(SevimgError, match=f"no answer from 127.0.0.1:{port}"):
        download_release(client, REF, tmp_path / "r")


# --- measurements.json -------------------------------------------------------------------------


def test_measurements_json_must_agree_with_the_manifests(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    dest = fetch(fake, clock, tmp_path / "dl" / "r")
    manifests = [load_manifest(p) for p in sorted(dest.glob("*.manifest.json"))]
    assert measurement_disagreements(dest, manifests) == []
    path = dest / measurements.MEASUREMENTS
    data = json.loads(path.read_text())
    data["images"]["host-debian-13"]["uki_sha256"] = "0" * 64
    data["images"]["guest-debian-13"]["expected_measurement"] = {"measurement": "ab" * 48}
    path.write_text(json.dumps(data))
    assert measurement_disagreements(dest, manifests) == [
        f"measurements.json: guest-debian-13: expected measurement {'ab' * 48}, "
        "the manifest says none",
        f"measurements.json: host-debian-13: uki_sha256 {'0' * 64}, "
        f"the manifest says {manifests[1].sha256}",
    ]
    del data["images"]["host-debian-13"]
    path.write_text(json.dumps(data))
    assert "measurements.json: no entry for host-debian-13" in measurement_disagreements(
        dest, manifests
    )


def test_an_asset_gone_between_listing_and_download(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path)
    fake.fail("GET", r".*/releases/assets/\d+", 404)
    with pytest.raises(SevimgError, match=r"^downloading SHA256SUMS: not found \(404\)"):
        fetch(fake, clock, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_progress_hears_every_byte_of_each_download(
    fake: FakeGitHub, clock: FakeClock, tmp_path: Path
) -> None:
    publish(fake, tmp_path, size=10_000)
    fake.download_chunk = 1000
    heard: dict[str, list[int]] = {}

    @contextlib.contextmanager
    def progress(name: str, size: int) -> Iterator[Callable[[int], None]]:
        heard[name] = [size]
        yield heard[name].append

    fetch(fake, clock, tmp_path / "r", progress=progress)
    for uki in UKIS:
        assert heard[uki][0] == 10_000 and heard[uki][-1] == 10_000
        assert heard[uki][1:] == sorted(heard[uki][1:])
