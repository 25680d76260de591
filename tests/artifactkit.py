"""Hand-made artifact folders, written with the same helpers `sevimg build` uses."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from sevimg.artifacts.checksums import write_sha256sums
from sevimg.artifacts.manifest import (
    EmbeddedGuest,
    Manifest,
    Package,
    SourceFile,
    Tool,
    write_manifest,
)

BUILT_AT = datetime(2026, 5, 9, 7, 35, 25, tzinfo=UTC)


def efi_bytes(image_id: str, generation: int = 1, size: int = 4096) -> bytes:
    """Distinctive content for a fake UKI: differs per image and per build generation."""
    seed = f"MZ fake UKI {image_id} generation {generation}\n".encode()
    return (seed * (size // len(seed) + 1))[:size]


def make_folder(
    folder: Path,
    images: Iterable[str] = ("debian-13",),
    *,
    generation: int = 1,
    size: int = 4096,
    guest_only: Iterable[str] = (),
    sums: bool = True,
    debug: bool = False,
    content: Mapping[str, bytes] | None = None,
) -> Path:
    """An artifact folder holding guest and host UKIs of `images`, manifests and SHA256SUMS.

    Releases in `guest_only` get only a guest. `generation` changes the bytes,
    as a rebuild would. `debug` makes the images of a --debug-image build.
    `content` gives the bytes of some images by id (a real UKI, say).
    """
    given = content or {}
    suffix = "-debug" if debug else ""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    single = set(guest_only)
    for image in images:
        distro, _, release = image.partition("-")
        sources = [
            SourceFile(f"images/{image}.yaml", hashlib.sha256(image.encode()).hexdigest()),
            SourceFile(f"images/{distro}.yaml", hashlib.sha256(distro.encode()).hexdigest()),
        ]
        guest_path = folder / f"guest-{image}{suffix}.efi"
        guest_id = f"guest-{image}{suffix}"
        guest_path.write_bytes(given.get(guest_id) or efi_bytes(guest_id, generation, size))
        (folder / "logs" / f"guest-{image}.log").write_text("mkosi said things\n")
        guest = Manifest.for_artifact(
            guest_path,
            distro=distro,
            release=release,
            sources=sources,
            mkosi_version="25.3",
            tools={"snpguest": Tool("0.9.1", "a" * 64), "snphost": None},
            packages=[Package("linux-image-amd64", "6.12.117-1"), Package("systemd", "257.9-1")],
            embedded_guest=None,
            built_at=BUILT_AT,
            debug=debug,
        )
        write_manifest(folder, guest)
        if image in single:
            continue
        host_path = folder / f"host-{image}{suffix}.efi"
        host_id = f"host-{image}{suffix}"
        host_path.write_bytes(given.get(host_id) or efi_bytes(host_id, generation, size))
        host = Manifest.for_artifact(
            host_path,
            distro=distro,
            release=release,
            sources=sources,
            mkosi_version="25.3",
            tools={"snphost": Tool("0.7.0", "b" * 64), "beacon": Tool("1.2.0", "c" * 64)},
            packages=[Package("qemu-system-x86", "1:10.0.3+ds-1")],
            embedded_guest=EmbeddedGuest(f"guest-{image}{suffix}", guest.sha256),
            built_at=BUILT_AT,
            debug=debug,
        )
        write_manifest(folder, host)
    if sums:
        write_sha256sums(folder)
    return folder
