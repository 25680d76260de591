"""sevimg: AMD SEV-SNP host and guest image definitions rendered to mkosi."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sevimg")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"
