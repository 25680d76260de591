"""Publish an artifact folder to a GitHub release, in the form dispatch consumes.

Three steps, each taking the previous one's value (the first two are
:mod:`sevimg.release.plan`):

1. :func:`select` verifies the folder (SHA256SUMS, manifests) and picks the
   files to publish;
2. :func:`make_plan` reads the release and decides, per asset, create,
   replace or keep (nothing is written; `--dry-run` stops here);
3. :func:`execute` carries the plan out.

What dispatch needs (shared/reference/dispatch.md): host images carry
exactly `application/vnd.dispatch+efi`, nothing else carries a dispatch
type, and the release never lacks an asset it had. So a new release is
made as a draft and published only once every asset is up, and an asset is
replaced by uploading the new one under a temporary name, checking GitHub's
digest of it, deleting the old one and renaming the new one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sevimg.release.github import Asset, GitHub, GitHubError, ProgressFn, Release
from sevimg.release.plan import (
    DEVEL_TAG,
    HOST_TYPE,
    TMP_PREFIX,
    Item,
    Plan,
    check_tag,
    make_plan,
    select,
)
from sevimg.retry import Backoff

# --- 3. carrying it out -----------------------------------------------------------------------


class Reporter(Protocol):
    """Where publishing reports progress (the CLI prints it; tests record it)."""

    def info(self, message: str) -> None:
        """A step done."""
        ...

    def warn(self, message: str) -> None:
        """Something the user should know."""
        ...

    def progress(self, name: str, total: int) -> contextlib.AbstractContextManager[ProgressFn]:
        """A progress display for one upload of `total` bytes, fed the bytes sent so far."""
        ...


@dataclass
class SilentReporter:
    """A reporter that keeps messages in lists."""

    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def info(self, message: str) -> None:
        """Record it."""
        self.infos.append(message)

    def warn(self, message: str) -> None:
        """Record it."""
        self.warnings.append(message)

    @contextlib.contextmanager
    def progress(self, name: str, total: int) -> Iterator[ProgressFn]:
        """No display."""
        yield lambda _: None


@dataclass(frozen=True)
class Outcome:
    """What publishing did."""

    release: Release
    created: tuple[str, ...]
    replaced: tuple[str, ...]
    kept: tuple[str, ...]


def execute(gh: GitHub, plan: Plan, reporter: Reporter) -> Outcome:
    """Carry out `plan`; on failure the release keeps every asset it had (see module doc)."""
    release = plan.release
    if release is None:
        release = _create_release(gh, plan, reporter)
    for leftover in plan.cleanup:
        reporter.info(
            f"removing {leftover.name} (state {leftover.state}), left by an interrupted upload"
        )
        gh.delete_asset(leftover)
    for item in plan.items:
        if item.action == "keep":
            continue
        if item.action == "create":
            reporter.info(f"uploading {item.name} ({item.content_type}, {human_size(item.size)})")
            _upload(gh, release, item, item.name, reporter)
            continue
        assert item.existing is not None
        reporter.info(
            f"replacing {item.name} ({item.reason}; {item.content_type}, {human_size(item.size)})"
        )
        temporary = f"{TMP_PREFIX}{item.name}"
        new = _upload(gh, release, item, temporary, reporter)
        # The new asset is up and checked: only now does the old one go.
        gh.delete_asset(item.existing)
        gh.rename_asset(new, item.name, item.name)
    if release.draft:
        reporter.info(f"publishing release {release.tag_name}")
        release = gh.publish_release(release)
    _check_result(gh, release, plan)
    return Outcome(
        release=release,
        created=tuple(i.name for i in plan.items if i.action == "create"),
        replaced=tuple(i.name for i in plan.items if i.action == "replace"),
        kept=tuple(i.name for i in plan.items if i.action == "keep"),
    )


def _create_release(gh: GitHub, plan: Plan, reporter: Reporter) -> Release:
    kind = "prerelease" if plan.prerelease else "release"
    reporter.info(f"creating draft {kind} {plan.tag}")
    backoff = Backoff(gh.retry, gh.clock)
    while True:
        try:
            return gh.create_release(
                plan.tag,
                prerelease=plan.prerelease,
                name=plan.tag,
                body=_release_body(plan.tag),
                target=None,
            )
        except GitHubError as exc:
            # The POST is not blindly retried (it could make two drafts): look
            # first for what an unanswered attempt, or another publisher, made.
            again = gh.release_by_tag(plan.tag) or gh.draft_by_tag(plan.tag)
            if again is not None:
                return again
            if (exc.status is not None and exc.status < 500) or backoff.exhausted:
                raise
            backoff.wait()


def _release_body(tag: str) -> str:
    what = "Rolling prerelease from the main branch" if tag == DEVEL_TAG else f"Release {tag}"
    return (
        f"{what}, published by sevimg.\n\n"
        f"Host images (`host-*.efi`) carry the content type `{HOST_TYPE}` for dispatch; "
        "guest images, manifests and SHA256SUMS do not.\n"
    )


def _upload(gh: GitHub, release: Release, item: Item, name: str, reporter: Reporter) -> Asset:
    """Upload one item under `name` and check what GitHub stored; a bad copy is deleted."""
    label = item.name if name == item.name else f"{item.name} (upload in progress)"
    path = item.path if item.path is not None else Path(item.name)
    with reporter.progress(item.name, item.size) as progress:
        asset = gh.upload_asset(
            release,
            path,
            name=name,
            label=label,
            content_type=item.content_type,
            sha256=item.sha256,
            progress=progress,
            content=item.content,
        )
    problem = ""
    if asset.content_type != item.content_type:
        problem = f"GitHub stored it as {asset.content_type}, not {item.content_type}"
    elif asset.sha256 is not None and asset.sha256 != item.sha256:
        problem = f"GitHub's digest is sha256:{asset.sha256}, the file's is sha256:{item.sha256}"
    elif asset.sha256 is None and asset.size != item.size:
        problem = f"GitHub stored {asset.size} bytes of {item.size}"
    if problem:
        gh.delete_asset(asset)
        raise GitHubError(
            f"uploading {item.name}: {problem}; the upload was removed, the release is as it was"
        )
    if asset.sha256 is None:
        reporter.warn(f"GitHub returned no digest for {item.name}; only its size was checked")
    return asset


def _check_result(gh: GitHub, release: Release, plan: Plan) -> None:
    """Read the release back: every planned asset is there, complete, with its type and digest."""
    remote = {a.name: a for a in gh.list_assets(release)}
    wrong: list[str] = []
    for item in plan.items:
        asset = remote.get(item.name)
        if asset is None or asset.state != "uploaded":
            wrong.append(f"{item.name} is missing")
        elif asset.content_type != item.content_type:
            wrong.append(f"{item.name} has type {asset.content_type}")
        elif asset.sha256 not in (None, item.sha256):
            wrong.append(f"{item.name} has another digest")
    if wrong:
        raise GitHubError(
            f"release {release.tag_name} is not as planned after publishing: {'; '.join(wrong)}"
        )


def human_size(size: int) -> str:
    """1234567 → '1.2 MB'."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def publish(
    gh: GitHub,
    folder: Path,
    tag: str,
    *,
    images: Sequence[str] = (),
    reporter: Reporter | None = None,
    dry_run: bool = False,
    on_plan: Callable[[Plan], None] | None = None,
    allow_debug: bool = False,
    commit: str | None = None,
) -> tuple[Plan, Outcome | None]:
    """Verify, plan and (unless `dry_run`) execute; returns the plan and what was done.

    Debug images are refused unless `allow_debug`; even then they never get
    a dispatch content type.
    """
    reporter = reporter or SilentReporter()
    check_tag(tag)
    selection = select(folder, images, allow_debug=allow_debug)
    plan = make_plan(gh, selection, tag, commit)
    for message in plan.warnings:
        reporter.warn(message)
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return plan, None
    return plan, execute(gh, plan, reporter)
