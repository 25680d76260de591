"""sevimg's in-image certification code: attestation reports, their verification, reporting.

This package runs inside a host image (under the distribution's python3 and
python3-cryptography), so it imports only the standard library and
`cryptography`, never the rest of sevimg; a test enforces that. The build
machine's `sevimg verify` reuses it.

Attestation: report (parsing a report), verify (checking it, as named checks:
checks, report_checks, policy, chain_checks, and crl for AMD's revocation
lists), certs and roots (AMD's chain and the pinned roots), kds (fetching
certificates and CRLs), attest (the harness's verification of a guest's
report), measure (the expected launch measurement). The host's run (`python3 -m sevimg_cert.harness`): harness (its
flow), hostinfo (the machine and its processor), prereqs (the prerequisite
checks), guestrun (launching and asking the embedded guest), channel (the
guest channel's host side), outputs (the log, result files, summary and the
dispatch hook), guard (the run's deadline, SIGTERM, the fallback result). The result: result (model and JSON), markdown (result.md, the
issue body and the evidence read back), framing (the console step lines and
frame). Reporting: dispatch (the reporter), efi and mdns (finding the
server), after (reboot, power off or stay up); peerhttp (one bounded HTTP
exchange with dispatch or KDS).
"""

__all__ = [
    "after",
    "attest",
    "certs",
    "chain_checks",
    "channel",
    "checks",
    "crl",
    "dispatch",
    "efi",
    "framing",
    "guard",
    "guestrun",
    "harness",
    "hostinfo",
    "kds",
    "markdown",
    "mdns",
    "measure",
    "outputs",
    "peerhttp",
    "policy",
    "prereqs",
    "report",
    "report_checks",
    "result",
    "roots",
    "verify",
]
