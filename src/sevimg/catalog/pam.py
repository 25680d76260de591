"""Whether a console login needs a password: the image's PAM `auth` stack, run as Linux-PAM runs it.

A getty on the serial console starts login(1), which asks PAM's `login`
service (or `other`, when `login` has no `auth` lines). Accounts are locked
in a published image, so that stack must fail for someone who knows no
password. A stack where `pam_permit.so` is `sufficient`, or where a jump
skips `pam_deny.so`, lets anyone in as root, with every password locked.

The stack is read as libpam reads it (``libpam/pam_handlers.c``): the
folders /etc/pam.d, /usr/lib/pam.d and /usr/etc/pam.d in that order, `#`
comments, lines continued by a backslash, case-insensitive types and
controls, `include`, `substack` and Debian's `@include`, bracketed controls
whose unnamed values are `bad`. It is then walked as libpam walks it
(``libpam/pam_dispatch.c``: impressions, `done`, `die`, jumps, `reset`,
substacks) with each module's answer to an unknown person at the console:
the modules below succeed because they check no credential, every other
module fails (`auth_err`) — pam_unix with a locked password does.

Pure functions over a file lookup.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from sevimg.catalog.security import Finding

FOLDERS = ("etc/pam.d", "usr/lib/pam.d", "usr/etc/pam.d")
SERVICE = "login"
FALLBACK = "other"
MAX_LEVEL = 16  # libpam's PAM_SUBSTACK_MAX_LEVEL: deeper includes fail
MAX_LINES = 4096  # a file that includes itself many times over would take for ever to walk

# Succeed for anyone: they let in (pam_rootok: login runs as root).
GRANTING = frozenset({"pam_permit", "pam_rootok"})
# Succeed for anyone too, but check no credential: harmless unless a stack relies on them alone.
PASSIVE = frozenset(
    {
        "pam_access", "pam_cap", "pam_echo", "pam_env", "pam_faildelay", "pam_faillock",
        "pam_gnome_keyring", "pam_group", "pam_issue", "pam_keyinit", "pam_kwallet",
        "pam_kwallet5", "pam_lastlog", "pam_lastlog2", "pam_limits", "pam_localuser",
        "pam_loginuid", "pam_mail", "pam_motd", "pam_namespace", "pam_nologin",
        "pam_securetty", "pam_selinux", "pam_shells", "pam_systemd", "pam_tally",
        "pam_tally2", "pam_time", "pam_umask", "pam_usertype", "pam_warn", "pam_xauth",
    }
)  # fmt: skip
_SIMPLE = {  # libpam's meaning of the four words, as bracketed controls
    "required": {"success": "ok", "new_authtok_reqd": "ok", "ignore": "ignore", "default": "bad"},
    "requisite": {"success": "ok", "new_authtok_reqd": "ok", "ignore": "ignore", "default": "die"},
    "optional": {"success": "ok", "new_authtok_reqd": "ok", "default": "ignore"},
    "sufficient": {"success": "done", "new_authtok_reqd": "done", "default": "ignore"},
}
_ACTIONS = frozenset({"ignore", "bad", "die", "ok", "done", "reset"})
_BAD = {"default": "bad"}
_OTHER_TYPES = frozenset({"account", "session", "password"})
# libpam's words: split on space, tab and newline only; "[…]" is one word (\] inside it).
_TOKEN = re.compile(r"\[(?:[^\]\\]|\\.)*\]?|[^ \t\n]+")


class Readable(Protocol):
    """A file of the image (uki.Member and the guard's tree files satisfy it)."""

    @property
    def data(self) -> bytes: ...


@dataclass(frozen=True)
class Handler:
    """One module line of the stack, or the start of a substack (`module` empty)."""

    level: int
    where: str  # /etc/pam.d/common-auth:17
    module: str = ""  # pam_unix, without folder or .so
    actions: dict[str, str] = field(default_factory=dict)
    must_fail: bool = False  # libpam keeps a broken line and fails it


def console_login(resolve: Callable[[str], Readable | None]) -> list[Finding]:
    """A finding when the console's login stack lets in someone who knows no password."""
    stack, where = _stack(resolve, SERVICE)
    if not stack:
        stack, where = _stack(resolve, FALLBACK)
    if len(stack) > MAX_LINES:
        return [Finding(where, f"its auth stack has over {MAX_LINES} lines: too many to judge")]
    grantors = _grantors(stack)
    if grantors is None:
        return []
    # name the modules that let in (pam_permit), not the pam_env that merely went along
    shown = [h for h in grantors if h.module in GRANTING] or grantors
    granted = ", ".join(f"{h.where} {h.module}.so" for h in shown)
    return [
        Finding(
            where,
            "its auth stack lets anyone log in at the console without a password "
            f"(granted by {granted})",
        )
    ]


def _find(resolve: Callable[[str], Readable | None], name: str) -> tuple[str, Readable] | None:
    """The file libpam opens for `name`: an absolute path, or the first folder that has it."""
    wanted = [name] if name.startswith("/") else [f"/{d}/{name}" for d in FOLDERS]
    for path in (posixpath.normpath(w).lstrip("/") for w in wanted):
        if (found := resolve(path)) is not None:
            return f"/{path}", found
    return None


def _stack(resolve: Callable[[str], Readable | None], service: str) -> tuple[list[Handler], str]:
    found = _find(resolve, service)
    if found is None:
        return [], ""
    return list(itertools.islice(_load(resolve, found, 0, 0), MAX_LINES + 1)), found[0]


def _lines(data: bytes) -> Iterator[tuple[int, str]]:
    """Logical lines as libpam assembles them; an empty one for a line the file cuts short.

    A backslash at the end (before spaces and tabs) joins the next line,
    unless the line has a `#`: the comment ends it. Only spaces, tabs and
    newlines separate; a carriage return stays part of its word.
    """
    pending: str | None = None
    start = 0
    for number, raw in enumerate(data.decode(errors="replace").split("\n"), 1):
        if pending is None:
            start, pending = number, ""
        body = raw.rstrip(" \t")
        joined = body.endswith("\\") and "#" not in raw
        text = (body[:-1] + " " if joined else raw).lstrip(" \t").split("#", 1)[0]
        pending += text
        if joined:
            continue
        if pending.strip(" \t"):
            yield start, pending
        pending = None
    if pending is not None and pending.strip(" \t"):
        yield start, ""  # libpam: an incomplete last line is an error reading the file


def _load(
    resolve: Callable[[str], Readable | None], file: tuple[str, Readable], include: int, level: int
) -> Iterator[Handler]:
    path, member = file
    for number, line in _lines(member.data):
        where = f"{path}:{number}"
        tokens = _TOKEN.findall(line)
        if not tokens:
            yield Handler(level, where, "(an unreadable file)", _BAD, must_fail=True)
            continue
        if tokens[0] == "@include":  # Debian: the whole file, each line of our type
            yield from _include(resolve, tokens[1:], include, level, where)
            continue
        kind = tokens[0].removeprefix("-").lower()
        if kind in _OTHER_TYPES:
            continue
        control = tokens[1] if len(tokens) > 1 else ""
        if kind != "auth":  # libpam: a line of no known type is an auth line that fails
            yield Handler(level, where, "(a line of no type)", _actions(control) or _BAD, True)
        elif control.lower() == "include":
            yield from _include(resolve, tokens[2:], include, level, where)
        elif control.lower() == "substack":
            yield Handler(level, where)
            yield from _include(resolve, tokens[2:], include, level + 1, where)
        elif (actions := _actions(control)) is None:
            yield Handler(level, where, "(a line without a control)", _BAD, must_fail=True)
        elif len(tokens) < 3:
            yield Handler(level, where, "(a line without a module)", actions, must_fail=True)
        else:
            module = tokens[2].rsplit("/", 1)[-1].removesuffix(".so")
            yield Handler(level, where, module, actions)


def _include(
    resolve: Callable[[str], Readable | None],
    names: list[str],
    include: int,
    level: int,
    where: str,
) -> Iterator[Handler]:
    found = _find(resolve, names[0]) if names and include + 1 < MAX_LEVEL else None
    if found is None:  # libpam: an include that cannot be read is a line that fails
        yield Handler(level, where, "(a missing include)", _BAD, must_fail=True)
    else:
        yield from _load(resolve, found, include + 1, level)


def _actions(control: str) -> dict[str, str] | None:
    if control.lower() in _SIMPLE:
        return _SIMPLE[control.lower()]
    if not (control.startswith("[") and control.endswith("]")):
        return None
    actions: dict[str, str] = {}
    for pair in control[1:-1].split():
        value, _, action = pair.partition("=")
        if action not in _ACTIONS and not (action.isascii() and action.isdigit()):
            return None
        actions.setdefault(value, action)
    actions.setdefault("default", "bad")  # libpam: what a bracket leaves out is a failure
    return actions


def _answer(handler: Handler) -> str:
    if handler.must_fail:
        return "perm_denied"
    return "success" if handler.module in GRANTING | PASSIVE else "auth_err"


def _grantors(stack: list[Handler]) -> list[Handler] | None:
    """Walk the stack as _pam_dispatch_aux does; the modules that granted, None when it fails."""
    impression, status = 0, "fail"  # _PAM_UNDEF, PAM_MUST_FAIL_CODE
    saved: dict[int, tuple[int, str]] = {}
    granted: list[Handler] = []
    previous, i = 0, 0
    while i < len(stack):
        handler, level = stack[i], stack[i].level
        if previous < level:
            saved[level] = (impression, status)
        previous = level
        if not handler.module:  # a substack's start runs nothing
            i += 1
            continue
        answer = _answer(handler)
        action = handler.actions.get(answer, handler.actions["default"])
        decided = False
        if action == "reset":
            impression, status = saved.get(level, (0, "fail"))
        elif action in ("ok", "done"):
            if impression == 0 or (impression > 0 and status == "success"):
                impression, status = 1, answer
            if impression > 0:
                if answer == "success":
                    granted.append(handler)
                decided = action == "done"
        elif action in ("bad", "die"):
            if impression >= 0:
                impression, status = -1, answer
            decided = action == "die"
        elif action != "ignore":  # a jump over that many lines of this level
            skip = int(action)
            while i + 1 < len(stack) and stack[i + 1].level >= level and skip > 0:
                i += 1
                while i + 1 < len(stack) and stack[i + 1].level > level:
                    i += 1
                skip -= 1
            if skip:  # libpam: a jump past the end fails the stack
                impression, status = -1, "fail"
        if decided:  # the rest of this level is skipped
            while i + 1 < len(stack) and stack[i + 1].level >= level:
                i += 1
        i += 1
    return granted if impression > 0 and status == "success" else None
