"""Keeping credentials out of what sevimg_cert prints and records: one redaction.

A KDS mirror or a dispatch URL may carry `user:password@`; every message,
log line and result shows the URL without it. (sevimg has its own
:mod:`sevimg.redact`; this package cannot import sevimg.)
"""

from __future__ import annotations

import urllib.parse


def redact(url: str) -> str:
    """`url` without any user:password part, for messages; an unparsable URL is not shown."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
