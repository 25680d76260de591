"""The QEMU command lines that launch a guest UKI.

One definition serves both `sevimg run` on a workstation and the host
image's own check script (rendered with shell variables in place of the
values only the host knows), so the two can never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_MEMORY_MB = 2048  # an SNP guest with a UKI initrd does not come up in less
DEFAULT_CBITPOS = 51  # AMD EPYC (Milan, Genoa, Turin); the host reads CPUID when it can
READY_MARKER = "SEVIMG-GUEST-READY"
# The host↔guest attestation channel: a virtio-serial port with this name,
# /dev/virtio-ports/<name> in the guest, a unix socket on the host.
ATTEST_PORT = "org.sevimg.attest"
# An SEV guest's kernel refuses virtio devices that do not offer
# VIRTIO_F_ACCESS_PLATFORM; these say so explicitly on every QEMU, whatever
# its machine type's defaults.
VIRTIO_SEV_OPTIONS = "iommu_platform=on,disable-legacy=on"


@dataclass(frozen=True)
class Launch:
    """What a launch needs; strings so that a host script can pass shell expressions."""

    qemu: str
    firmware: str
    kernel: str
    memory_mb: str = str(MIN_MEMORY_MB)
    cbitpos: str = str(DEFAULT_CBITPOS)


def snp_command(launch: Launch) -> list[str]:
    """argv for an SEV-SNP launch, as in AMD's SEV getting-started guide."""
    return [
        launch.qemu,
        "-enable-kvm",
        "-machine", "q35",  # RHEL-likes dropped i440fx; q35 everywhere
        "-cpu", "EPYC-v4",
        "-machine", "memory-encryption=sev0",
        "-monitor", "none",
        "-display", "none",
        "-object", f"memory-backend-memfd,id=ram1,size={launch.memory_mb}M",
        "-machine", "memory-backend=ram1",
        "-object", f"sev-snp-guest,id=sev0,cbitpos={launch.cbitpos},reduced-phys-bits=1,kernel-hashes=on",
        "-bios", launch.firmware,
        "-kernel", launch.kernel,
    ]  # fmt: skip


def channel_args(socket_path: str) -> list[str]:
    """QEMU arguments for the attestation channel: a virtio-serial port on a unix socket.

    QEMU listens on `socket_path` (server=on) without waiting for a client
    (wait=off), so the guest boots whether or not the host side has
    connected yet. Works the same under SNP, KVM and TCG.
    """
    if "," in socket_path:
        # QEMU splits option values at commas: a path with one would change the option.
        raise ValueError(f"a QEMU socket path cannot contain a comma: {socket_path!r}")
    return [
        "-device", f"virtio-serial-pci,id=sevimg-serial,{VIRTIO_SEV_OPTIONS}",
        "-chardev", f"socket,id=sevimg-attest,path={socket_path},server=on,wait=off",
        "-device", f"virtserialport,bus=sevimg-serial.0,chardev=sevimg-attest,name={ATTEST_PORT}",
    ]  # fmt: skip


def device_unit(path: str) -> str:
    """The systemd device unit for a /dev path, escaped as `systemd-escape --path` does."""
    text = "/".join(p for p in path.split("/") if p)
    out = ""
    for i, char in enumerate(text):
        if char == "/":
            out += "-"
        elif char.isascii() and (char.isalnum() or char in ":_" or (char == "." and i > 0)):
            out += char  # only a leading dot is escaped (it would hide the unit)
        else:
            out += "".join(f"\\x{b:02x}" for b in char.encode())
    return out + ".device"
