"""The extra apt suites and rpm repositories a release takes packages from, resolved.

Pure, like the resolver it serves: documents in, `AptSource`/`RpmRepo` and located
problems out.
"""

from __future__ import annotations

from collections.abc import Sequence

from sevimg.catalog.index import Entry
from sevimg.catalog.load import Document, JsonPath
from sevimg.catalog.spec import ROLES, AptSource, Role, RpmRepo
from sevimg.problems import Problem


def apt_keyring(entry: Entry) -> str | None:
    """Signed-By for the distribution's archive: its own keyring, else the family's."""
    assert entry.records is not None
    archive = entry.records.distro.repository
    return (archive.keyring if archive else None) or entry.family.apt_keyring


def extra_repositories(
    entry: Entry, role: Role, packages: Sequence[str]
) -> tuple[tuple[AptSource, ...], tuple[RpmRepo, ...], list[Problem]]:
    """The release's extra repositories that the `role` image takes, and their problems."""
    assert entry.records is not None  # the resolver refuses a release with broken files
    apt: list[AptSource] = []
    rpm: list[RpmRepo] = []
    problems: list[Problem] = []
    doc = entry.release

    def fail(doc: Document, path: JsonPath, message: str) -> None:
        problems.append(doc.problem(path, message))

    for repo in entry.records.release.extra_repositories:
        where = repo.where.path
        if role not in (repo.roles or ROLES):
            continue
        for j, name in enumerate(repo.packages):
            if name not in packages:
                fail(
                    doc,
                    (*where, "packages", j),
                    f"{name!r} is taken from {repo.name!r} but the {role} image does not "
                    f"install it; add it to {role}.add_packages or name the component it replaces",
                )
        only = tuple(sorted(repo.packages))
        if entry.family.is_apt:
            for key in ("baseurl", "gpgkey", "gpgcheck"):
                if repo.has(key):
                    fail(
                        doc,
                        (*where, key),
                        f"{key} is for rpm repositories; apt ones take suite (and url)",
                    )
            if repo.suite is None:
                fail(doc, where, "an apt repository needs `suite:` (e.g. suite: forky)")
                continue
            archive = entry.records.distro.repository
            keyring = apt_keyring(entry)
            if not archive or not keyring:
                fail(
                    doc,
                    where,
                    f"images/{entry.distro}.yaml has no `repository:` (url and keyring) "
                    "for extra apt suites",
                )
                continue
            apt.append(
                AptSource(
                    name=repo.name,
                    url=repo.url or archive.url,
                    suites=(repo.suite,),
                    components=repo.components or ("main",),
                    signed_by=keyring,
                    only_packages=only,
                )
            )
        else:
            for key in ("suite", "url", "components"):
                if repo.has(key):
                    fail(
                        doc,
                        (*where, key),
                        f"{key} is for apt repositories; rpm ones take baseurl (and gpgkey)",
                    )
            if repo.baseurl is None:
                fail(doc, where, "an rpm repository needs `baseurl:`")
                continue
            gpgcheck = repo.gpgcheck is not False
            if gpgcheck and not repo.has("gpgkey"):
                fail(
                    doc,
                    where,
                    f"rpm repository {repo.name!r} has no `gpgkey:`: packages from it would "
                    "not be signature-checked; give its signing key, or say `gpgcheck: false` "
                    "to accept that (a warning)",
                )
                continue
            if not gpgcheck and repo.has("gpgkey"):
                fail(
                    doc,
                    (*where, "gpgcheck"),
                    "gpgcheck: false with a gpgkey: drop one of them",
                )
                continue
            rpm.append(
                RpmRepo(
                    name=repo.name,
                    baseurl=repo.baseurl,
                    gpgkey=repo.gpgkey,
                    only_packages=only,
                    gpgcheck=bool(gpgcheck),
                )
            )
    names = [r.name for r in apt] + [r.name for r in rpm]
    if len(set(names)) != len(names):
        fail(doc, ("extra_repositories",), "two repositories share a name; names must be unique")
    return tuple(apt), tuple(rpm), problems
