"""The artifact folder, manifests and checksums, GitHub releases, publish, ci."""
