"""sevimg: AMD SEV-SNP host and guest image definitions rendered to mkosi."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Looked up on first use: the entry point imports this package before it
    # can handle Ctrl-C, so importing it must cost nothing.
    if name != "__version__":
        raise AttributeError(f"module 'sevimg' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        found = version("sevimg")
    except PackageNotFoundError:  # running from a source tree without installing
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
