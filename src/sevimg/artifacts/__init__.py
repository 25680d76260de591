"""The artifact folder's format: file names, SHA256SUMS, manifests and their checks."""
