"""Debian-format archives: InRelease checked with gpgv, then Packages and Contents by hash.

Pure readers over bytes plus the one side effect the format needs (gpgv); the
network is :mod:`sevimg.archive.fetch`'s.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Packages, Release
from debian.debian_support import Version

from sevimg.archive.compress import SUFFIXES, ArchiveError, chunks, unpacked_limit
from sevimg.display import printable

ARCH = "amd64"
# The Release fields apt accepts as strong (MD5Sum and SHA1 are not): the strongest
# one listed wins (Ubuntu 26.10 and later list only SHA512). Field → hashlib name.
STRONG_HASHES = (("SHA512", "sha512"), ("SHA256", "sha256"))


@dataclass(frozen=True)
class IndexFile:
    """A file a Release names: its path below dists/SUITE/, digest and size."""

    path: str
    digest: str
    size: int
    algorithm: str = "sha256"  # hashlib name of `digest`: the strongest the Release lists

    @property
    def by_hash_folder(self) -> str:
        """The by-hash folder apt uses for this digest (SHA256, SHA512)."""
        return self.algorithm.upper()


@dataclass(frozen=True)
class ReleaseInfo:
    """What a verified InRelease says."""

    suite: str
    codename: str
    files: Mapping[str, IndexFile]
    by_hash: bool = False  # Acquire-By-Hash: files are also at .../by-hash/SHA512/<digest>

    def url(self, base: str, entry: IndexFile) -> str:
        """Where to fetch `entry`: by its hash when the archive offers it, so a mirror
        mid-sync cannot hand over a newer file than this InRelease names."""
        if not self.by_hash:
            return base + entry.path
        folder = entry.path.rpartition("/")[0]
        prefix = f"{base}{folder + '/' if folder else ''}"
        return f"{prefix}by-hash/{entry.by_hash_folder}/{entry.digest}"

    def pick(self, stem: str) -> IndexFile | None:
        """The best-compressed variant of `stem` (main/binary-amd64/Packages) the Release lists."""
        for suffix in (*SUFFIXES, ""):
            if (found := self.files.get(stem + suffix)) is not None:
                return found
        return None


@dataclass(frozen=True)
class DebPackage:
    """One binary package stanza, reduced to what the checks need."""

    name: str
    version: str
    provides: tuple[str, ...] = ()


def verify_inrelease(data: bytes, keyring: str, where: str) -> str:
    """The signed text of an InRelease file, if gpgv accepts its signature with `keyring`."""
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise ArchiveError(
            "gpgv is not installed: it checks the archive's signature",
            hint="tools/setup installs it (apt-get install gpgv)",
        )
    if not Path(keyring).is_file():
        raise ArchiveError(
            f"the keyring {keyring} that signs {where} is not on this machine",
            hint="tools/setup installs the distributions' archive keyrings",
        )
    result = subprocess.run(
        [gpgv, "--quiet", "--keyring", keyring, "--output", "-", "-"],
        input=data,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0 or not result.stdout:
        said = [
            line.strip()
            for line in result.stderr.decode("utf-8", "replace").splitlines()
            if line.strip()
        ]
        raise ArchiveError(
            f"{where}: the signature does not verify against {keyring}"
            + (f" ({said[-1]})" if said else ""),
            hint="a tampered mirror, a proxy rewriting answers, or a keyring too old for the archive",
        )
    return result.stdout.decode("utf-8", "replace")


def parse_release(text: str, where: str) -> ReleaseInfo:
    """The suite, codename and file list of a (verified) Release text.

    The file list comes from the strongest hash field the Release lists
    (SHA512, else SHA256), as apt takes it; weaker ones alone are an error.
    """
    release = Release(text)
    files: dict[str, IndexFile] = {}
    for field, algorithm in STRONG_HASHES:
        digits = 128 if algorithm == "sha512" else 64
        for entry in release.get(field, []):
            try:
                digest, name, size = entry[algorithm], entry["name"], int(entry["size"])
            except (KeyError, ValueError):
                digest = ""
            if len(digest) != digits or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ArchiveError(f"{where}: a malformed {field} line in the Release file")
            files[name] = IndexFile(name, digest.lower(), size, algorithm)
        if files:
            break
    if not files:
        strong = " or ".join(field for field, _ in STRONG_HASHES)
        raise ArchiveError(f"{where}: the Release file lists no {strong} checksums")
    return ReleaseInfo(
        suite=str(release.get("Suite", "")),
        codename=str(release.get("Codename", "")),
        files=files,
        by_hash=str(release.get("Acquire-By-Hash", "")).strip().lower() == "yes",
    )


def _names(field: str) -> tuple[str, ...]:
    # "a (= 1), b | c" → a, b, c: a Provides line names packages with optional versions.
    found: list[str] = []
    for part in field.replace("|", ",").split(","):
        name = part.strip().split(" ", 1)[0].split(":", 1)[0]
        if name:
            found.append(name)
    return tuple(found)


def parse_packages(data: bytes, where: str) -> list[DebPackage]:
    """The stanzas of a Packages index (decompressed)."""
    text = io.StringIO(data.decode("utf-8", "replace"))
    found: list[DebPackage] = []
    for number, para in enumerate(
        Packages.iter_paragraphs(
            text, use_apt_pkg=False, fields=["Package", "Version", "Provides"]
        ),
        1,
    ):
        name, version = para.get("Package"), para.get("Version")
        if not name or not version:
            raise ArchiveError(f"{where}: stanza {number}: no Package or no Version")
        try:
            Version(str(version))  # what comparing it later would raise on
        except ValueError:
            raise ArchiveError(
                f"{where}: stanza {number} (Package {printable(str(name))[:80]}): "
                f"Version {printable(str(version))[:80]!r} is not a valid package version"
            ) from None
        found.append(DebPackage(str(name), str(version), _names(str(para.get("Provides", "")))))
    return found


def contents_owners(pieces: Iterable[bytes], paths: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Which packages a Contents index says ship each of `paths` (absolute).

    The index is hundreds of MB: it is scanned piece by piece for the lines
    that start with a wanted path, never split into all its lines.
    """
    wanted = {p.lstrip("/").encode(): p for p in paths}
    owners: dict[str, tuple[str, ...]] = {}
    for line in _matching_lines(pieces, tuple(wanted)):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        path, where = parts
        if path in wanted:
            packages = tuple(
                item.rsplit(b"/", 1)[-1].decode() for item in where.split(b",") if item
            )
            owners[wanted[path]] = tuple(sorted({*owners.get(wanted[path], ()), *packages}))
    return owners


def _matching_lines(pieces: Iterable[bytes], starts: tuple[bytes, ...]) -> Iterator[bytes]:
    tail = b"\n"
    for piece in pieces:
        block = tail + piece
        cut = block.rfind(b"\n")
        tail = block[cut:]
        body = block[: cut + 1]
        for start in starts:
            at = body.find(b"\n" + start)
            while at != -1:
                end = body.find(b"\n", at + 1)
                yield body[at + 1 : end]
                at = body.find(b"\n" + start, end)
    if tail.strip():
        for start in starts:
            if tail.lstrip(b"\n").startswith(start):
                yield tail.strip(b"\n")


def contents_from(
    data: bytes, name: str, where: str, paths: Iterable[str]
) -> dict[str, tuple[str, ...]]:
    """:func:`contents_owners` over a compressed Contents file."""
    return contents_owners(chunks(data, name, where, unpacked_limit("contents", len(data))), paths)
