"""The fake GitHub answers in the shapes GitHub documents, so tests against it mean something.

The schemas below hold, for each answer the fake serves (a release, a release
asset, an issue, a milestone, an error), the fields GitHub's REST reference
marks required (github/rest-api-description, API version 2022-11-28) with
their types; `additionalProperties` stays open, as GitHub adds fields. The
calls go over real HTTP to the fake on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest

from tests.fakegithub import READ_TOKEN, TOKEN, FakeGitHub

STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
NULLABLE_STR = {"type": ["string", "null"]}
DATE = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
NULLABLE_DATE = {"type": ["string", "null"], "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"}
URL = {"type": "string", "pattern": r"^https?://"}


def _object(**fields: Any) -> dict[str, Any]:
    return {"type": "object", "required": sorted(fields), "properties": fields}


SIMPLE_USER = _object(login=STR, id=INT, node_id=STR, type=STR, url=URL, html_url=URL)
RELEASE_ASSET = _object(
    url=URL,
    browser_download_url=URL,
    id=INT,
    node_id=STR,
    name=STR,
    label=NULLABLE_STR,
    state={"enum": ["uploaded", "open", "starter"]},
    content_type=STR,
    size=INT,
    digest={"type": ["string", "null"], "pattern": "^sha256:[0-9a-f]{64}$"},
    download_count=INT,
    created_at=DATE,
    updated_at=DATE,
    uploader={"type": ["object", "null"], "required": ["login", "id", "type"]},
)
RELEASE = _object(
    url=URL,
    html_url=URL,
    assets_url=URL,
    upload_url={"type": "string", "pattern": r"^https?://.*/assets\{\?name,label\}$"},
    tarball_url={"type": ["string", "null"]},
    zipball_url={"type": ["string", "null"]},
    id=INT,
    node_id=STR,
    tag_name=STR,
    target_commitish=STR,
    name=NULLABLE_STR,
    body=NULLABLE_STR,
    draft=BOOL,
    prerelease=BOOL,
    created_at=DATE,
    published_at=NULLABLE_DATE,
    author={"type": "object", "required": ["login", "id", "type"]},
    assets={"type": "array", "items": RELEASE_ASSET},
)
MILESTONE = _object(
    url=URL,
    html_url=URL,
    labels_url=URL,
    id=INT,
    node_id=STR,
    number=INT,
    state={"enum": ["open", "closed"]},
    title=STR,
    description=NULLABLE_STR,
    creator={"type": ["object", "null"]},
    open_issues=INT,
    closed_issues=INT,
    created_at=DATE,
    updated_at=DATE,
    closed_at=NULLABLE_DATE,
    due_on=NULLABLE_DATE,
)
LABEL = _object(id=INT, node_id=STR, url=URL, name=STR, color=STR, default=BOOL)
ISSUE = _object(
    id=INT,
    node_id=STR,
    url=URL,
    repository_url=URL,
    labels_url=STR,
    comments_url=URL,
    events_url=URL,
    html_url=URL,
    number=INT,
    state=STR,
    title=STR,
    body=NULLABLE_STR,
    user={"type": ["object", "null"]},
    labels={"type": "array", "items": LABEL},
    assignee={"type": ["object", "null"]},
    assignees={"type": ["array", "null"]},
    milestone={"anyOf": [{"type": "null"}, MILESTONE]},
    locked=BOOL,
    comments=INT,
    created_at=DATE,
    updated_at=DATE,
    closed_at=NULLABLE_DATE,
    author_association=STR,
)
BASIC_ERROR = _object(message=STR, documentation_url=URL)
VALIDATION_ERROR = _object(
    message={"const": "Validation Failed"},
    errors={
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "required": ["resource", "code", "field"]},
    },
)


def valid(instance: object, schema: dict[str, Any]) -> None:
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)


def api(fake: FakeGitHub, token: str | None = TOKEN) -> httpx.Client:
    headers = {
        "User-Agent": "sevimg-tests",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(headers=headers, timeout=30)


@pytest.fixture
def repo(fake: FakeGitHub) -> str:
    return f"{fake.api_url}/repos/{fake.owner}/{fake.repo}"


def test_a_release_and_its_assets_have_github_s_shapes(fake: FakeGitHub, repo: str) -> None:
    with api(fake) as gh:
        created = gh.post(f"{repo}/releases", json={"tag_name": "v1", "name": "one"})
        assert created.status_code == 201
        release = created.json()
        valid(release, RELEASE)
        upload = release["upload_url"].split("{")[0]
        assert upload.startswith(fake.uploads_url)  # uploads go to the other host, as on GitHub
        sent = gh.post(
            upload,
            params={"name": "a.efi", "label": "A"},
            content=b"MZ",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert sent.status_code == 201
        asset = sent.json()
        valid(asset, RELEASE_ASSET)
        assert asset["state"] == "uploaded" and asset["size"] == 2 and asset["label"] == "A"
        for url in (f"{repo}/releases/{release['id']}", f"{repo}/releases/tags/v1"):
            got = gh.get(url)
            assert got.status_code == 200
            valid(got.json(), RELEASE)
            assert [a["name"] for a in got.json()["assets"]] == ["a.efi"]
        listed = gh.get(f"{repo}/releases")
        valid(listed.json(), {"type": "array", "items": RELEASE})
        assets = gh.get(f"{repo}/releases/{release['id']}/assets")
        valid(assets.json(), {"type": "array", "items": RELEASE_ASSET})
        patched = gh.patch(f"{repo}/releases/assets/{asset['id']}", json={"label": "B"})
        assert patched.status_code == 200 and patched.json()["label"] == "B"
        valid(patched.json(), RELEASE_ASSET)
        download = gh.get(asset["browser_download_url"])
        assert download.status_code == 200 and download.content == b"MZ"
        assert gh.delete(f"{repo}/releases/assets/{asset['id']}").status_code == 204


def test_an_issue_and_milestones_have_github_s_shapes(fake: FakeGitHub, repo: str) -> None:
    number = fake.add_milestone("c3.0.0-0")
    fake.add_milestone("old", state="closed")
    with api(fake) as gh:
        listed = gh.get(f"{repo}/milestones", params={"state": "all"})
        assert listed.status_code == 200
        valid(listed.json(), {"type": "array", "items": MILESTONE, "minItems": 2})
        assert [m["title"] for m in gh.get(f"{repo}/milestones").json()] == ["c3.0.0-0"]
        filed = gh.post(
            f"{repo}/issues",
            json={"title": "t", "body": "b", "labels": ["certificate"], "milestone": number},
        )
        assert filed.status_code == 201
        issue = filed.json()
        valid(issue, ISSUE)
        assert [label["name"] for label in issue["labels"]] == ["certificate"]
        assert issue["milestone"]["number"] == number and issue["number"] == 1


@pytest.mark.parametrize(
    ("method", "path", "token", "json", "status", "schema"),
    [
        ("GET", "/releases/tags/nope", TOKEN, None, 404, BASIC_ERROR),
        ("GET", "/releases", "wrong-token", None, 401, BASIC_ERROR),
        ("POST", "/releases", READ_TOKEN, {"tag_name": "v2"}, 403, BASIC_ERROR),
        ("POST", "/releases", TOKEN, {}, 422, VALIDATION_ERROR),
        ("POST", "/issues", TOKEN, {"body": "no title"}, 422, VALIDATION_ERROR),
        ("POST", "/issues", TOKEN, {"title": "t", "milestone": 99}, 422, VALIDATION_ERROR),
    ],
)
def test_errors_have_github_s_shapes(
    fake: FakeGitHub,
    repo: str,
    method: str,
    path: str,
    token: str,
    json: dict[str, Any] | None,
    status: int,
    schema: dict[str, Any],
) -> None:
    with api(fake, token) as gh:
        answer = gh.request(method, f"{repo}{path}", json=json)
    assert answer.status_code == status, answer.text
    valid(answer.json(), schema)


def test_a_duplicate_is_422_already_exists(fake: FakeGitHub, repo: str) -> None:
    with api(fake) as gh:
        assert gh.post(f"{repo}/releases", json={"tag_name": "v1"}).status_code == 201
        again = gh.post(f"{repo}/releases", json={"tag_name": "v1"})
    assert again.status_code == 422
    valid(again.json(), VALIDATION_ERROR)
    assert again.json()["errors"][0]["code"] == "already_exists"


def test_lists_page_with_link_headers_by_repository_id(fake: FakeGitHub, repo: str) -> None:
    for i in range(5):
        fake.add_release(f"v{i}")
    with api(fake) as gh:
        first = gh.get(f"{repo}/releases", params={"per_page": 2})
        assert set(first.links) == {"next", "last"}
        assert f"/repositories/{fake.repo_id}/releases?" in first.links["next"]["url"]
        pages, page = [first.json()], first
        while "next" in page.links:
            page = gh.get(page.links["next"]["url"])
            pages.append(page.json())
        assert set(page.links) == {"first", "prev"}
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sorted(r["tag_name"] for p in pages for r in p) == [f"v{i}" for i in range(5)]


def test_a_request_without_a_user_agent_is_refused_as_github_does(
    fake: FakeGitHub, repo: str
) -> None:
    answer = httpx.get(f"{repo}/releases", headers={"User-Agent": ""})
    assert answer.status_code == 403
    valid(answer.json(), BASIC_ERROR)
