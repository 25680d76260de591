"""The artifact folder `sevimg build` writes and `sevimg publish` reads.

One folder (by default `out/`) holds, for each built image id such as
`host-debian-13`::

    host-debian-13.efi              the UKI
    host-debian-13.manifest.json    what went into it (:class:`Manifest`)
    SHA256SUMS                      `sha256sum -c` format, every .efi and manifest
    logs/                           build logs; never published

Both sides use this module, so the writer and the reader cannot drift apart:
the builder calls :meth:`Manifest.for_artifact`, :func:`write_manifest` and
:func:`write_sha256sums`; the publisher calls :func:`verify_artifacts`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from sevimg import __version__
from sevimg.problems import Problem, SevimgError, error, has_errors, warning
from sevimg.render.write import write_file_atomic

MANIFEST_SCHEMA = "sevimg-manifest/1"
SHA256SUMS = "SHA256SUMS"
ARTIFACT_SUFFIX = ".efi"
MANIFEST_SUFFIX = ".manifest.json"
LOGS_DIR = "logs"
ROLES: tuple[str, ...] = ("guest", "host")
# GitHub refuses release assets of 2 GiB and more.
MAX_ASSET_SIZE = 2 * 1024**3

ArtifactRole = Literal["host", "guest"]

# Names that may appear in SHA256SUMS and in the folder: plain file names
# only, so a crafted SHA256SUMS can never point outside the folder.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SUMS_LINE = re.compile(r"(?P<sha>[0-9a-f]{64})  (?P<name>[^\n]+)")
# role-distro-release with an optional -debug suffix (see catalog.DISTRO_NAME/RELEASE_NAME).
_IMAGE = r"[a-z][a-z0-9]{1,31}-(?:[0-9]{1,4}(?:\.[0-9]{1,4})?|[a-z][a-z0-9]{1,31})"
# Always fullmatch: `$` would also accept a final newline.
_IMAGE_ID = re.compile(rf"(?P<role>host|guest)-(?P<image>{_IMAGE})(?P<debug>-debug)?")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file as 64 lowercase hex digits, read in chunks (never all at once)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def artifact_name(image_id: str) -> str:
    """`host-debian-13` → `host-debian-13.efi`."""
    return f"{image_id}{ARTIFACT_SUFFIX}"


def manifest_name(image_id: str) -> str:
    """`host-debian-13` → `host-debian-13.manifest.json`."""
    return f"{image_id}{MANIFEST_SUFFIX}"


def parse_image_id(image_id: str) -> tuple[ArtifactRole, str, bool] | None:
    """`host-debian-13-debug` → ('host', 'debian-13', True); None when it is no image id."""
    match = _IMAGE_ID.fullmatch(image_id)
    if not match:
        return None
    return cast(ArtifactRole, match["role"]), match["image"], bool(match["debug"])


def looks_debug(image_id: str) -> bool:
    """True for a debug image id: `-debug` at the end, or `debug` anywhere as a part of it.

    Deliberately wider than :func:`parse_image_id`'s flag: `host-debian-debug`
    parses as release "debug" of Debian, but a name that says debug is
    treated as one wherever it decides what gets published.
    """
    return "debug" in image_id.lower().split("-")


def is_plain_name(name: str) -> bool:
    """True for a plain file name (no folder, no traversal, no odd characters)."""
    return bool(_PLAIN_NAME.fullmatch(name)) and name not in (".", "..")


def publishable_names(folder: Path) -> list[str]:
    """Names of the images and manifests in `folder` (what SHA256SUMS must cover), sorted."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith((ARTIFACT_SUFFIX, MANIFEST_SUFFIX))
    )


# --- SHA256SUMS ------------------------------------------------------------------------


def format_sha256sums(sums: Mapping[str, str]) -> bytes:
    """The text of a SHA256SUMS file for name → sha256, sorted by name."""
    for name, sha in sums.items():
        if not is_plain_name(name):
            raise SevimgError(f"{name!r} is not a plain file name; SHA256SUMS lists files by name")
        if not _SHA256.fullmatch(sha):
            raise SevimgError(f"{sha!r} (for {name}) is not a SHA-256 in lowercase hex")
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums)).encode()


def write_sha256sums(folder: Path, names: Iterable[str] | None = None) -> Path:
    """Write `folder/SHA256SUMS` for `names` (default: every image and manifest in `folder`).

    Each line is `<sha256>  <name>` (two spaces, text mode), sorted by name,
    exactly what `sha256sum -c SHA256SUMS` checks. Written atomically.
    """
    chosen = publishable_names(folder) if names is None else list(dict.fromkeys(names))
    sums: dict[str, str] = {}
    for name in chosen:
        if not is_plain_name(name) or name == SHA256SUMS:
            raise SevimgError(
                f"cannot list {name!r} in {folder / SHA256SUMS}: not a plain file name"
            )
        path = folder / name
        if not path.is_file():
            raise SevimgError(f"cannot list {name} in {folder / SHA256SUMS}: {path} is not a file")
        sums[name] = sha256_file(path)
    target = folder / SHA256SUMS
    write_file_atomic(target, format_sha256sums(sums))
    return target


def parse_sha256sums(text: str, *, display: str) -> tuple[dict[str, str], list[Problem]]:
    """name → sha256 from the text of a SHA256SUMS file, and a problem per bad line."""
    sums: dict[str, str] = {}
    problems: list[Problem] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    for number, line in enumerate(lines, 1):

        def bad(message: str, line_no: int = number) -> None:
            problems.append(error(display, message, line=line_no, column=1))

        if "\r" in line:
            bad("carriage return in line; SHA256SUMS uses Unix line endings")
            continue
        match = _SUMS_LINE.fullmatch(line)
        if not match:
            if line.startswith("\\"):
                bad("escaped file names are not accepted; names are plain file names")
            elif re.match(r"^[0-9a-fA-F]{64} \*", line):
                bad("binary-mode line (`<sha256> *<name>`); expected `<sha256>  <name>`")
            else:
                bad("expected `<64 lowercase hex digits>  <file name>`")
            continue
        name = match["name"]
        if not is_plain_name(name):
            bad(f"{name!r} is not a plain file name (no folders, no `..`, no spaces)")
            continue
        if name == SHA256SUMS:
            bad("SHA256SUMS cannot list itself")
            continue
        if name in sums:
            bad(f"{name} is listed twice")
            continue
        sums[name] = match["sha"]
    return sums, problems


def read_sha256sums(path: Path) -> dict[str, str]:
    """name → sha256 from a SHA256SUMS file; SevimgError naming the file and line if it is malformed."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SevimgError(f"{path} not found") from None
    except UnicodeDecodeError:
        raise SevimgError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise SevimgError(f"cannot read {path}: {exc.strerror or exc}") from None
    sums, problems = parse_sha256sums(text, display=str(path))
    if problems:
        raise SevimgError(f"{path} is not a valid SHA256SUMS file", problems)
    return sums


# --- manifests -------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """A catalog YAML file an image was built from."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Tool:
    """A tool embedded in an image (snphost, snpguest, beacon), as pinned."""

    version: str
    sha256: str


@dataclass(frozen=True)
class Package:
    """A package installed in the image."""

    name: str
    version: str


@dataclass(frozen=True)
class EmbeddedGuest:
    """The guest UKI a host image carries."""

    image_id: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What one artifact is and what went into it: `<image-id>.manifest.json`.

    `tools` maps a tool name to what was embedded, or None when the tool is
    known but not embedded in this image; it is stored as sorted pairs so the
    manifest stays hashable and its JSON deterministic.
    """

    image_id: str
    role: ArtifactRole
    image: str
    distro: str
    release: str
    artifact: str
    size: int
    sha256: str
    sources: tuple[SourceFile, ...]
    sevimg_version: str
    mkosi_version: str
    tools: tuple[tuple[str, Tool | None], ...]
    packages: tuple[Package, ...]
    embedded_guest: EmbeddedGuest | None
    built_at: str
    schema: str = field(default=MANIFEST_SCHEMA)
    # A --debug-image build (console autologin). Also in the name (-debug);
    # written so a reader need not trust the name alone. Manifests written
    # before the key existed read as their name says.
    debug: bool = False

    @property
    def file_name(self) -> str:
        """`<image-id>.manifest.json`."""
        return manifest_name(self.image_id)

    def tool(self, name: str) -> Tool | None:
        """The embedded tool called `name`, or None."""
        return dict(self.tools).get(name)

    @classmethod
    def for_artifact(
        cls,
        artifact: Path,
        *,
        distro: str,
        release: str,
        sources: Iterable[SourceFile],
        mkosi_version: str,
        tools: Mapping[str, Tool | None],
        packages: Iterable[Package],
        embedded_guest: EmbeddedGuest | None,
        built_at: datetime | None = None,
        sevimg_version: str = __version__,
        debug: bool | None = None,
    ) -> Manifest:
        """The manifest of a built artifact: role, image, size, sha256 and debug come from the file.

        `artifact` must be named `<image-id>.efi`. `built_at` defaults to
        SOURCE_DATE_EPOCH when set (reproducible builds), else now. `debug`,
        when given (the build's --debug-image), must agree with the name.
        """
        image_id = artifact.name.removesuffix(ARTIFACT_SUFFIX)
        parsed = parse_image_id(image_id) if artifact.name.endswith(ARTIFACT_SUFFIX) else None
        if parsed is None:
            raise SevimgError(
                f"{artifact.name} is not named <role>-<distro>-<release>.efi (e.g. host-debian-13.efi)"
            )
        role, image, named_debug = parsed
        if debug is not None and debug != named_debug:
            raise SevimgError(
                f"{artifact.name}: a {'debug' if debug else 'release'} build must "
                f"{'' if debug else 'not '}be named <role>-<distro>-<release>-debug.efi"
            )
        manifest = cls(
            image_id=image_id,
            role=role,
            image=image,
            distro=distro,
            release=release,
            artifact=artifact.name,
            size=artifact.stat().st_size,
            sha256=sha256_file(artifact),
            sources=tuple(sources),
            sevimg_version=sevimg_version,
            mkosi_version=mkosi_version,
            tools=tuple(sorted(tools.items())),
            packages=tuple(sorted(packages, key=lambda p: (p.name, p.version))),
            embedded_guest=embedded_guest,
            built_at=format_timestamp(built_at or default_build_time()),
            debug=named_debug,
        )
        problems = _check_manifest(manifest.as_dict(), display=manifest.file_name)
        if problems:
            raise SevimgError(f"the manifest for {artifact.name} would not be valid", problems)
        return manifest

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data, keys in the documented order."""
        return {
            "schema": self.schema,
            "image_id": self.image_id,
            "role": self.role,
            "image": self.image,
            "debug": self.debug,
            "distro": self.distro,
            "release": self.release,
            "artifact": self.artifact,
            "size": self.size,
            "sha256": self.sha256,
            "sources": [{"path": s.path, "sha256": s.sha256} for s in self.sources],
            "sevimg_version": self.sevimg_version,
            "mkosi_version": self.mkosi_version,
            "tools": {
                name: None if tool is None else {"version": tool.version, "sha256": tool.sha256}
                for name, tool in self.tools
            },
            "packages": [{"name": p.name, "version": p.version} for p in self.packages],
            "embedded_guest": None
            if self.embedded_guest is None
            else {
                "image_id": self.embedded_guest.image_id,
                "sha256": self.embedded_guest.sha256,
            },
            "built_at": self.built_at,
        }

    def to_json(self) -> str:
        """The manifest file's text: indented JSON, documented key order, final newline."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, *, display: str = "manifest") -> Manifest:
        """Parse and validate a manifest; SevimgError with one problem per wrong field."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SevimgError(
                f"{display} is not valid JSON",
                [error(display, exc.msg, line=exc.lineno, column=exc.colno)],
            ) from None
        problems = _check_manifest(data, display=display)
        if problems:
            raise SevimgError(f"{display} is not a valid sevimg manifest", problems)
        return cls(
            schema=data["schema"],
            image_id=data["image_id"],
            role=data["role"],
            image=data["image"],
            distro=data["distro"],
            release=data["release"],
            artifact=data["artifact"],
            size=data["size"],
            sha256=data["sha256"],
            sources=tuple(SourceFile(s["path"], s["sha256"]) for s in data["sources"]),
            sevimg_version=data["sevimg_version"],
            mkosi_version=data["mkosi_version"],
            tools=tuple(
                (name, None if tool is None else Tool(tool["version"], tool["sha256"]))
                for name, tool in sorted(data["tools"].items())
            ),
            packages=tuple(Package(p["name"], p["version"]) for p in data["packages"]),
            embedded_guest=None
            if data["embedded_guest"] is None
            else EmbeddedGuest(
                data["embedded_guest"]["image_id"], data["embedded_guest"]["sha256"]
            ),
            built_at=data["built_at"],
            debug=data["debug"] if "debug" in data else _named_debug(data["image_id"]),
        )


def _named_debug(image_id: str) -> bool:
    parsed = parse_image_id(image_id)
    return parsed is not None and parsed[2]


def default_build_time() -> datetime:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else the current time, in UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), UTC)
    return datetime.now(UTC)


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 in UTC to the second: `2026-05-09T07:35:25Z`."""
    if moment.tzinfo is None:
        raise SevimgError("built_at must be a timezone-aware datetime")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write `folder/<image-id>.manifest.json` atomically; returns its path."""
    target = folder / manifest.file_name
    write_file_atomic(target, manifest.to_json().encode())
    return target


def load_manifest(path: Path) -> Manifest:
    """Read and validate a manifest file; SevimgError naming the file and field on any problem."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SevimgError(f"{path} not found") from None
    except UnicodeDecodeError:
        raise SevimgError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise SevimgError(f"cannot read {path}: {exc.strerror or exc}") from None
    return Manifest.from_json(text, display=str(path))


_MANIFEST_KEYS = (
    "schema",
    "image_id",
    "role",
    "image",
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
)
_OPTIONAL_MANIFEST_KEYS = ("debug",)


def _check_manifest(data: Any, *, display: str) -> list[Problem]:
    """Every problem with a manifest's parsed JSON: missing/unknown keys, types, consistency."""
    if not isinstance(data, dict):
        return [error(display, f"a manifest is a JSON object, not {_json_type(data)}")]
    problems: list[Problem] = []

    def bad(where: str, message: str) -> None:
        problems.append(error(display, message, field=where))

    for key in _MANIFEST_KEYS:
        if key not in data:
            bad(key, "missing")
    known = (*_MANIFEST_KEYS, *_OPTIONAL_MANIFEST_KEYS)
    for key in sorted(set(data) - set(known)):
        bad(key, f"unknown key (a {MANIFEST_SCHEMA} manifest has: {', '.join(known)})")
    if problems:
        return problems

    def string(where: str, value: Any) -> bool:
        if not isinstance(value, str) or not value:
            bad(where, f"must be a non-empty string, not {_json_type(value)}")
            return False
        return True

    def sha(where: str, value: Any) -> None:
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            bad(where, "must be a SHA-256: 64 lowercase hex digits")

    def objects(where: str, value: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            bad(where, f"must be a list, not {_json_type(value)}")
            return []
        good = []
        for i, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != set(keys):
                bad(f"{where}[{i}]", f"must be an object with exactly {', '.join(keys)}")
            else:
                good.append(item)
        return good

    if data["schema"] != MANIFEST_SCHEMA:
        bad("schema", f"is {data['schema']!r}; this sevimg reads {MANIFEST_SCHEMA!r}")
    for key in ("image_id", "image", "distro", "release", "sevimg_version", "mkosi_version"):
        string(key, data[key])
    if data["role"] not in ROLES:
        bad("role", f"must be host or guest, not {data['role']!r}")
    sha("sha256", data["sha256"])
    size = data["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        bad("size", f"must be a whole number of bytes, not {_json_type(size)}")

    image_id = data["image_id"]
    if isinstance(image_id, str):
        parsed = parse_image_id(image_id)
        if parsed is None:
            bad("image_id", f"{image_id!r} is not <role>-<distro>-<release>[-debug]")
        else:
            role, image, _ = parsed
            if role != data["role"]:
                bad("image_id", f"{image_id!r} does not start with its role {data['role']!r}")
            if image != data["image"]:
                bad("image", f"is {data['image']!r} but image_id {image_id!r} names {image!r}")
            if isinstance(data["distro"], str) and not image.startswith(f"{data['distro']}-"):
                bad("distro", f"{data['distro']!r} does not match image {image!r}")
        if data["artifact"] != artifact_name(image_id):
            bad("artifact", f"must be {artifact_name(image_id)!r}, not {data['artifact']!r}")
        if "debug" in data:
            flag = data["debug"]
            if not isinstance(flag, bool):
                bad("debug", f"must be true or false, not {_json_type(flag)}")
            elif parsed is not None and flag != parsed[2]:
                bad(
                    "debug",
                    f"is {str(flag).lower()}, but image_id {image_id!r} "
                    + (
                        "lacks the -debug suffix: a debug image is never named as a release image"
                        if flag
                        else "ends in -debug"
                    ),
                )

    for i, src in enumerate(objects("sources", data["sources"], ("path", "sha256"))):
        string(f"sources[{i}].path", src["path"])
        sha(f"sources[{i}].sha256", src["sha256"])
    for i, pkg in enumerate(objects("packages", data["packages"], ("name", "version"))):
        string(f"packages[{i}].name", pkg["name"])
        string(f"packages[{i}].version", pkg["version"])

    tools = data["tools"]
    if not isinstance(tools, dict):
        bad(
            "tools",
            f"must be an object (tool name → {{version, sha256}} or null), not {_json_type(tools)}",
        )
    else:
        for name, tool in tools.items():
            if tool is None:
                continue
            if not isinstance(tool, dict) or set(tool) != {"version", "sha256"}:
                bad(f"tools.{name}", "must be null or an object with exactly version, sha256")
                continue
            string(f"tools.{name}.version", tool["version"])
            sha(f"tools.{name}.sha256", tool["sha256"])

    guest = data["embedded_guest"]
    if data["role"] == "guest" and guest is not None:
        bad("embedded_guest", "must be null for a guest image")
    elif data["role"] == "host":
        if not isinstance(guest, dict) or set(guest) != {"image_id", "sha256"}:
            bad("embedded_guest", "a host image must name the guest it embeds: {image_id, sha256}")
        else:
            sha("embedded_guest.sha256", guest["sha256"])
            parsed_guest = (
                parse_image_id(guest["image_id"]) if isinstance(guest["image_id"], str) else None
            )
            if parsed_guest is None or parsed_guest[0] != "guest":
                bad("embedded_guest.image_id", f"{guest['image_id']!r} is not a guest image id")
            elif (
                isinstance(image_id, str)
                and looks_debug(guest["image_id"])
                and not looks_debug(image_id)
            ):
                bad(
                    "embedded_guest.image_id",
                    f"{guest['image_id']!r} is a debug guest, but {image_id!r} is not named "
                    "as a debug host: a release host never embeds a debug guest",
                )

    built_at = data["built_at"]
    if string("built_at", built_at):
        try:
            moment = datetime.fromisoformat(built_at)
        except ValueError:
            bad("built_at", f"{built_at!r} is not an ISO-8601 time such as 2026-05-09T07:35:25Z")
        else:
            if moment.utcoffset() is None or moment.utcoffset() != UTC.utcoffset(None):
                bad("built_at", f"{built_at!r} must be in UTC (end in Z or +00:00)")
    return problems


def _json_type(value: Any) -> str:
    """A JSON type name for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# --- the whole folder -----------------------------------------------------------------


@dataclass(frozen=True)
class LocalArtifact:
    """One file of a verified folder: an image, a manifest or SHA256SUMS."""

    name: str
    path: Path
    size: int
    sha256: str
    kind: Literal["image", "manifest", "sums"]
    role: ArtifactRole | None  # images and manifests
    image: str | None  # catalog name, images and manifests
    # A debug build, by any account: its name, its manifest, the guest it embeds.
    debug: bool = False
    debug_reason: str = ""


@dataclass(frozen=True)
class ArtifactFolder:
    """A verified artifact folder: its files, and the manifests by image id."""

    folder: Path
    files: tuple[LocalArtifact, ...]
    manifests: Mapping[str, Manifest]
    problems: tuple[Problem, ...]  # warnings only, once verified

    def images(self) -> list[str]:
        """Catalog names of the images in the folder, sorted."""
        return sorted({f.image for f in self.files if f.image})

    def debug_images(self) -> list[LocalArtifact]:
        """The debug images (.efi files) in the folder."""
        return [f for f in self.files if f.kind == "image" and f.debug]


def refuse_debug(files: Sequence[LocalArtifact], *, action: str) -> None:
    """A SevimgError naming every debug image in `files`, unless there is none.

    `action` is the command (publish, merge-artifacts) whose --allow-debug
    lets them through.
    """
    images = [f for f in files if f.kind == "image" and f.debug]
    if not images:
        return
    problems = [
        error(
            str(f.path),
            f"a debug image ({f.debug_reason}): console autologin, not for a release; "
            f"refused without --allow-debug",
        )
        for f in images
    ]
    names = ", ".join(f.name for f in images)
    raise SevimgError(
        f"{names} {'is a debug image' if len(images) == 1 else 'are debug images'}; "
        f"nothing was {'published' if action == 'publish' else 'merged'}",
        problems,
        hint=f"to {action} {'it' if len(images) == 1 else 'them'} anyway, pass --allow-debug "
        "(a debug image never gets a dispatch content type, so dispatch never boots it); "
        "or build without --debug-image",
    )


def verify_artifacts(folder: Path) -> list[Problem]:
    """Every problem in an artifact folder; an empty list means it may be published.

    Checks that SHA256SUMS exists and parses, every file it lists exists and
    matches, every image and manifest in the folder is listed, every image
    has a manifest, and every manifest agrees with its image (name, size,
    sha256). Other files are warned about (they are not published).
    """
    return list(_scan(folder)[1])


def load_artifact_folder(folder: Path) -> ArtifactFolder:
    """Verify `folder` and return its files; SevimgError listing every error if it is not publishable."""
    found, problems = _scan(folder)
    if has_errors(problems):
        count = sum(p.is_error for p in problems)
        raise SevimgError(
            f"{folder} is not publishable: {count} problem{'s' if count != 1 else ''}",
            problems,
            hint="rebuild it with `sevimg build`, or fix the files and rerun `sevimg publish --dry-run`",
        )
    assert found is not None
    return found


def _scan(folder: Path) -> tuple[ArtifactFolder | None, list[Problem]]:
    problems: list[Problem] = []
    sums_path = folder / SHA256SUMS
    display_sums = str(sums_path)
    if not folder.is_dir():
        return None, [error(str(folder), "no such folder (build images with `sevimg build` first)")]
    if not sums_path.is_file():
        return None, [error(display_sums, "missing: every artifact folder has a SHA256SUMS")]
    try:
        sums_text = sums_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None, [error(display_sums, "is not UTF-8 text")]
    sums, sums_problems = parse_sha256sums(sums_text, display=display_sums)
    problems += sums_problems

    present = {p.name: p for p in folder.iterdir()}
    actual: dict[str, str] = {}
    for name, expected in sums.items():
        path = present.get(name)
        if path is None or not path.is_file():
            problems.append(error(display_sums, f"lists {name}, which is not in {folder}"))
            continue
        actual[name] = sha256_file(path)
        if actual[name] != expected:
            problems.append(
                error(
                    str(path),
                    f"SHA-256 is {actual[name]} but SHA256SUMS says {expected}; the file changed after the build",
                )
            )

    images: dict[str, Path] = {}
    manifest_files: dict[str, Path] = {}
    for name, path in sorted(present.items()):
        if name == SHA256SUMS or (name == LOGS_DIR and path.is_dir()):
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(warning(str(path), "not a regular file; it is not published"))
            continue
        if name.endswith(MANIFEST_SUFFIX):
            image_id = name.removesuffix(MANIFEST_SUFFIX)
            target = manifest_files
        elif name.endswith(ARTIFACT_SUFFIX):
            image_id = name.removesuffix(ARTIFACT_SUFFIX)
            target = images
        else:
            problems.append(
                warning(str(path), "not an image, manifest or SHA256SUMS; it is not published")
            )
            continue
        if parse_image_id(image_id) is None:
            problems.append(
                error(
                    str(path),
                    "name is not <role>-<distro>-<release>[-debug] with .efi or .manifest.json",
                )
            )
            continue
        if name not in sums:
            problems.append(error(str(path), "not listed in SHA256SUMS"))
        target[image_id] = path

    manifests: dict[str, Manifest] = {}
    for image_id, path in sorted(manifest_files.items()):
        try:
            manifest = load_manifest(path)
        except SevimgError as exc:
            problems += exc.problems or [error(str(path), exc.message)]
            continue
        manifests[image_id] = manifest
        if manifest.image_id != image_id:
            problems.append(
                error(
                    str(path),
                    f"says image_id {manifest.image_id!r}; the file is named for {image_id!r}",
                    field="image_id",
                )
            )
            continue
        image_path = images.get(image_id)
        if image_path is None:
            problems.append(
                error(
                    str(path),
                    f"describes {manifest.artifact}, which is not in {folder}",
                    field="artifact",
                )
            )
            continue
        size = image_path.stat().st_size
        if manifest.size != size:
            problems.append(
                error(
                    str(path),
                    f"says {manifest.size} bytes; {manifest.artifact} has {size}",
                    field="size",
                )
            )
        digest = actual.get(manifest.artifact) or sha256_file(image_path)
        if manifest.sha256 != digest:
            problems.append(
                error(
                    str(path),
                    f"says {manifest.sha256}; {manifest.artifact} has SHA-256 {digest}",
                    field="sha256",
                )
            )
    for image_id, path in sorted(images.items()):
        if image_id not in manifest_files:
            problems.append(error(str(path), f"has no manifest ({manifest_name(image_id)})"))
        if path.stat().st_size >= MAX_ASSET_SIZE:
            problems.append(
                error(str(path), "is 2 GiB or larger; GitHub release assets must be smaller")
            )

    # A host carries its release's guest: when both are here they must be the same build.
    for image_id, manifest in sorted(manifests.items()):
        guest = manifest.embedded_guest
        if guest is None or guest.image_id not in manifests:
            continue
        if manifests[guest.image_id].sha256 != guest.sha256:
            problems.append(
                warning(
                    str(manifest_files[image_id]),
                    f"embeds {guest.image_id} with SHA-256 {guest.sha256}, but {artifact_name(guest.image_id)} here has {manifests[guest.image_id].sha256}",
                    field="embedded_guest.sha256",
                )
            )

    if has_errors(problems):
        return None, problems
    files: list[LocalArtifact] = []
    for image_id, path in sorted(images.items()):
        role, image, _ = cast(tuple[ArtifactRole, str, bool], parse_image_id(image_id))
        reason = _debug_reason(image_id, manifests[image_id])
        for name, kind in ((path.name, "image"), (manifest_name(image_id), "manifest")):
            file_path = folder / name
            files.append(
                LocalArtifact(
                    name=name,
                    path=file_path,
                    size=file_path.stat().st_size,
                    sha256=actual[name],
                    kind=cast(Literal["image", "manifest"], kind),
                    role=role,
                    image=image,
                    debug=bool(reason),
                    debug_reason=reason,
                )
            )
    files.append(
        LocalArtifact(
            name=SHA256SUMS,
            path=sums_path,
            size=sums_path.stat().st_size,
            sha256=sha256_file(sums_path),
            kind="sums",
            role=None,
            image=None,
        )
    )
    return ArtifactFolder(folder, tuple(files), manifests, tuple(problems)), problems


def _debug_reason(image_id: str, manifest: Manifest) -> str:
    """Why the image is a debug build ('' when it is not), from every source there is."""
    reasons = []
    if looks_debug(image_id):
        reasons.append(f"{image_id} is named as one")
    if manifest.debug:
        reasons.append("its manifest says debug: true")
    guest = manifest.embedded_guest
    if guest is not None and looks_debug(guest.image_id):
        reasons.append(f"it embeds the debug guest {guest.image_id}")
    return "; ".join(reasons)


# --- merging the folders of several builds ---------------------------------------------


def merge_artifact_folders(
    sources: Sequence[Path], dest: Path, *, allow_debug: bool = False
) -> list[str]:
    """Merge verified artifact folders into `dest` and write one SHA256SUMS over the result.

    CI builds each release on its own runner, so each uploads its own folder
    with its own SHA256SUMS. Every source is verified first; the same file
    name in two sources must have the same content, and debug images are
    refused unless `allow_debug`. `dest` must be empty or missing. The merge
    is made in a temporary folder beside `dest` and renamed into place, so a
    failure (or an interrupt) leaves `dest` as it was. Logs are not merged.
    Returns the merged file names.
    """
    if not sources:
        raise SevimgError("name at least one artifact folder to merge")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SevimgError(f"{dest} exists and is not an empty folder; merge into a new one")
    chosen: dict[str, tuple[str, Path]] = {}
    problems: list[Problem] = []
    debug: list[LocalArtifact] = []
    for source in sources:
        if source.resolve() == dest.resolve():
            raise SevimgError(f"{dest} cannot be both a source and the destination")
        found = load_artifact_folder(source)
        debug += found.debug_images()
        for f in found.files:
            if f.kind == "sums":
                continue
            if f.name in chosen and chosen[f.name][0] != f.sha256:
                problems.append(
                    error(
                        str(f.path),
                        f"differs from {chosen[f.name][1]}; two builds made different {f.name}",
                    )
                )
                continue
            chosen.setdefault(f.name, (f.sha256, f.path))
    if problems:
        raise SevimgError("the artifact folders disagree; nothing merged", problems)
    if not allow_debug:
        refuse_debug(debug, action="merge-artifacts")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.merging-", dir=dest.parent))
    except OSError as exc:
        raise SevimgError(f"cannot merge into {dest}: {exc.strerror or exc}") from None
    try:
        for name, (sha, path) in sorted(chosen.items()):
            target = work / name
            _link_or_copy(path, target)
            # Read back: a source changed since it was verified is not merged.
            if sha256_file(target) != sha:
                raise SevimgError(f"{path} changed while it was being merged; nothing merged")
        write_sha256sums(work, sorted(chosen))
        load_artifact_folder(work)  # the merged folder must verify like any other
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        work.rename(dest)
    except OSError as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise SevimgError(f"cannot merge into {dest}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return sorted(chosen)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link when possible (images are hundreds of MB), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def iter_chunks(path: Path, size: int = _CHUNK) -> Iterator[bytes]:
    """The bytes of a file in chunks, for streaming uploads."""
    with path.open("rb") as handle:
        while chunk := handle.read(size):
            yield chunk
