"""sevimg's in-image certification code: attestation reports, their verification, reporting.

This package runs inside a host image (under the distribution's python3 and
python3-cryptography), so it imports only the standard library and
`cryptography`, never the rest of sevimg; a test enforces that. The build
machine's `sevimg verify` reuses it.
"""

__all__ = ["after", "dispatch", "efi", "kds", "mdns", "report", "roots", "verify"]
