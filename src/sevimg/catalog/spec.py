"""The resolved image specification: everything a renderer needs, nothing left to interpret.

An :class:`ImageSpec` is built by :mod:`sevimg.catalog.resolve` from a distro file, a
release file and a role, and is immutable from then on. Collections are tuples
(sorted where order carries no meaning) so two specs compare, hash and render
the same whatever order the catalog was read in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Role = Literal["host", "guest"]
ROLES: tuple[Role, ...] = ("guest", "host")  # build order: a host embeds its guest
Status = Literal["supported", "prerelease", "eol"]
PackageManager = Literal["apt", "rpm"]
Family = str  # a family file's name: images/families/<family>.yaml

GUEST_EMBED_DIR = "/usr/local/lib/guest-image"
GUEST_EMBED_PATH = f"{GUEST_EMBED_DIR}/guest.efi"


@dataclass(frozen=True)
class FamilyFacts:
    """What images/families/<family>.yaml says beyond role defaults, decoded once."""

    name: Family
    package_manager: PackageManager
    payload: tuple[tuple[str, str], ...]  # need → package
    # argv printing an installed package's version (the package name appended)
    package_version_query: tuple[str, ...]
    sev_firmware: tuple[str, ...]
    plain_ovmf: tuple[str, ...]
    qemu_binaries: tuple[str, ...]
    sev_kernel_hashes: bool = True
    remove_files: tuple[tuple[Role, tuple[str, ...]], ...] = ()
    apt_keyring: str | None = None
    apt_security_suffix: str | None = None
    apt_suites_without_pockets: tuple[str, ...] = ()
    apt_debug_probe: str | None = None
    # installed into a tools tree of this family besides mkosi-tools (keyrings)
    apt_tools_tree_packages: tuple[str, ...] = ()
    mirror_probe: str | None = None
    pretty_name: str = ""

    @property
    def is_apt(self) -> bool:
        """Whether the family's releases take apt sources (else rpm repositories)."""
        return self.package_manager == "apt"

    def package(self, need: str) -> str:
        """The package providing one payload need."""
        return dict(self.payload)[need]

    def removes(self, role: Role) -> tuple[str, ...]:
        """Layout-specific files a slim `role` image drops."""
        return dict(self.remove_files).get(role, ())


def decode_family(data: Mapping[str, Any]) -> FamilyFacts:
    """A family document that passed its schema, as a typed record."""
    apt = data.get("apt") or {}
    firmware = data["firmware"]
    removes = data.get("remove_files") or {}
    return FamilyFacts(
        name=data["family"],
        package_manager=data["package_manager"],
        payload=tuple(sorted(data["payload"].items())),
        package_version_query=tuple(data["package_version_query"]),
        sev_firmware=tuple(firmware["sev"]),
        plain_ovmf=tuple(firmware["plain"]),
        qemu_binaries=tuple(data["qemu_binaries"]),
        sev_kernel_hashes=bool(firmware.get("sev_kernel_hashes", True)),
        remove_files=tuple((role, tuple(removes[role])) for role in ROLES if role in removes),
        apt_keyring=apt.get("keyring"),
        apt_security_suffix=apt.get("security_suffix"),
        apt_suites_without_pockets=tuple(apt.get("suites_without_pockets") or ()),
        apt_debug_probe=apt.get("debug_probe"),
        apt_tools_tree_packages=tuple(apt.get("tools_tree_packages") or ()),
        pretty_name=data["name"],
        mirror_probe=data.get("mirror_probe"),
    )


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
    # host: (kind, package) whose installed versions the build records, and
    # the family's argv that reads one (see images/families/*.yaml)
    recorded_packages: tuple[tuple[str, str], ...] = ()
    package_version_query: tuple[str, ...] = ()
    # guest: units masked (empty files in /etc/systemd/system) to shorten the boot
    masked_units: tuple[str, ...] = ()
    # guest: an empty /etc/machine-id (see sevimg.render.trees)
    transient_machine_id: bool = False


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
    # Reproducibility: mkosi's SourceDateEpoch= (file times are clamped to it)
    # and Seed= (the UUIDs it derives), both functions of the catalog.
    source_date_epoch: int = 0
    seed: str = ""
    # The artifact's size budget in MB (10**6 bytes), from the catalog; None: none.
    size_budget_mb: float | None = None
    compress_level: int = 3  # zstd level of the UKI's initrd (mkosi's CompressLevel=)
    # Packages apt must never install (pinned to -1 in the build's sandbox).
    excluded_packages: tuple[str, ...] = ()

    def component(self, kind: str) -> str | None:
        """The package providing `kind` (kernel, qemu, ovmf, systemd_boot), if any."""
        return dict(self.components).get(kind)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `sevimg show --json` and manifests."""
        return asdict(self)
