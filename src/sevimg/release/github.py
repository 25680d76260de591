"""A small client for GitHub's releases REST API: the calls `sevimg publish` needs.

Only the calls `sevimg publish` needs (see shared/reference/dispatch.md);
the HTTP side (auth headers, retries, rate limits, pagination, errors) is
:mod:`sevimg.release.github_api`, the checks of token, API URL and
repository :mod:`sevimg.release.github_access`. Their names are
re-exported here, so callers import the client from one place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevimg.artifacts.checksums import iter_chunks

# Token is re-exported here: callers build it with the rest of the client.
from sevimg.release.github_access import (
    DEFAULT_API_URL,
    Token,
    check_api_url,
    check_repo,
    resolve_api_url,
    resolve_token,
    url_segment,
)
from sevimg.release.github_api import API_VERSION, PER_PAGE, USER_AGENT, Api, GitHubError, LogFn
from sevimg.retry import Backoff, Clock, RetryPolicy, SystemClock

ProgressFn = Callable[[int], None]


__all__ = [
    "API_VERSION",
    "DEFAULT_API_URL",
    "PER_PAGE",
    "USER_AGENT",
    "Asset",
    "Clock",
    "GitHub",
    "GitHubError",
    "LogFn",
    "ProgressFn",
    "Release",
    "RetryPolicy",
    "SystemClock",
    "Token",
    "check_api_url",
    "check_repo",
    "resolve_api_url",
    "resolve_token",
    "url_segment",
]


@dataclass(frozen=True)
class Release:
    """The parts of a release sevimg uses."""

    id: int
    tag_name: str
    draft: bool
    prerelease: bool
    upload_url: str
    html_url: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        """From GitHub's release object."""
        return cls(
            id=int(data["id"]),
            tag_name=str(data["tag_name"]),
            draft=bool(data.get("draft")),
            prerelease=bool(data.get("prerelease")),
            upload_url=str(data["upload_url"]),
            html_url=str(data.get("html_url") or ""),
        )


@dataclass(frozen=True)
class Asset:
    """The parts of a release asset sevimg uses."""

    id: int
    name: str
    label: str
    state: str  # "uploaded", or "starter" for an upload that never finished
    content_type: str
    size: int
    digest: str | None  # "sha256:<hex>" (GitHub computes it on upload)

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 from `digest`, when GitHub gave one."""
        if self.digest and self.digest.startswith("sha256:"):
            return self.digest.removeprefix("sha256:")
        return None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Asset:
        """From GitHub's asset object."""
        return cls(
            id=int(data["id"]),
            name=str(data["name"]),
            label=str(data.get("label") or ""),
            state=str(data.get("state") or "uploaded"),
            content_type=str(data.get("content_type") or ""),
            size=int(data.get("size") or 0),
            digest=data["digest"] if isinstance(data.get("digest"), str) else None,
        )


class GitHub(Api):
    """GitHub's releases API for one repository."""

    def release_by_tag(self, tag: str) -> Release | None:
        """The published release for `tag`, or None (GitHub hides drafts from this call)."""
        response = self._send(
            "GET",
            self._url(f"/releases/tags/{url_segment(tag)}"),
            what=f"looking up release {tag} of {self.repo}",
            ok=(200, 404),
        )
        if response.status_code == 404:
            return None
        return Release.from_json(self._json(response, dict))

    def draft_by_tag(self, tag: str) -> Release | None:
        """A draft release named for `tag` (left by an interrupted publish), newest first.

        A 404 counts as "no draft": some GitHub-compatible servers do not
        list releases, and for a repository that really is missing the next
        call (creating the release) says so.
        """
        try:
            for data in self._paginate(
                self._url("/releases"), what=f"listing releases of {self.repo}"
            ):
                if data.get("draft") and data.get("tag_name") == tag:
                    return Release.from_json(data)
        except GitHubError as exc:
            if exc.status != 404:
                raise
        return None

    def create_release(
        self, tag: str, *, prerelease: bool, name: str, body: str, target: str | None
    ) -> Release:
        """Create a draft release for `tag` (it is published later, with :meth:`publish_release`)."""
        payload: dict[str, Any] = {
            "tag_name": tag,
            "name": name,
            "body": body,
            "draft": True,
            "prerelease": prerelease,
        }
        if target:
            payload["target_commitish"] = target
        # Not retried on 5xx: a retried POST could make a second draft. The
        # caller looks for the draft before trying again.
        response = self._send(
            "POST",
            self._url("/releases"),
            what=f"creating release {tag} in {self.repo}",
            json=payload,
            ok=(201,),
            retry_errors=False,
        )
        return Release.from_json(self._json(response, dict))

    def publish_release(self, release: Release) -> Release:
        """Make a draft visible (dispatch and anonymous users see it from now on)."""
        response = self._send(
            "PATCH",
            self._url(f"/releases/{release.id}"),
            what=f"publishing release {release.tag_name} of {self.repo}",
            json={"draft": False},
        )
        return Release.from_json(self._json(response, dict))

    # --- assets ------------------------------------------------------------------------

    def list_assets(self, release: Release) -> list[Asset]:
        """Every asset of `release`, following pagination."""
        return [
            Asset.from_json(data)
            for data in self._paginate(
                self._url(f"/releases/{release.id}/assets"),
                what=f"listing the assets of release {release.tag_name}",
            )
        ]

    def delete_asset(self, asset: Asset) -> None:
        """Delete an asset; one that is already gone counts as deleted."""
        self._send(
            "DELETE",
            self._url(f"/releases/assets/{asset.id}"),
            what=f"deleting asset {asset.name}",
            ok=(204, 404),
        )

    def rename_asset(self, asset: Asset, name: str, label: str) -> Asset:
        """Rename an asset (its content type cannot change this way)."""
        response = self._send(
            "PATCH",
            self._url(f"/releases/assets/{asset.id}"),
            what=f"renaming asset {asset.name} to {name}",
            json={"name": name, "label": label},
        )
        return Asset.from_json(self._json(response, dict))

    def upload_asset(
        self,
        release: Release,
        path: Path,
        *,
        name: str,
        label: str,
        content_type: str,
        sha256: str,
        progress: ProgressFn | None = None,
        content: bytes | None = None,
    ) -> Asset:
        """Upload `path` (or `content`) as asset `name`, streaming it, and return the new asset.

        After a 5xx or a dropped connection, an asset GitHub kept under
        `name` is inspected: a complete one with the right digest is the
        upload (only the answer was lost); anything else, such as an empty
        asset in state `starter`, is deleted before trying again.
        """
        size = len(content) if content is not None else path.stat().st_size
        url = re.sub(r"\{[^}]*\}$", "", release.upload_url)
        what = f"uploading {name}"

        def body() -> Iterator[bytes]:
            sent = 0
            if progress:
                progress(0)
            chunks: Iterable[bytes] = [content] if content is not None else iter_chunks(path)
            for chunk in chunks:
                sent += len(chunk)
                yield chunk
                if progress:
                    progress(sent)

        backoff = Backoff(self.retry, self.clock)
        while True:
            try:
                response = self._send(
                    "POST",
                    url,
                    what=what,
                    params={"name": name, "label": label},
                    headers={"Content-Type": content_type, "Content-Length": str(size)},
                    body=body,
                    ok=(201,),
                    retry_errors=False,
                )
                return Asset.from_json(self._json(response, dict))
            except GitHubError as exc:
                retryable = exc.status is None or exc.status >= 500
                duplicate = exc.status == 422 and "already_exists" in exc.codes
                if not (retryable or duplicate) or backoff.exhausted:
                    raise
                leftover = [a for a in self.list_assets(release) if a.name == name]
                done = [
                    a
                    for a in leftover
                    if a.state == "uploaded"
                    and a.sha256 == sha256
                    and a.content_type == content_type
                ]
                if done:
                    return done[0]
                if duplicate and not leftover:
                    raise
                if duplicate and any(a.state == "uploaded" for a in leftover):
                    raise  # a real asset of that name, not ours to delete here
                for asset in leftover:
                    self.log(
                        f"removing the incomplete asset {asset.name} (state {asset.state}) left by a failed upload"
                    )
                    self.delete_asset(asset)
                if retryable:
                    backoff.wait(self.log, f"{what} failed ({exc.message})")
                else:
                    backoff.count()  # the duplicate was ours and is gone: no need to wait
