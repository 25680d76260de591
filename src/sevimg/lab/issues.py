"""Certificate issues of a repository as records (`sevimg matrix --github-issues OWNER/REPO`).

Lists `GET /repos/O/R/issues?state=all&labels=certificate` through the
client `sevimg publish` and `serve` use (:class:`sevimg.release.github_api.Api`:
headers, retries, rate limits, pagination, token scrubbing). Pull requests
are left out; every field is checked before it is used.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sevimg.lab.records import Record
from sevimg.release.github_api import PER_PAGE, Api, GitHubError

_MAX_PAGES = 100  # 10 000 certificate issues


def _names(labels: Any) -> tuple[str, ...]:
    out: list[str] = []
    for label in labels if isinstance(labels, list) else []:
        name = label.get("name") if isinstance(label, dict) else label
        if isinstance(name, str):
            out.append(name)
    return tuple(out)


def issue_record(item: dict[str, Any]) -> Record | None:
    """A record of one issue from GitHub's list; None for a pull request or a malformed entry."""
    if "pull_request" in item:
        return None
    number, title = item.get("number"), item.get("title")
    if not isinstance(number, int) or not isinstance(title, str):
        return None
    milestone = item.get("milestone")
    milestone_title = milestone.get("title") if isinstance(milestone, dict) else None
    url = item.get("html_url")
    created = item.get("created_at")
    return Record(
        title=title,
        labels=_names(item.get("labels")),
        milestone=milestone_title if isinstance(milestone_title, str) else None,
        when=created if isinstance(created, str) else "",
        link=url if isinstance(url, str) and url.startswith("https://") else "",
        key=f"issue {number:010d}",
    )


class CertificateIssues(Api):
    """The issues labelled `certificate` of one repository."""

    def records(self) -> list[Record]:
        """Every certificate issue (open and closed) as a record; GitHubError when GitHub refuses."""
        what = f"listing the certificate issues of {self.repo}"
        params: dict[str, Any] | None = {
            "state": "all",
            "labels": "certificate",
            "per_page": PER_PAGE,
        }
        url: str | None = self._url("/issues")
        found: list[Record] = []
        for _ in range(_MAX_PAGES):
            if url is None:
                return found
            response = self._send("GET", url, what=what, params=params)
            for item in self._json(response, list):
                if isinstance(item, dict) and (record := issue_record(item)) is not None:
                    found.append(record)
            url, params = response.links.get("next", {}).get("url"), None
            if url and urlsplit(url).netloc != urlsplit(self.api_url).netloc:
                raise GitHubError(f"{what}: GitHub's next-page link points to another host")
        raise GitHubError(f"{what}: more than {_MAX_PAGES} pages; giving up")
