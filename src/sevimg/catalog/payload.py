"""What sevimg puts into every image besides the distribution's packages.

These are the constants the resolver draws on and the policy checks against:
the kernel modules each role needs, the units it runs, what a slim guest
drops. Keeping them in one place means a check cannot drift from what is
rendered.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from sevimg.catalog.spec import KernelModules, Role

# Modules a guest cannot do without, with their path below the kernel's
# module tree (needed to judge folder rules). `msr` and `sev-guest` are also
# loaded at boot; loading sev-guest loads the TSM report module and configfs
# it depends on (configfs-tsm, /sys/kernel/config/tsm/report).
GUEST_REQUIRED_MODULES: Mapping[str, str] = {
    "msr": "arch/x86/kernel/msr",
    "sev-guest": "drivers/virt/coco/sev-guest/sev-guest",
    "configfs": "fs/configfs/configfs",
    "virtio_net": "drivers/net/virtio_net",
    "virtio_pci": "drivers/virtio/virtio_pci",
    "virtio_console": "drivers/char/virtio_console",
    "vsock": "net/vmw_vsock/vsock",
    "vmw_vsock_virtio_transport": "net/vmw_vsock/vmw_vsock_virtio_transport",
}
GUEST_MODULES_LOAD: tuple[str, ...] = ("msr", "sev-guest")
# The TSM report module (configfs-tsm) moved and was renamed between kernels:
# drivers/virt/coco/tsm.ko up to 6.x, drivers/virt/coco/guest/tsm_report.ko
# after. A guest needs one of them, as a file or built in.
GUEST_TSM_REPORT_MODULES: Mapping[str, str] = {
    "tsm_report": "drivers/virt/coco/guest/tsm_report",
    "tsm": "drivers/virt/coco/tsm",
}
# What the attestation responder reports to the host, one entry per module;
# "a|b" names a module by each name it has had (the first the kernel knows wins).
GUEST_ATTEST_MODULES: tuple[str, ...] = (
    "sev-guest",
    "|".join(GUEST_TSM_REPORT_MODULES),
    "configfs",
    "msr",
)

# Modules a host cannot run SEV-SNP guests without: KVM and its AMD part, the
# CCP driver that carries the PSP/SEV firmware interface (/dev/sev, SNP_INIT),
# and msr for reading the SEV capability MSRs.
HOST_REQUIRED_MODULES: Mapping[str, str] = {
    "kvm": "arch/x86/kvm/kvm",
    "kvm-amd": "arch/x86/kvm/kvm-amd",
    "ccp": "drivers/crypto/ccp/ccp",
    "msr": "arch/x86/kernel/msr",
}
# A host is booted over the network and reports over it: the NIC drivers of
# the servers SEV-SNP runs on (and QEMU's, for the lab under QEMU) must stay.
HOST_NIC_MODULES: Mapping[str, str] = {
    "e1000e": "drivers/net/ethernet/intel/e1000e/e1000e",
    "igb": "drivers/net/ethernet/intel/igb/igb",
    "ixgbe": "drivers/net/ethernet/intel/ixgbe/ixgbe",
    "i40e": "drivers/net/ethernet/intel/i40e/i40e",
    "ice": "drivers/net/ethernet/intel/ice/ice",
    "bnxt_en": "drivers/net/ethernet/broadcom/bnxt/bnxt_en",
    "tg3": "drivers/net/ethernet/broadcom/tg3",
    "mlx5_core": "drivers/net/ethernet/mellanox/mlx5/core/mlx5_core",
    "r8169": "drivers/net/ethernet/realtek/r8169",
    "virtio_net": "drivers/net/virtio_net",
}
REQUIRED_MODULES: Mapping[Role, Mapping[str, str]] = {
    "guest": GUEST_REQUIRED_MODULES,
    "host": {**HOST_REQUIRED_MODULES, **HOST_NIC_MODULES},
}

# A guest keeps only these (and what they depend on): virtio, vsock and the
# confidential-computing drivers. Everything else is launch time and memory.
GUEST_MODULES = KernelModules(
    keep_all=False,
    include=(
        "drivers/virtio/",
        "drivers/virt/coco/",
        "net/vmw_vsock/",
        "msr",
        "sev-guest",
        "virtio_blk",
        "virtio_console",
        "virtio_net",
        "virtio-rng",
        "efivarfs",
        "configfs",
    ),
)

# A host is bare metal: it keeps every NIC and storage driver, and drops the
# large families a headless SEV host never loads.
HOST_MODULES = KernelModules(
    keep_all=True,
    # The host runs from memory (HTTP boot): no local disks, RAID or server
    # file systems; what an included module needs comes back as a dependency.
    exclude=(
        "drivers/accel/",
        "drivers/bluetooth/",
        "drivers/comedi/",
        "drivers/gpu/",
        "drivers/hwmon/",
        "drivers/iio/",
        "drivers/infiniband/",
        "drivers/input/joystick/",
        "drivers/input/touchscreen/",
        "drivers/isdn/",
        "drivers/md/",
        "drivers/media/",
        "drivers/mmc/",
        "drivers/mtd/",
        "drivers/net/can/",
        "drivers/net/hamradio/",
        "drivers/net/wireless/",
        "drivers/nvme/target/",
        "drivers/scsi/",
        "drivers/staging/",
        "drivers/target/",
        "drivers/usb/gadget/",
        "drivers/usb/serial/",
        "fs/btrfs/",
        "fs/ceph/",
        "fs/f2fs/",
        "fs/gfs2/",
        "fs/nfs/",
        "fs/nfsd/",
        "fs/ocfs2/",
        "fs/smb/",
        "fs/xfs/",
        "net/bluetooth/",
        "net/can/",
        "net/ceph/",
        "net/mac80211/",
        "net/wireless/",
        "sound/",
    ),
)

DEFAULT_MODULES: Mapping[Role, KernelModules] = {"guest": GUEST_MODULES, "host": HOST_MODULES}

# Files a guest never uses: the kernel's second copy (the UKI carries it in
# its .linux section), docs, translations, the hardware database, perl (only
# package scripts need it) and package-manager caches. Removed after packages
# are installed and the UKI's kernel is saved. Paths that depend on the
# packaging layout (multiarch libraries, debconf) are in the family files
# (images/families/*.yaml, remove_files); a glob that matches nothing is harmless.
EVERY_IMAGE_REMOVES: tuple[str, ...] = (
    "/usr/lib/modules/*/vmlinuz",
    "/usr/share/doc",
    "/usr/share/info",
    "/usr/share/man",
    # Package scripts' logs (update-alternatives, dpkg) carry the build time.
    "/var/log/*.log",
)
_GUEST_REMOVES: tuple[str, ...] = (
    "/boot/*",
    "/etc/udev/hwdb.bin",
    "/usr/bin/perl*",
    "/usr/lib/locale",
    "/usr/lib/udev/hwdb.bin",
    "/usr/lib/udev/hwdb.d",
    "/usr/share/bash-completion",
    "/usr/share/locale",
    "/usr/share/perl5",
    "/usr/share/zoneinfo",
    "/var/cache/ldconfig",
    "/var/lib/systemd/catalog",
    # The kernel package's initramfs generator (the UKI's initrd is mkosi's):
    # initramfs-tools, or dracut with its units and kernel-install hooks; the
    # text copies of the module indexes (kmod reads the .bin ones) and the
    # kernel's build configuration.
    "/etc/dracut.conf",
    "/etc/kernel/postinst.d/dracut",
    "/etc/kernel/postrm.d/dracut",
    "/etc/systemd/system/dracut-*",
    "/usr/bin/3cpio",
    "/usr/bin/dracut*",
    "/usr/bin/lsinitrd",
    "/usr/lib/dracut",
    "/usr/lib/kernel/install.d/*dracut*",
    "/usr/lib/klibc",
    "/usr/lib/modules/*/config",
    "/usr/lib/modules/*/modules.alias",
    "/usr/lib/modules/*/modules.symbols",
    "/usr/lib/systemd/system/*.wants/dracut-*",
    "/usr/lib/systemd/system/dracut-*",
    "/usr/sbin/update-initramfs",
    "/usr/share/initramfs-tools",
    # ext2/3/4 tools and their scrub units: a guest runs from memory and has
    # no disk to make, check or scrub (the libraries' paths are the family's).
    "/etc/cron.d/e2scrub_all",
    "/etc/systemd/system/*.wants/e2scrub*",
    "/usr/lib/systemd/system/e2scrub*",
    "/usr/bin/chattr",
    "/usr/bin/lsattr",
    "/usr/lib/udev/rules.d/*e2scrub*",
    "/usr/libexec/e2fsprogs",
    "/usr/sbin/badblocks",
    "/usr/sbin/debugfs",
    "/usr/sbin/dumpe2fs",
    "/usr/sbin/e2*",
    "/usr/sbin/e4*",
    "/usr/sbin/filefrag",
    "/usr/sbin/fsck.ext*",
    "/usr/sbin/logsave",
    "/usr/sbin/mke2fs",
    "/usr/sbin/mkfs.ext*",
    "/usr/sbin/mklost+found",
    "/usr/sbin/resize2fs",
    "/usr/sbin/tune2fs",
    # The UKI is booted directly: the boot loader copies are never run (mkosi
    # keeps its own copy of the stub before it removes files).
    "/efi/EFI",
    "/efi/loader",
    "/usr/lib/systemd/boot/efi",
    # The dynamic linker's cache is built when packages are installed; its
    # builder only runs from ldconfig.service, which a guest masks.
    "/usr/sbin/ldconfig",
)
# A host keeps the hardware database (bare metal) and character sets, and
# drops the other architectures' emulators and firmware that QEMU's x86
# package and its data bring along.
_HOST_REMOVES: tuple[str, ...] = (
    "/boot/*",
    "/usr/bin/perl*",
    "/usr/bin/qemu-system-i386",
    "/usr/bin/qemu-system-x86_64-microvm",
    # Bytecode compiled at package install is not reproducible (marshal's
    # reference flags follow reference counts): Python compiles on import.
    "/usr/lib/python3*/**/__pycache__",
    "/var/cache/ldconfig",
    "/usr/lib/udev/hwdb.d",
    "/usr/share/locale",
    "/usr/share/perl5",
    "/usr/share/qemu/hppa-firmware*",
    "/usr/share/qemu/openbios-*",
    "/usr/share/qemu/opensbi-*",
    "/usr/share/qemu/palcode-*",
    "/usr/share/qemu/s390-*",
    "/usr/share/qemu/skiboot.lid",
    "/usr/share/qemu/slof.bin",
    "/usr/share/qemu/u-boot*",
)
# zstd level of the UKI's initrd (mkosi's CompressLevel=; it defaults to 3).
# A guest's initrd is small and compresses well: 19 takes a fifth off it and
# decompresses as fast. A host's is mostly compressed already (xz modules,
# the guest UKI): a higher level would cost minutes and save little.
COMPRESS_LEVEL: Mapping[Role, int] = {"guest": 19, "host": 3}

# SourceDateEpoch= when the catalog records none (2025-01-01T00:00:00Z): mkosi
# clamps every file's modification time to it, so two builds of the same inputs
# give the same initrd. A release or its distribution file may set its own.
DEFAULT_SOURCE_DATE_EPOCH = 1735689600

# Seed= is a UUID derived from the image id in this namespace: the same image
# gets the same seed on every machine, two images never share one.
SEED_NAMESPACE = uuid.UUID("5e71a9c0-19d4-4b0e-9a52-5e7139c0ffee")


def source_date_epoch(*recorded: int | None) -> int:
    """The first recorded epoch (the release's, then its distribution's), else sevimg's default."""
    return next((r for r in recorded if r is not None), DEFAULT_SOURCE_DATE_EPOCH)


def seed(image_id: str) -> str:
    """mkosi's Seed= for an image: the same on every machine, never shared by two images."""
    return str(uuid.uuid5(SEED_NAMESPACE, image_id))


REMOVE_FILES: Mapping[Role, tuple[str, ...]] = {
    "guest": (*EVERY_IMAGE_REMOVES, *_GUEST_REMOVES),
    "host": (*EVERY_IMAGE_REMOVES, *_HOST_REMOVES),
}

# Every image boots unattended: without this, systemd-firstboot stops the boot
# at "Please configure your system! Press any key" on the console.
KERNEL_COMMAND_LINE: tuple[str, ...] = ("systemd.firstboot=off",)
# Put before the catalog's tokens (so a release can remove them). A guest's
# console is a serial port that QEMU emulates: every kernel message and
# systemd status line written to it costs boot time under TCG. With `quiet`
# failures are still shown (systemd's status becomes "auto"), dmesg and the
# journal keep everything, and the payload's own lines go to the console.
# A debug image keeps the full console.
DEFAULT_KERNEL_COMMAND_LINE: Mapping[Role, tuple[str, ...]] = {"guest": ("quiet",), "host": ()}

# Rendered units. The attestation responder is started by udev when the
# host's port appears, not at boot: it is in UNITS, not in ENABLE.
UNITS: Mapping[Role, tuple[str, ...]] = {
    "guest": ("sevimg-attest-responder.service", "sevimg-guest-check.service"),
    "host": ("sevimg-host-check.service",),
}
# Units a guest masks (an empty file in /etc/systemd/system): systemd's own
# names, the same in every distribution; a name an image lacks masks nothing.
# The guest runs from its initrd on one vCPU, under TCG when there is no KVM:
# each unit is a process that delays the readiness marker, and these do
# nothing for a RAM-only guest that is booted once and attests:
GUEST_MASKED_UNITS: tuple[str, ...] = (
    # caches and databases rebuilt at boot, whose sources were removed
    # (hwdb, the journal catalog) or that the build made already (ld.so.cache,
    # system users); update-done only records that they ran
    "ldconfig.service",
    "systemd-hwdb-update.service",
    "systemd-journal-catalog-update.service",
    "systemd-sysusers.service",
    "systemd-update-done.service",
    # state kept across boots, and a guest has no disk: the journal stays in
    # /run, no random seed file is loaded or saved (the kernel seeds itself
    # from RDRAND/EFI), the machine id is never committed
    "systemd-journal-flush.service",
    "systemd-machine-id-commit.service",
    "systemd-networkd-persistent-storage.service",
    "systemd-random-seed.service",
    # file systems and modules nothing in a guest uses (the debug and
    # tracing mounts are better absent from a confidential guest anyway)
    "dev-hugepages.mount",
    "dev-mqueue.mount",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "sys-fs-fuse-connections.mount",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "systemd-pstore.service",
    "systemd-remount-fs.service",
    # static device nodes for modules loaded on first use (kmod's list, which
    # a guest's few modules leave empty) and their permissions: devtmpfs
    # makes the nodes of the devices a guest has, root-only until udev runs
    "systemd-tmpfiles-setup-dev-early.service",
    "systemd-tmpfiles-setup-dev.service",
    # configuration from the kernel command line or credentials, which a
    # guest's measured command line does not carry, and first-boot questions
    "systemd-firstboot.service",
    "systemd-network-generator.service",
    "systemd-udev-load-credentials.service",
    # periodic maintenance of disks a guest does not have
    "fstrim.timer",
)
# Login prompts: a published guest has no password and no shell to offer, so
# its gettys are only boot time (and a prompt an attacker on the console
# could probe). A debug image keeps them: it logs in on the console.
GUEST_LOGIN_UNITS: tuple[str, ...] = (
    "getty.target",
    "getty@.service",
    "serial-getty@.service",
    "systemd-user-sessions.service",
)

ENABLE: Mapping[Role, tuple[str, ...]] = {
    "guest": ("sevimg-guest-check.service", "systemd-networkd.service"),
    "host": (
        "avahi-daemon.service",
        "sevimg-host-check.service",
        "systemd-networkd.service",
        "systemd-resolved.service",
    ),
}

# What the payload needs installed, per role: the family file
# (images/families/*.yaml, payload:) names the package for each need.
NEEDS: Mapping[Role, tuple[str, ...]] = {
    "guest": ("systemd", "udev", "systemd-networkd"),
    "host": (
        "systemd",
        "udev",
        "systemd-networkd",
        "systemd-resolved",
        "journal-remote",
        "avahi",
        "python3",
        # The certification harness (sevimg_cert) verifies reports with it.
        "python3-cryptography",
        "jq",
        "openssl",
    ),
}

# A host records the installed version of the packages behind these (the
# role's components, then payload needs) at build time, before mkosi drops
# the package database: the harness checks the floors against them.
RECORDED_COMPONENTS: tuple[str, ...] = ("kernel", "qemu", "ovmf")
RECORDED_NEEDS: tuple[str, ...] = ("systemd",)


def module_name(name: str) -> str:
    """The kernel's name for a module: '-' and '_' are the same (kvm-amd is kvm_amd)."""
    return name.replace("-", "_")


def module_kept(rules: KernelModules, path: str) -> bool:
    """Whether a module at `path` (below the module tree, no .ko) survives `rules`.

    Mirrors mkosi: an include beats an exclude; without `keep_all` only
    included modules stay. Where mkosi versions differ, the answer is the
    one that keeps less: mkosi 26+ reads kvm_amd as kvm-amd and a folder
    starting with kernel/ from the top of /usr/lib/modules/<version>/, so
    such excludes drop a module, while includes count only as written.
    """
    name = path.rsplit("/", 1)[-1]

    def included(entry: str) -> bool:
        if entry.endswith("/"):  # folders are anchored at the top of the module tree
            return path.startswith(entry)
        return name == entry  # mkosi 25 matches the file's name as it is (kvm-amd)

    def excluded(entry: str) -> bool:
        if entry.endswith("/"):
            return path.startswith(entry) or f"kernel/{path}".startswith(entry)
        return module_name(name) == module_name(entry)

    if any(included(e) for e in rules.include):
        return True
    if any(excluded(e) for e in rules.exclude):
        return False
    return rules.keep_all
