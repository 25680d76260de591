"""The resolved image specification: everything a renderer needs, nothing left to interpret.

An :class:`ImageSpec` is built by :mod:`sevimg.catalog.resolve` from a distro file, a
release file and a role, and is immutable from then on. Collections are tuples
(sorted where order carries no meaning) so two specs compare, hash and render
the same whatever order the catalog was read in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["host", "guest"]
ROLES: tuple[Role, ...] = ("guest", "host")  # build order: a host embeds its guest
Status = Literal["supported", "prerelease", "eol"]
Family = Literal["fedora", "el", "debian", "ubuntu"]

GUEST_EMBED_DIR = "/usr/local/lib/guest-image"
GUEST_EMBED_PATH = f"{GUEST_EMBED_DIR}/guest.efi"


@dataclass(frozen=True)
class Versions:
    """Declared upstream versions of the SEV-relevant components (None: not declared)."""

    kernel: str | None = None
    qemu: str | None = None
    ovmf: str | None = None


@dataclass(frozen=True)
class KernelModules:
    """Which kernel modules the image keeps.

    `keep_all` starts from every module (a host) or from none (a guest);
    `exclude` then drops matches and `include` keeps matches whatever
    `exclude` says. Entries are module names (`sev-guest`) or folders below
    the kernel's module tree ending in `/` (`drivers/net/ethernet/`).
    """

    keep_all: bool
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class AptSource:
    """An extra apt repository in deb822 form, optionally pinned to a few packages."""

    name: str
    url: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str
    only_packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class RpmRepo:
    """An extra dnf repository, optionally limited to a few packages.

    `gpgcheck` is False only when the release file says `gpgcheck: false`
    explicitly (a warning, or an error when the repository supplies a component).
    """

    name: str
    baseurl: str
    gpgkey: str | None
    only_packages: tuple[str, ...] = ()
    gpgcheck: bool = True


@dataclass(frozen=True)
class Payload:
    """What sevimg adds to the image besides packages: checks, units, network."""

    modules_load: tuple[str, ...]
    units: tuple[str, ...]
    enable: tuple[str, ...]
    qemu_binary: str | None = None
    sev_firmware: str | None = None
    guest_image: str | None = None  # host: image id of the guest it embeds


@dataclass(frozen=True)
class ImageSpec:
    """One image (one role of one release), fully resolved."""

    image: str  # catalog name: debian-13
    image_id: str  # guest-debian-13
    role: Role
    distro: str
    distro_name: str
    family: Family
    release: str
    codename: str | None
    status: Status
    sources: tuple[str, ...]  # catalog files it came from, release file first
    source_sha256: tuple[str, ...]
    # [Distribution]
    mkosi_distribution: str
    mkosi_release: str
    architecture: str
    repositories: tuple[str, ...]
    repository_key_fetch: bool
    mirror: str | None
    apt_sources: tuple[AptSource, ...]
    apt_replace_default_sources: bool
    rpm_repos: tuple[RpmRepo, ...]
    # [Content]
    packages: tuple[str, ...]
    components: tuple[tuple[str, str], ...]  # (kind, package): kernel, qemu, ovmf, systemd_boot
    kernel_command_line: tuple[str, ...]
    kernel_modules: KernelModules
    remove_files: tuple[str, ...]
    clean_package_metadata: bool
    environment: tuple[tuple[str, str], ...]
    autologin: bool
    payload: Payload
    versions: Versions = field(default_factory=Versions)
    debug: bool = False

    def component(self, kind: str) -> str | None:
        """The package providing `kind` (kernel, qemu, ovmf, systemd_boot), if any."""
        return dict(self.components).get(kind)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `sevimg show --json` and manifests."""
        return asdict(self)
