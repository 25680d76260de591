"""A fake GitHub releases API: a real HTTP server on 127.0.0.1, for publish tests.

It implements the calls in shared/reference/dispatch.md with GitHub's JSON
shapes and error bodies, on two ports like github.com (the API, and uploads
at the address each release's `upload_url` names), and keeps the quirks that
matter: drafts are invisible to tag lookups and to anonymous listings, list
calls page with `per_page` (default 30, at most 100) and `Link` headers that
point at /repositories/{id}/…, uploads get a `digest`, a 502 can leave an
empty asset in state `starter`, and 422 `already_exists` on duplicates.

Faults are switched on per test (`fail`, `rate_limit`, …). After every request
the server records what the public sees of each published release
(`snapshots`), so tests can assert that no moment ever lacked an asset.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

DOCS = "https://docs.github.com/rest/releases"
WRITE = "write"
READ = "read"


@dataclass
class FakeAsset:
    id: int
    release_id: int
    name: str
    label: str
    content_type: str
    state: str
    data: bytes = b""

    @property
    def digest(self) -> str | None:
        return (
            f"sha256:{hashlib.sha256(self.data).hexdigest()}" if self.state == "uploaded" else None
        )


@dataclass
class FakeRelease:
    id: int
    tag_name: str
    name: str
    body: str
    draft: bool
    prerelease: bool
    target_commitish: str
    assets: list[FakeAsset] = field(default_factory=list)

    def asset(self, name: str) -> FakeAsset | None:
        return next((a for a in self.assets if a.name == name), None)


@dataclass
class Fault:
    """Answer matching requests with `status` instead of serving them."""

    method: str
    path: str  # regular expression, matched against the whole path
    status: int
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    starter: bool = False  # uploads: leave an empty asset in state `starter`
    drop: bool = False  # read half the body, then hang up without answering


@dataclass
class Recorded:
    server: str
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    raw_path: str = ""  # as sent, before percent-decoding


class FakeGitHub:
    """The fake; use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        owner: str = "acme",
        repo: str = "sev-images",
        *,
        tokens: dict[str, str] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.owner = owner
        self.repo = repo
        self.repo_id = 4242
        self.tokens = tokens if tokens is not None else {}
        self.now = now
        self.lock = threading.RLock()
        self.releases: list[FakeRelease] = []
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.snapshots: list[dict[str, tuple[str, ...]]] = []
        self.log_lines: list[str] = []
        # Issues and milestones, for `sevimg serve --github-issues`.
        self.milestones: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []
        self.corrupt_uploads = 0  # store the next N uploads with a changed last byte
        # Downloads (GET an asset with Accept: application/octet-stream): GitHub
        # redirects to a signed URL on another host; here the uploads server.
        # They are sent in chunks of `download_chunk` bytes, and
        # `on_download_chunk(name, sent)` runs before each one, so a test can
        # move its clock as a slow server would. `served[name]` is sent instead
        # of the asset's data (the listing still describes the data): a server
        # that lies about an asset.
        self.download_chunk = 65536
        self.on_download_chunk: Callable[[str, int], None] | None = None
        self.served: dict[str, bytes] = {}
        self._next_id = 1000
        self._servers: list[ThreadingHTTPServer] = []
        self.api_url = ""
        self.uploads_url = ""

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        for role in ("api", "uploads"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
            self._servers.append(server)
            url = f"http://127.0.0.1:{server.server_address[1]}"
            if role == "api":
                self.api_url = url
            else:
                self.uploads_url = url
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- set-up and inspection helpers ----------------------------------------------------

    def new_id(self) -> int:
        with self.lock:
            self._next_id += 1
            return self._next_id

    def add_issue(
        self,
        title: str,
        labels: list[str],
        *,
        milestone: str | None = None,
        created_at: str = "2026-01-01T00:00:00Z",
        pull_request: bool = False,
        state: str = "open",
    ) -> int:
        """An issue (or a pull request, which GitHub's issue list includes) as if filed earlier."""
        with self.lock:
            number = len(self.issues) + 1
            if milestone is not None and not any(m["title"] == milestone for m in self.milestones):
                self.milestones.append(
                    {"number": len(self.milestones) + 1, "title": milestone, "state": "open"}
                )
            issue: dict[str, Any] = {
                "title": title,
                "body": "",
                "labels": labels,
                "number": number,
                "state": state,
                "html_url": f"https://github.com/{self.owner}/{self.repo}/issues/{number}",
                "created_at": created_at,
            }
            if milestone is not None:
                issue["milestone"] = next(
                    m["number"] for m in self.milestones if m["title"] == milestone
                )
            if pull_request:
                issue["pull_request"] = {"url": f"{self.api_url}/pulls/{number}"}
            self.issues.append(issue)
            return number

    def add_milestone(self, title: str, state: str = "open") -> int:
        """A milestone; returns its number (GitHub numbers them 1, 2, … per repository)."""
        with self.lock:
            number = len(self.milestones) + 1
            self.milestones.append({"number": number, "title": title, "state": state})
            return number

    def add_release(
        self, tag: str, *, draft: bool = False, prerelease: bool = False
    ) -> FakeRelease:
        with self.lock:
            release = FakeRelease(self.new_id(), tag, tag, "", draft, prerelease, "main")
            self.releases.append(release)
            return release

    def add_asset(
        self,
        release: FakeRelease,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        state: str = "uploaded",
    ) -> FakeAsset:
        with self.lock:
            asset = FakeAsset(self.new_id(), release.id, name, "", content_type, state, data)
            release.assets.append(asset)
            return asset

    def release(self, tag: str, *, drafts: bool = True) -> FakeRelease | None:
        with self.lock:
            found = [r for r in self.releases if r.tag_name == tag and (drafts or not r.draft)]
            return found[-1] if found else None

    def fail(self, method: str, path: str, status: int = 502, **kwargs: Any) -> Fault:
        """Answer the next matching request(s) with `status` (see :class:`Fault`)."""
        body = kwargs.pop("body", None) or {
            "message": "Server Error" if status >= 500 else "Fault injected",
            "documentation_url": "https://docs.github.com/rest",
        }
        fault = Fault(method, path, status, body=body, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def secondary_rate_limit(
        self,
        method: str = ".*",
        path: str = ".*",
        *,
        status: int = 403,
        retry_after: int | None = 30,
        times: int = 1,
    ) -> Fault:
        headers = {"x-ratelimit-remaining": "4000", "x-ratelimit-limit": "5000"}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        return self.fail(
            method,
            path,
            status,
            times=times,
            headers=headers,
            body={
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            },
        )

    def primary_rate_limit(
        self,
        method: str = ".*",
        path: str = ".*",
        *,
        reset_in: int = 120,
        status: int = 403,
        times: int = 1,
    ) -> Fault:
        return self.fail(
            method,
            path,
            status,
            times=times,
            headers={
                "x-ratelimit-remaining": "0",
                "x-ratelimit-limit": "5000",
                "x-ratelimit-reset": str(int(self.now()) + reset_in),
            },
            body={
                "message": "API rate limit exceeded for installation ID 1.",
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
            },
        )

    def public_names(self, tag: str) -> tuple[str, ...]:
        """Names of the complete assets the public (dispatch) sees on release `tag`."""
        release = self.release(tag, drafts=False)
        if release is None:
            return ()
        return tuple(sorted(a.name for a in release.assets if a.state == "uploaded"))

    def _snapshot(self) -> None:
        with self.lock:
            self.snapshots.append(
                {r.tag_name: self.public_names(r.tag_name) for r in self.releases if not r.draft}
            )

    # --- JSON shapes ---------------------------------------------------------------------

    def asset_json(self, release: FakeRelease, asset: FakeAsset) -> dict[str, Any]:
        return {
            "url": f"{self.api_url}/repos/{self.owner}/{self.repo}/releases/assets/{asset.id}",
            "browser_download_url": f"{self.api_url}/{self.owner}/{self.repo}/releases/download/{quote(release.tag_name)}/{quote(asset.name)}",
            "id": asset.id,
            "node_id": f"RA_{asset.id}",
            "name": asset.name,
            "label": asset.label,
            "state": asset.state,
            "content_type": asset.content_type,
            "size": len(asset.data),
            "digest": asset.digest,
            "download_count": 0,
            "created_at": "2026-05-09T07:35:25Z",
            "updated_at": "2026-05-09T07:35:25Z",
            "uploader": {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"},
        }

    def _user(self) -> dict[str, Any]:
        return {
            "login": "github-actions[bot]",
            "id": 41898282,
            "node_id": "MDM6Qm90NDE4OTgyODI=",
            "type": "Bot",
            "url": f"{self.api_url}/users/github-actions%5Bbot%5D",
            "html_url": "https://github.com/apps/github-actions",
            "site_admin": False,
        }

    def milestone_json(self, milestone: dict[str, Any]) -> dict[str, Any]:
        """A milestone as GitHub answers it (the fake keeps number, title and state)."""
        number = milestone["number"]
        base = f"{self.api_url}/repos/{self.owner}/{self.repo}/milestones/{number}"
        return {
            "url": base,
            "html_url": f"https://github.com/{self.owner}/{self.repo}/milestone/{number}",
            "labels_url": f"{base}/labels",
            "id": 9000 + number,
            "node_id": f"MI_{number}",
            "number": number,
            "state": milestone["state"],
            "title": milestone["title"],
            "description": None,
            "creator": self._user(),
            "open_issues": 0,
            "closed_issues": 0,
            "created_at": "2026-05-09T07:35:25Z",
            "updated_at": "2026-05-09T07:35:25Z",
            "closed_at": None if milestone["state"] == "open" else "2026-05-09T07:35:25Z",
            "due_on": None,
        }

    def issue_json(self, number: int, posted: dict[str, Any]) -> dict[str, Any]:
        """An issue as GitHub answers its creation: labels and milestone as objects."""
        base = f"{self.api_url}/repos/{self.owner}/{self.repo}"
        milestone = next(
            (m for m in self.milestones if m["number"] == posted.get("milestone")), None
        )
        return {
            "id": 70000 + number,
            "node_id": f"I_{number}",
            "url": f"{base}/issues/{number}",
            "repository_url": base,
            "labels_url": f"{base}/issues/{number}/labels{{/name}}",
            "comments_url": f"{base}/issues/{number}/comments",
            "events_url": f"{base}/issues/{number}/events",
            "html_url": f"https://github.com/{self.owner}/{self.repo}/issues/{number}",
            "number": number,
            "state": "open",
            "state_reason": None,
            "title": posted["title"],
            "body": posted.get("body"),
            "user": self._user(),
            "labels": [
                {
                    "id": 5000 + i,
                    "node_id": f"LA_{i}",
                    "url": f"{base}/labels/{quote(name)}",
                    "name": name,
                    "color": "ededed",
                    "default": False,
                    "description": None,
                }
                for i, name in enumerate(posted.get("labels") or [])
            ],
            "assignee": None,
            "assignees": [],
            "milestone": self.milestone_json(milestone) if milestone else None,
            "locked": False,
            "active_lock_reason": None,
            "comments": 0,
            "created_at": "2026-05-09T07:35:25Z",
            "updated_at": "2026-05-09T07:35:25Z",
            "closed_at": None,
            "author_association": "NONE",
        }

    def release_json(self, release: FakeRelease) -> dict[str, Any]:
        base = f"{self.api_url}/repos/{self.owner}/{self.repo}/releases/{release.id}"
        shown_tag = release.tag_name if not release.draft else f"untagged-{release.id:x}"
        return {
            "url": base,
            "assets_url": f"{base}/assets",
            "upload_url": f"{self.uploads_url}/repos/{self.owner}/{self.repo}/releases/{release.id}/assets{{?name,label}}",
            "html_url": f"{self.api_url}/{self.owner}/{self.repo}/releases/tag/{shown_tag}",
            "id": release.id,
            "node_id": f"RE_{release.id}",
            "tag_name": release.tag_name,
            "target_commitish": release.target_commitish,
            "name": release.name,
            "body": release.body,
            "draft": release.draft,
            "prerelease": release.prerelease,
            "created_at": "2026-05-09T07:35:25Z",
            "published_at": None if release.draft else "2026-05-09T07:35:25Z",
            "author": {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"},
            "tarball_url": f"{self.api_url}/repos/{self.owner}/{self.repo}/tarball/{release.tag_name}",
            "zipball_url": f"{self.api_url}/repos/{self.owner}/{self.repo}/zipball/{release.tag_name}",
            "assets": [self.asset_json(release, a) for a in release.assets],
        }


class _Reply(Exception):
    def __init__(
        self,
        status: int,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        download: str | None = None,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.download = download  # an asset's name: sent in chunks (FakeGitHub.download_chunk)


def _error(status: int, message: str, doc: str = DOCS, **extra: Any) -> _Reply:
    body = {"message": message, "documentation_url": doc, **extra}
    if status in (401, 404):
        body["status"] = str(status)
    return _Reply(status, body)


def _already_exists(resource: str, field_name: str) -> _Reply:
    return _Reply(
        422,
        {
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": "already_exists", "field": field_name}],
            "documentation_url": DOCS,
            "status": "422",
        },
    )


def _handler(fake: FakeGitHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "GitHub.com"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            with fake.lock:
                fake.log_lines.append(f"{role}: {format % args}")

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        # --- plumbing ----------------------------------------------------------------

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            query = parse_qs(parts.query)
            self._status = 500
            self._body_read = False
            self._body = b""

            def record(status: int) -> None:
                # Before answering: once the client has the answer it may send
                # its next request, and the snapshots must stay in order.
                with fake.lock:
                    fake.requests.append(
                        Recorded(
                            role,
                            method,
                            path,
                            query,
                            dict(self.headers.items()),
                            status,
                            parts.path,
                        )
                    )
                    fake._snapshot()

            try:
                try:
                    self._dispatch(method, path, query)
                except _Reply as reply:
                    if not self._body_read:
                        self._read_body()  # keep the connection in step for the next request
                    record(reply.status)
                    self._send(reply)
                else:
                    record(0)  # dropped on purpose
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _read_body(self, limit: int | None = None) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            if limit is not None:
                length = min(length, limit)
            data = self.rfile.read(length) if length else b""
            self._body = data
            self._body_read = True
            return data

        def _send(self, reply: _Reply) -> None:
            if isinstance(reply.body, bytes):
                payload = reply.body
            else:
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
            self._status = reply.status
            self.send_response(reply.status)
            headers = {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "4999",
                "x-ratelimit-reset": str(int(fake.now()) + 3600),
                "x-github-api-version-selected": "2022-11-28",
                **reply.headers,
            }
            if reply.body is not None and not isinstance(reply.body, bytes):
                headers.setdefault("Content-Type", "application/json; charset=utf-8")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if not payload or self.command == "HEAD":
                return
            if reply.download is None:
                self.wfile.write(payload)
                return
            step = max(fake.download_chunk, 1)
            for offset in range(0, len(payload), step):
                if fake.on_download_chunk is not None:
                    fake.on_download_chunk(reply.download, offset)
                self.wfile.write(payload[offset : offset + step])
                self.wfile.flush()

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization")
            if not auth:
                return None
            scheme, _, value = auth.partition(" ")
            if scheme.lower() not in ("bearer", "token") or value not in fake.tokens:
                raise _error(401, "Bad credentials", "https://docs.github.com/rest")
            return fake.tokens[value]

        def _need_write(
            self,
            access: str | None,
            docs: str = "https://docs.github.com/rest/releases/releases",
            permission: str = "contents=write",
        ) -> None:
            if access is None:
                raise _error(401, "Requires authentication", "https://docs.github.com/rest")
            if access != WRITE:
                reply = _error(403, "Resource not accessible by personal access token", docs)
                reply.headers["x-accepted-github-permissions"] = permission
                raise reply

        def _fault(self, method: str, path: str) -> None:
            with fake.lock:
                for fault in fake.faults:
                    if (
                        fault.times > 0
                        and re.fullmatch(fault.method, method)
                        and re.fullmatch(fault.path, path)
                    ):
                        fault.times -= 1
                        break
                else:
                    return
            if fault.drop:
                length = int(self.headers.get("Content-Length") or 0)
                self._read_body(length // 2)
                self.close_connection = True
                self._status = 0
                self._start_upload_if(fault, path, query_name=self._query_name())
                raise _Dropped
            if method in ("POST", "PATCH"):
                self._read_body()
            self._start_upload_if(fault, path, query_name=self._query_name())
            raise _Reply(fault.status, fault.body, dict(fault.headers))

        def _query_name(self) -> str | None:
            names = parse_qs(urlsplit(self.path).query).get("name")
            return names[0] if names else None

        def _start_upload_if(self, fault: Fault, path: str, query_name: str | None) -> None:
            match = re.fullmatch(r"/repos/[^/]+/[^/]+/releases/(\d+)/assets", path)
            if not fault.starter or role != "uploads" or not match or not query_name:
                return
            with fake.lock:
                release = next((r for r in fake.releases if r.id == int(match[1])), None)
                if release is not None and release.asset(query_name) is None:
                    fake.add_asset(
                        release,
                        query_name,
                        b"",
                        self.headers.get("Content-Type") or "application/octet-stream",
                        state="starter",
                    )

        # --- routing -------------------------------------------------------------------

        def _dispatch(self, method: str, path: str, query: dict[str, list[str]]) -> None:
            if not self.headers.get("User-Agent"):
                raise _error(
                    403,
                    "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
                    "https://docs.github.com/rest/overview/resources-in-the-rest-api#user-agent-required",
                )
            version = self.headers.get("X-GitHub-Api-Version")
            if version is not None and version != "2022-11-28":
                raise _error(400, f"API version {version} is not supported.")
            access = self._token()
            try:
                self._fault(method, path)
            except _Dropped:
                return None
            # GitHub's Link headers name the repository by id.
            path = re.sub(
                rf"^/repositories/{fake.repo_id}/", f"/repos/{fake.owner}/{fake.repo}/", path
            )
            prefix = f"/repos/{fake.owner}/{fake.repo}"
            if role == "uploads":
                match = re.fullmatch(rf"{prefix}/releases/(\d+)/assets", path)
                if method == "POST" and match:
                    return self._upload(int(match[1]), query, access)
                match = re.fullmatch(r"/objects/(\d+)", path)
                if method == "GET" and match:
                    return self._object(int(match[1]), query)
                raise _error(404, "Not Found", "https://docs.github.com/rest")
            download = re.fullmatch(
                rf"/{fake.owner}/{fake.repo}/releases/download/([^/]+)/([^/]+)", path
            )
            if method == "GET" and download:
                return self._download(download[1], download[2])
            if not path.startswith(prefix + "/"):
                raise _error(404, "Not Found", "https://docs.github.com/rest")
            rest = path[len(prefix) :]
            routes: list[tuple[str, str, Callable[..., None]]] = [
                ("GET", r"/releases/tags/(.+)", self._get_by_tag),
                ("GET", r"/releases", self._list_releases),
                ("POST", r"/releases", self._create_release),
                ("GET", r"/releases/(\d+)", self._get_release),
                ("PATCH", r"/releases/(\d+)", self._update_release),
                ("GET", r"/releases/(\d+)/assets", self._list_assets),
                ("GET", r"/releases/assets/(\d+)", self._get_asset),
                ("PATCH", r"/releases/assets/(\d+)", self._update_asset),
                ("DELETE", r"/releases/assets/(\d+)", self._delete_asset),
                ("GET", r"/milestones", self._list_milestones),
                ("GET", r"/issues", self._list_issues),
                ("POST", r"/issues", self._create_issue),
            ]
            for verb, pattern, action in routes:
                match = re.fullmatch(pattern, rest)
                if match and verb == method:
                    return action(*match.groups(), query=query, access=access)
            raise _error(404, "Not Found", "https://docs.github.com/rest")

        def _json_body(self) -> dict[str, Any]:
            raw = self._read_body()
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                raise _error(400, "Problems parsing JSON") from None
            if not isinstance(data, dict):
                raise _error(400, "Problems parsing JSON")
            return data

        def _find_release(self, release_id: int, access: str | None) -> FakeRelease:
            with fake.lock:
                release = next((r for r in fake.releases if r.id == release_id), None)
            if release is None or (release.draft and access != WRITE):
                raise _error(404, "Not Found", f"{DOCS}/releases#get-a-release")
            return release

        def _find_asset(self, asset_id: int, access: str | None) -> tuple[FakeRelease, FakeAsset]:
            with fake.lock:
                for release in fake.releases:
                    for asset in release.assets:
                        if asset.id == asset_id and (not release.draft or access == WRITE):
                            return release, asset
            raise _error(404, "Not Found", f"{DOCS}/assets#get-a-release-asset")

        def _paged(self, items: list[Any], query: dict[str, list[str]], path: str) -> None:
            per_page = min(int((query.get("per_page") or ["30"])[0]), 100)
            page = max(int((query.get("page") or ["1"])[0]), 1)
            chunk = items[(page - 1) * per_page : page * per_page]
            last = max((len(items) + per_page - 1) // per_page, 1)
            base = f"{fake.api_url}/repositories/{fake.repo_id}{path}"
            links = []
            if page < last:
                links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
                links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
            if page > 1:
                links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
                links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
            headers = {"Link": ", ".join(links)} if links else {}
            raise _Reply(200, chunk, headers)

        # --- endpoints -----------------------------------------------------------------

        def _get_by_tag(self, tag: str, **_: Any) -> None:
            release = fake.release(tag, drafts=False)
            if release is None:
                raise _error(404, "Not Found", f"{DOCS}/releases#get-a-release-by-tag-name")
            raise _Reply(200, fake.release_json(release))

        def _list_releases(self, query: dict[str, list[str]], access: str | None) -> None:
            with fake.lock:
                visible = [r for r in reversed(fake.releases) if not r.draft or access == WRITE]
                items = [fake.release_json(r) for r in visible]
            self._paged(items, query, "/releases")

        def _create_release(self, access: str | None, **_: Any) -> None:
            self._need_write(access)
            data = self._json_body()
            tag = data.get("tag_name")
            if not isinstance(tag, str) or not tag:
                raise _Reply(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {"resource": "Release", "code": "missing_field", "field": "tag_name"}
                        ],
                        "documentation_url": DOCS,
                    },
                )
            with fake.lock:
                if fake.release(tag, drafts=False) is not None:
                    raise _already_exists("Release", "tag_name")
                release = FakeRelease(
                    fake.new_id(),
                    tag,
                    str(data.get("name") or tag),
                    str(data.get("body") or ""),
                    bool(data.get("draft", False)),
                    bool(data.get("prerelease", False)),
                    str(data.get("target_commitish") or "main"),
                )
                fake.releases.append(release)
                body = fake.release_json(release)
            raise _Reply(201, body)

        def _list_milestones(self, query: dict[str, list[str]], **_: Any) -> None:
            state = (query.get("state") or ["open"])[0]
            with fake.lock:
                items = [
                    fake.milestone_json(m)
                    for m in fake.milestones
                    if state == "all" or m["state"] == state
                ]
            try:
                self._paged(items, query, "/milestones")
            except _Reply as reply:
                # GitHub's page links keep the other parameters, state among them.
                if "Link" in reply.headers:
                    reply.headers["Link"] = reply.headers["Link"].replace(
                        "?per_page=", f"?state={state}&per_page="
                    )
                raise

        def _list_issues(self, query: dict[str, list[str]], **_: Any) -> None:
            # GitHub's shape: labels as objects, the milestone as an object, pull requests mixed in.
            state = (query.get("state") or ["open"])[0]
            wanted = [x for x in (query.get("labels") or [""])[0].split(",") if x]
            with fake.lock:
                titles = {m["number"]: m["title"] for m in fake.milestones}
                items = []
                for issue in fake.issues:
                    names = list(issue.get("labels") or [])
                    if state != "all" and issue.get("state", "open") != state:
                        continue
                    if not all(w in names for w in wanted):
                        continue
                    number = issue.get("milestone")
                    shown = {
                        k: v for k, v in issue.items() if k not in ("labels", "milestone", "state")
                    }
                    items.append(
                        {
                            **shown,
                            "state": issue.get("state", "open"),
                            "labels": [{"name": n, "color": "ededed"} for n in names],
                            "milestone": {"number": number, "title": titles[number]}
                            if number in titles
                            else None,
                        }
                    )
            items.sort(key=lambda i: -int(i["number"]))  # GitHub lists the newest first
            try:
                self._paged(items, query, "/issues")
            except _Reply as reply:
                if "Link" in reply.headers:
                    reply.headers["Link"] = reply.headers["Link"].replace(
                        "?per_page=", f"?state={state}&labels={','.join(wanted)}&per_page="
                    )
                raise

        def _create_issue(self, access: str | None, **_: Any) -> None:
            self._need_write(
                access, "https://docs.github.com/rest/issues/issues#create-an-issue", "issues=write"
            )
            data = self._json_body()
            if not isinstance(data.get("title"), str) or not data["title"]:
                raise _Reply(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {"resource": "Issue", "code": "missing_field", "field": "title"}
                        ],
                    },
                )
            milestone = data.get("milestone")
            with fake.lock:
                if milestone is not None and not any(
                    m["number"] == milestone for m in fake.milestones
                ):
                    raise _Reply(
                        422,
                        {
                            "message": "Validation Failed",
                            "errors": [
                                {
                                    "resource": "Issue",
                                    "code": "invalid",
                                    "field": "milestone",
                                    "value": milestone,
                                }
                            ],
                        },
                    )
                number = len(fake.issues) + 1
                issue = {
                    **data,
                    "number": number,
                    "html_url": f"https://github.com/{fake.owner}/{fake.repo}/issues/{number}",
                    "created_at": _iso(fake.now()),
                }
                fake.issues.append(issue)
                answer = {**fake.issue_json(number, data), "created_at": issue["created_at"]}
            raise _Reply(201, answer)

        def _get_release(self, release_id: str, access: str | None, **_: Any) -> None:
            raise _Reply(200, fake.release_json(self._find_release(int(release_id), access)))

        def _update_release(self, release_id: str, access: str | None, **_: Any) -> None:
            self._need_write(access)
            data = self._json_body()
            with fake.lock:
                release = self._find_release(int(release_id), access)
                if data.get("draft") is False and release.draft:
                    other = fake.release(release.tag_name, drafts=False)
                    if other is not None and other is not release:
                        raise _already_exists("Release", "tag_name")
                    release.draft = False
                for key in ("name", "body", "prerelease", "target_commitish"):
                    if key in data:
                        setattr(release, key, data[key])
                body = fake.release_json(release)
            raise _Reply(200, body)

        def _list_assets(
            self, release_id: str, query: dict[str, list[str]], access: str | None
        ) -> None:
            with fake.lock:
                release = self._find_release(int(release_id), access)
                items = [fake.asset_json(release, a) for a in release.assets]
            self._paged(items, query, f"/releases/{release_id}/assets")

        def _get_asset(self, asset_id: str, access: str | None, **_: Any) -> None:
            release, asset = self._find_asset(int(asset_id), access)
            if self.headers.get("Accept") == "application/octet-stream":
                # GitHub answers with a short-lived signed URL on another host.
                signature = hashlib.sha256(f"{asset.id}:{fake.repo_id}".encode()).hexdigest()
                location = f"{fake.uploads_url}/objects/{asset.id}?signature={signature}"
                raise _Reply(302, b"", {"Location": location})
            raise _Reply(200, fake.asset_json(release, asset))

        def _object(self, asset_id: int, query: dict[str, list[str]]) -> None:
            with fake.lock:
                found = [a for r in fake.releases for a in r.assets if a.id == asset_id]
            signature = hashlib.sha256(f"{asset_id}:{fake.repo_id}".encode()).hexdigest()
            if not found or (query.get("signature") or [""])[0] != signature:
                raise _Reply(403, b"<Error><Code>AccessDenied</Code></Error>")
            asset = found[0]
            data = fake.served.get(asset.name, asset.data)
            raise _Reply(
                200, data, {"Content-Type": "application/octet-stream"}, download=asset.name
            )

        def _update_asset(self, asset_id: str, access: str | None, **_: Any) -> None:
            self._need_write(access)
            data = self._json_body()
            with fake.lock:
                release, asset = self._find_asset(int(asset_id), access)
                name = data.get("name", asset.name)
                clash = release.asset(name)
                if clash is not None and clash is not asset:
                    raise _already_exists("ReleaseAsset", "name")
                asset.name = name
                asset.label = data.get("label", asset.label) or ""
                body = fake.asset_json(release, asset)
            raise _Reply(200, body)

        def _delete_asset(self, asset_id: str, access: str | None, **_: Any) -> None:
            self._need_write(access)
            with fake.lock:
                release, asset = self._find_asset(int(asset_id), access)
                release.assets.remove(asset)
            raise _Reply(204)

        def _upload(self, release_id: int, query: dict[str, list[str]], access: str | None) -> None:
            length = self.headers.get("Content-Length")
            content_type = self.headers.get("Content-Type")
            if length is None:
                raise _error(411, "Length Required")
            data = self._read_body()
            self._need_write(access)
            name = (query.get("name") or [""])[0]
            if not name:
                raise _Reply(
                    422,
                    {
                        "message": "Validation Failed",
                        "errors": [
                            {"resource": "ReleaseAsset", "code": "missing_field", "field": "name"}
                        ],
                        "documentation_url": DOCS,
                    },
                )
            if not content_type:
                raise _error(422, "Content-Type header is required")
            with fake.lock:
                release = self._find_release(release_id, access)
                if release.asset(name) is not None:
                    raise _already_exists("ReleaseAsset", "name")
                if fake.corrupt_uploads > 0 and data:
                    fake.corrupt_uploads -= 1
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                asset = fake.add_asset(release, name, data, content_type)
                asset.label = (query.get("label") or [""])[0]
                body = fake.asset_json(release, asset)
            raise _Reply(201, body)

        def _download(self, tag: str, name: str) -> None:
            release = fake.release(tag, drafts=False)
            asset = release.asset(name) if release else None
            if asset is None or asset.state != "uploaded":
                raise _Reply(404, b"Not Found")
            raise _Reply(200, asset.data, {"Content-Type": "application/octet-stream"})

    return Handler


class _Dropped(Exception):
    """The connection was dropped on purpose."""


def iter_public_assets(fake: FakeGitHub, tag: str) -> Iterator[dict[str, Any]]:
    """The assets of `tag` as an anonymous client sees them (for assertions without HTTP)."""
    release = fake.release(tag, drafts=False)
    if release is not None:
        yield from (fake.asset_json(release, a) for a in release.assets)


# --- shared by the publish tests ---------------------------------------------------------

# Distinctive, so a test can grep every output for it.
TOKEN = "ghs_SEVIMGtestTOKEN7fa3c91b0d2e4c58"
READ_TOKEN = "ghs_SEVIMGreadONLY5b1e0c7a9d3f2468"


class FakeClock:
    """A clock that never sleeps: it records each wait and moves time on."""

    def __init__(self, start: float = 1_780_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
