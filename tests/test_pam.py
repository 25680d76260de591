"""The console's PAM login stack, read and walked as Linux-PAM does (sevimg.catalog.pam).

The distributions' own stacks (Debian, Ubuntu, Fedora's authselect, openSUSE)
must need a password; stacks that let in without one — pam_permit made
sufficient, a jump over pam_deny, a `reset`, a substack, Debian's @include,
a continued line, `other` standing in for a missing `login` — must be found.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sevimg.catalog import pam
from sevimg.catalog.index import Catalog
from sevimg.render import guard
from sevimg.render.trees import EXTRA
from tests.fakes import FILE
from tests.waysinkit import assert_guest_way_in_fails

# Debian 13 / forky's libpam-runtime and login, as the built images carry them.
DEBIAN_COMMON_AUTH = b"""\
# here are the per-package modules (the "Primary" block)
auth\t[success=1 default=ignore]\tpam_unix.so nullok
# here's the fallback if no module succeeds
auth\trequisite\t\t\tpam_deny.so
# prime the stack with a positive return value if there isn't one already;
auth\trequired\t\t\tpam_permit.so
"""
DEBIAN_LOGIN = b"""\
auth       optional   pam_faildelay.so  delay=3000000
auth [success=ok new_authtok_reqd=ok ignore=ignore user_unknown=bad default=die] pam_securetty.so
auth       requisite  pam_nologin.so
@include common-auth
auth       optional   pam_group.so
"""
DEBIAN_OTHER = b"@include common-auth\n@include common-account\n"
DEBIAN_HOMED = b"""\
auth\t[success=2 default=ignore]\tpam_systemd_home.so
auth\t[success=1 default=ignore]\tpam_unix.so nullok
auth\trequisite\t\t\tpam_deny.so
auth\trequired\t\t\tpam_permit.so
"""
# authselect's sssd profile (Fedora, Alma, Rocky) and Fedora's login.
FEDORA_SYSTEM_AUTH = b"""\
auth        required                                     pam_env.so
auth        required                                     pam_faildelay.so delay=2000000
auth        [default=1 ignore=ignore success=ok]         pam_usertype.so isregular
auth        [default=1 ignore=ignore success=ok]         pam_localuser.so
auth        sufficient                                   pam_unix.so nullok
auth        [default=1 ignore=ignore success=ok]         pam_usertype.so isregular
auth        sufficient                                   pam_sss.so forward_pass
auth        required                                     pam_deny.so
"""
FEDORA_LOCAL = b"""\
auth        required                                     pam_env.so
auth        required                                     pam_faildelay.so delay=2000000
auth        [success=1 default=ignore]                   pam_succeed_if.so service notin \
login:gdm:xdm:kdm:xscreensaver:gnome-screensaver:kscreensaver quiet use_uid
auth        [success=done ignore=ignore default=die]     pam_unix.so nullok
auth        required                                     pam_deny.so
"""
FEDORA_LOGIN = b"""\
#%PAM-1.0
auth       substack     system-auth
auth       include      postlogin
account    required     pam_nologin.so
"""
FEDORA_POSTLOGIN = b"session optional pam_umask.so silent\n"
# openSUSE Tumbleweed keeps them in /usr/lib/pam.d.
SUSE_COMMON_AUTH = b"""\
auth\trequired\tpam_env.so
auth\toptional\tpam_gnome_keyring.so
auth\trequired\tpam_unix.so\ttry_first_pass
"""
SUSE_LOGIN = b"auth      requisite      pam_nologin.so\nauth      include        common-auth\n"

Files = dict[str, bytes]


@dataclass(frozen=True)
class Blob:
    data: bytes


def verdict(files: Files) -> list[str]:
    return [str(f) for f in pam.console_login(lambda p: Blob(files[p]) if p in files else None)]


DEBIAN: Files = {
    "etc/pam.d/common-auth": DEBIAN_COMMON_AUTH,
    "etc/pam.d/login": DEBIAN_LOGIN,
    "etc/pam.d/other": DEBIAN_OTHER,
}
FEDORA: Files = {
    "etc/pam.d/system-auth": FEDORA_SYSTEM_AUTH,
    "etc/pam.d/login": FEDORA_LOGIN,
    "etc/pam.d/postlogin": FEDORA_POSTLOGIN,
}

NEED_A_PASSWORD: list[tuple[str, Files]] = [
    ("debian", DEBIAN),
    ("debian, no login: other", {**DEBIAN, "etc/pam.d/login": b"account required pam_unix.so\n"}),
    ("debian with homed", {**DEBIAN, "etc/pam.d/common-auth": DEBIAN_HOMED}),
    ("fedora sssd profile", FEDORA),
    ("fedora local profile", {**FEDORA, "etc/pam.d/system-auth": FEDORA_LOCAL}),
    (
        "opensuse in /usr/lib",
        {"usr/lib/pam.d/common-auth": SUSE_COMMON_AUTH, "usr/lib/pam.d/login": SUSE_LOGIN},
    ),
    ("no pam at all", {}),
    ("login without auth lines and no other", {"etc/pam.d/login": b"session optional x.so\n"}),
    ("permit for sessions only", {**DEBIAN, "etc/pam.d/login": b"session sufficient pam_permit.so\n@include common-auth\n"}),
    ("permit behind a comment", {**DEBIAN, "etc/pam.d/login": b"# auth sufficient pam_permit.so\n@include common-auth\n"}),
    ("a comment ends a continued line", {**DEBIAN, "etc/pam.d/login": b"auth required pam_unix.so # \\\nsufficient pam_permit.so\n"}),
    ("the module name with a carriage return", {**DEBIAN, "etc/pam.d/login": b"auth sufficient pam_permit.so\r\n@include common-auth\n"}),
    ("a done in a substack ends only the substack", {"etc/pam.d/login": b"auth substack s\nauth requisite pam_deny.so\n", "etc/pam.d/s": b"auth sufficient pam_permit.so\n"}),
    ("a jump past the end", {"etc/pam.d/login": b"auth [success=3] pam_permit.so\nauth required pam_permit.so\n"}),
    ("a missing include fails", {"etc/pam.d/login": b"auth include nowhere\nauth optional pam_permit.so\n"}),
    ("a bracket leaves out success: bad", {"etc/pam.d/login": b"auth [default=ok success] pam_permit.so\n"}),
    ("a line of no type fails", {"etc/pam.d/login": b"autth required pam_permit.so\n"}),
    ("an include loop", {"etc/pam.d/login": b"auth include login\nauth optional pam_permit.so\n"}),
    ("a cut-short last line", {"etc/pam.d/login": b"auth required pam_unix.so\nauth sufficient pam_permit.so \\"}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "files"), NEED_A_PASSWORD, ids=[c for c, _ in NEED_A_PASSWORD])
def test_stacks_that_need_a_password_pass(case: str, files: Files) -> None:
    assert verdict(files) == []


LET_IN: list[tuple[str, Files, str]] = [
    ("sufficient permit first", {**DEBIAN, "etc/pam.d/login": b"auth sufficient pam_permit.so\n" + DEBIAN_LOGIN}, "/etc/pam.d/login:1 pam_permit.so"),
    ("upper case", {**DEBIAN, "etc/pam.d/login": b"AUTH Sufficient pam_permit.so\n" + DEBIAN_LOGIN}, "/etc/pam.d/login:1 pam_permit.so"),
    ("a folder and a dash", {**DEBIAN, "etc/pam.d/login": b"-auth sufficient /lib/x86_64-linux-gnu/security/pam_permit.so\n" + DEBIAN_LOGIN}, "/etc/pam.d/login:1 pam_permit.so"),
    ("a bracket with done", {**DEBIAN, "etc/pam.d/login": b"auth [success=done default=ignore] pam_permit.so\n" + DEBIAN_LOGIN}, "pam_permit.so"),
    ("a jump over pam_deny", {**DEBIAN, "etc/pam.d/common-auth": b"auth [success=1 default=ignore] pam_permit.so\nauth requisite pam_deny.so\nauth required pam_permit.so\n"}, "/etc/pam.d/common-auth:3 pam_permit.so"),
    ("pam_unix made optional", {**DEBIAN, "etc/pam.d/common-auth": b"auth optional pam_unix.so\nauth required pam_permit.so\n"}, "/etc/pam.d/common-auth:2 pam_permit.so"),
    ("pam_deny removed", {**DEBIAN, "etc/pam.d/common-auth": DEBIAN_COMMON_AUTH.replace(b"requisite", b"optional")}, "pam_permit.so"),
    ("a continued line", {**DEBIAN, "etc/pam.d/login": b"auth \\\n  sufficient \\\n  pam_permit.so\n" + DEBIAN_LOGIN}, "/etc/pam.d/login:1 pam_permit.so"),
    ("pam_rootok: login runs as root", {**DEBIAN, "etc/pam.d/login": b"auth sufficient pam_rootok.so\n" + DEBIAN_LOGIN}, "pam_rootok.so"),
    ("only a module that checks nothing", {"etc/pam.d/login": b"auth sufficient pam_env.so\n"}, "/etc/pam.d/login:1 pam_env.so"),
    ("other stands in for a login without auth", {**DEBIAN, "etc/pam.d/login": b"account required pam_unix.so\n", "etc/pam.d/other": b"auth required pam_permit.so\n"}, "/etc/pam.d/other:1 pam_permit.so"),
    ("/etc wins over /usr/lib", {"etc/pam.d/login": b"auth required pam_permit.so\n", "usr/lib/pam.d/login": SUSE_LOGIN, "usr/lib/pam.d/common-auth": SUSE_COMMON_AUTH}, "/etc/pam.d/login:1"),
    ("an included file in /usr/lib", {"etc/pam.d/login": b"auth include common-auth\n", "usr/lib/pam.d/common-auth": b"auth required pam_permit.so\n"}, "/usr/lib/pam.d/common-auth:1"),
    ("an absolute include", {"etc/pam.d/login": b"auth include /etc/security/x/../open\n", "etc/security/open": b"auth sufficient pam_permit.so\n"}, "/etc/security/open:1"),
    ("a substack that lets in, then nothing fails", {"etc/pam.d/login": b"auth substack s\nauth required pam_env.so\n", "etc/pam.d/s": b"auth sufficient pam_permit.so\n"}, "/etc/pam.d/s:1"),
    ("reset forgets pam_unix's failure", {"etc/pam.d/login": b"auth required pam_unix.so\nauth [success=reset default=bad] pam_env.so\nauth required pam_permit.so\n"}, "/etc/pam.d/login:3"),
    ("fedora's system-auth without pam_deny", {**FEDORA, "etc/pam.d/system-auth": FEDORA_SYSTEM_AUTH.replace(b"pam_deny", b"pam_permit")}, "/etc/pam.d/system-auth:8 pam_permit.so"),
    ("opensuse with pam_unix optional", {"usr/lib/pam.d/login": SUSE_LOGIN, "usr/lib/pam.d/common-auth": SUSE_COMMON_AUTH.replace(b"required\tpam_unix", b"optional\tpam_unix")}, "/usr/lib/pam.d/common-auth:1 pam_env.so"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "files", "granted"), LET_IN, ids=[c for c, _, _ in LET_IN])
def test_stacks_that_let_anyone_in_are_found(case: str, files: Files, granted: str) -> None:
    found = verdict(files)
    assert len(found) == 1, found
    assert "lets anyone log in at the console without a password" in found[0]
    assert granted in found[0], found


def test_a_built_guest_whose_login_stack_lets_in_fails(catalog: Catalog) -> None:
    login = b"auth sufficient pam_permit.so\n" + DEBIAN_LOGIN
    extra = [(path, FILE, data) for path, data in {**DEBIAN, "etc/pam.d/login": login}.items()]
    assert_guest_way_in_fails(catalog, extra, "/etc/pam.d/login: its auth stack lets anyone")


def test_a_stack_that_includes_itself_over_and_over_is_judged_quickly() -> None:
    bomb = b"auth include login\n" * 8  # 8**16 lines if walked in full
    found = verdict({"etc/pam.d/login": bomb})
    assert found == [
        f"/etc/pam.d/login: its auth stack has over {pam.MAX_LINES} lines: too many to judge"
    ]


def test_a_rendered_tree_that_carries_such_a_stack_is_refused() -> None:
    extra = EXTRA
    tree = {f"{extra}/{path}": (data, 0o644) for path, data in DEBIAN.items()}
    assert guard.check_files(tree, extra) == []
    tree[f"{extra}/etc/pam.d/login"] = (b"auth sufficient pam_permit.so\n" + DEBIAN_LOGIN, 0o644)
    found = guard.check_files(tree, extra)
    assert [where for where, _ in found] == [f"{extra}/etc/pam.d/login"], found
    assert "lets anyone log in at the console" in found[0][1]
