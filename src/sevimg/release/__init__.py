"""GitHub releases: publish an artifact folder (read with sevimg.artifacts), and the CI workflow."""
