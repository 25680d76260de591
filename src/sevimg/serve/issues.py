"""Filing reports as GitHub issues, the way dispatch does (`--github-issues OWNER/REPO`).

dispatch looks up every milestone's number by its title once at start
(`GET /repos/O/R/milestones?state=all`), and files each report with
`POST /repos/O/R/issues {title, body, labels, assignees, milestone}`; a
milestone it does not know is dropped and the issue is still filed. Unlike
dispatch, GitHub's answer is checked, and a refusal is an error the server
shows (and answers 500 for). The calls go through the client `sevimg
publish` uses (:class:`sevimg.release.github_api.Api`): the same headers,
retries, rate-limit handling and token scrubbing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sevimg.release.github_api import PER_PAGE, Api, GitHubError
from sevimg.serve.jobs import Report

_MAX_PAGES = 100  # 10 000 milestones


@dataclass(frozen=True)
class Filed:
    """An issue GitHub created."""

    number: int
    url: str
    milestone: int | None
    dropped_milestone: str | None  # the title asked for that GitHub does not know

    def as_json(self) -> dict[str, Any]:
        """For results.json."""
        return {
            "number": self.number,
            "url": self.url,
            "milestone": self.milestone,
            "dropped_milestone": self.dropped_milestone,
        }


class Issues(Api):
    """The issues and milestones of one repository."""

    milestones: dict[str, int]

    def load_milestones(self) -> dict[str, int]:
        """Every milestone's number by title (open and closed); also proves the token works."""
        self.milestones = {}
        what = "listing milestones"
        # Our own pages: the shared pager sends per_page only, and state=all must go too
        # (GitHub's next links carry both).
        params: dict[str, Any] | None = {"state": "all", "per_page": PER_PAGE}
        url: str | None = self._url("/milestones")
        for _ in range(_MAX_PAGES):
            if url is None:
                return self.milestones
            response = self._send("GET", url, what=what, params=params)
            for item in self._json(response, list):
                if not isinstance(item, dict):
                    continue
                title, number = item.get("title"), item.get("number")
                if isinstance(title, str) and isinstance(number, int):
                    self.milestones.setdefault(title, number)
            url, params = response.links.get("next", {}).get("url"), None
            if url and urlsplit(url).netloc != urlsplit(self.api_url).netloc:
                raise GitHubError(f"{what}: GitHub's next-page link points to another host")
        raise GitHubError(f"{what}: more than {_MAX_PAGES} pages; giving up")

    def file(self, report: Report) -> Filed:
        """File `report` as an issue; GitHubError (one line, no token) when GitHub refuses."""
        milestone = None if report.milestone is None else self.milestones.get(report.milestone)
        payload: dict[str, Any] = {
            "title": report.title,
            "body": report.body,
            "labels": list(report.labels),
            "assignees": list(report.assignees),
        }
        if milestone is not None:
            payload["milestone"] = milestone
        # Not retried on 5xx or a lost connection: GitHub may have filed it already.
        response = self._send(
            "POST",
            self._url("/issues"),
            what=f"filing the issue {report.title!r}",
            json=payload,
            ok=(201,),
            retry_errors=False,
        )
        data = self._json(response, dict)
        number = data.get("number")
        if not isinstance(number, int):
            raise GitHubError("filing the issue: GitHub's answer has no issue number")
        return Filed(
            number=number,
            url=str(data.get("html_url") or ""),
            milestone=milestone,
            dropped_milestone=report.milestone if milestone is None else None,
        )
