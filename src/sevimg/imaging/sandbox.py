"""What sevimg hands mkosi's sandbox: the mirrors of sevimg.local.yaml, or the catalog's.

For an apt family (images/families/*.yaml, `package_manager: apt`) sevimg
always writes the deb822 sources itself (from sevimg.local.yaml's mirror, else
the distribution file's `repository.url`), for the tools tree too, without the
debug suites mkosi's defaults carry, with the family's keyring and pocket rules; the mirror's credentials go
to apt's auth.conf.d (mode 0600), never into the sources, which mkosi and apt
print. Other families get mkosi's --mirror.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from sevimg.atomic import write_file_atomic
from sevimg.catalog.spec import FamilyFacts
from sevimg.problems import SevimgError
from sevimg.redact import redact_text, split_credentials
from sevimg.render.apt import deb822
from sevimg.settings import LocalConfig

APT_AUTH = "etc/apt/auth.conf.d/sevimg.conf"
# mkosi splits --extra-tree/--sandbox-tree values at these (lists, source:target).
MKOSI_SEPARATORS = frozenset(",:")
SOURCES = "etc/apt/sources.list.d/mkosi.sources"


def mirror_args(
    local: LocalConfig,
    family: FamilyFacts | None,
    folder: Path,
    distribution: str,
    release: str,
    repositories: Sequence[str],
) -> list[str]:
    """--sandbox-tree/--mirror arguments for one distribution release; `folder` holds
    the sandbox tree sevimg writes for it (sources and credentials)."""
    args = [f"--sandbox-tree={tree}" for tree in local.sandbox_trees]
    if (mirror := local.apt_mirrors.get(distribution)) and family and family.is_apt:
        logins = [split_credentials(mirror.url)]
        if mirror.security_url:
            logins.append(split_credentials(mirror.security_url))
        security = logins[1][0] if len(logins) > 1 else None
        text = apt_sources(
            family, release, logins[0][0], security, repositories, origin=mirror.origin
        )
        write_file_atomic(folder / SOURCES, text.encode())
        auth = folder / APT_AUTH
        if credentials := apt_auth(logins):
            write_file_atomic(auth, credentials.encode(), mode=0o600)
        else:
            auth.unlink(missing_ok=True)
        args.append(f"--sandbox-tree={folder}")
    elif url := local.rpm_mirrors.get(distribution):
        args.append(f"--mirror={url}")
    return args


def mirror_label(local: LocalConfig, distribution: str) -> str:
    """The mirror a build of `distribution` uses and where it is set, for messages ('' if mkosi's)."""
    if mirror := local.apt_mirrors.get(distribution):
        return f"{redact_text(mirror.url)} from {mirror.origin}"
    if url := local.rpm_mirrors.get(distribution):
        return f"{redact_text(url)} from {local.source or 'sevimg.local.yaml'}"
    return f"mkosi's default {distribution} mirror"


def apt_sources(
    family: FamilyFacts,
    release: str,
    url: str,
    security_url: str | None,
    repositories: Sequence[str],
    *,
    origin: str = "sevimg.local.yaml",
) -> str:
    """deb822 sources for one release from one mirror: main, -updates and -security, no debug suites.

    The keyring and the pocket rules are the family's (images/families/*.yaml, apt:);
    `origin` says in the file where the mirror was set.
    """
    components = ("main", *repositories)
    keyring = family.apt_keyring
    if keyring is None:  # the family schema requires it for apt families; a workspace copy may not
        raise SevimgError(
            f"images/families/{family.name}.yaml gives no apt keyring for this machine's mirror"
        )
    if security_url is None:
        suffix = family.apt_security_suffix
        security_url = url.rstrip("/") + suffix if suffix else url
    pocketless = release in family.apt_suites_without_pockets
    suites = [release] if pocketless else [release, f"{release}-updates"]
    text = (
        f"# Written by sevimg from {origin}, without debug suites.\n"
        "# Another mirror: `mirrors:` in sevimg.local.yaml (see sevimg.local.yaml.example).\n"
        + deb822(url, suites, components, keyring)
        + "\n"
    )
    if not pocketless:
        text += "\n" + deb822(security_url, [f"{release}-security"], components, keyring) + "\n"
    return text


def apt_auth(logins: Iterable[tuple[str, str | None, str | None]]) -> str:
    """apt_auth.conf(5) entries for (URL, user, password); '' when none has credentials."""
    lines = []
    for url, user, password in logins:
        if user is None and password is None:
            continue
        for value in (user or "", password or ""):
            if any(c.isspace() or ord(c) < 32 for c in value):
                raise SevimgError(
                    f"the credentials of the mirror {redact_text(url)} hold a space or control "
                    "character, which apt's auth.conf cannot carry"
                )
        parts = urlsplit(url)
        # With its scheme, the entry also applies to plain http (apt's default is https only).
        machine = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        lines.append(f"machine {machine} login {user or ''} password {password or ''}\n")
    if not lines:
        return ""
    return "# Written by sevimg from sevimg.local.yaml: the mirror's credentials.\n" + "".join(
        dict.fromkeys(lines)
    )


def check_mkosi_path(path: Path, what: str) -> None:
    """SevimgError when mkosi would misread `path` in an option (a ',' or ':' splits it)."""
    odd = sorted(MKOSI_SEPARATORS & set(str(path)))
    control = any(ord(c) < 32 for c in str(path))
    if odd or control:
        shown = " and ".join(repr(c) for c in odd) or "a control character"
        raise SevimgError(
            f"{what} {str(path)!r} has {shown} in its path, which mkosi reads as a separator",
            hint="move it: cache_dir in sevimg.local.yaml, or SEVIMG_CACHE",
        )
