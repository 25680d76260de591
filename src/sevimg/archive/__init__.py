"""`sevimg archive`: what a release's real repositories carry, read before anything is built.

fetch (HTTP with a validating cache), compress (gz/xz/zst/bz2), debian (InRelease
checked with gpgv, Packages, Contents), rpmmd (repomd.xml, primary, filelists),
sources (which repositories a spec's build would use), check (packages,
versions, floors, files: pure), report (table, JSON), update (versions written
back into the release files).
"""
