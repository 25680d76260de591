"""sevimg_cert has one retry policy and one redaction, used by KDS and dispatch alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sevimg_cert import dispatch, kds
from sevimg_cert.redact import redact
from sevimg_cert.retry import Retry
from tests.conftest import REPO


def test_the_backoff_doubles_up_to_the_cap() -> None:
    retry = Retry(attempts=6, first_delay=2.0, factor=2.0, max_delay=10.0)
    assert [retry.delay(n) for n in range(5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_servers_wish_is_believed_up_to_the_cap() -> None:
    retry = Retry(first_delay=2.0, max_delay=60.0)
    assert retry.delay(0, asked=7.0) == 7.0
    assert retry.delay(3, asked=0.0) == 0.0
    assert retry.delay(0, asked=86400.0) == 60.0  # a hostile Retry-After cannot stall a run
    assert retry.delay(0, asked=-5.0) == 0.0


def test_kds_and_dispatch_use_the_same_policy() -> None:
    client = kds.Kds("http://127.0.0.1:9", attempts=3, backoff=0.5, max_wait=4.0, timeout=7.0)
    assert client.retry == Retry(
        attempts=3, first_delay=0.5, factor=2.0, max_delay=4.0, timeout=7.0
    )
    assert dispatch.Retry is Retry


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@kds.example/vcek", "https://kds.example/vcek"),
        ("http://u:p@a@dispatch.lan:8080/x", "http://dispatch.lan:8080/x"),
        ("http://dispatch.lan/x", "http://dispatch.lan/x"),
        ("http://u:secret@[::1", "<unparsable URL>"),  # dispatch used to raise here
    ],
)
def test_one_redaction_for_every_url(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_no_second_policy_or_redaction_is_written() -> None:
    # Only retry.py defines a retry policy and only redact.py a redaction.
    found = []
    for path in sorted((REPO / "src/sevimg_cert").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "name", "")
            if isinstance(node, ast.ClassDef) and "retry" in name.lower():
                found.append(f"{path.name}: class {name}")
            if isinstance(node, ast.FunctionDef) and name.lower() in ("redact", "redact_url"):
                found.append(f"{path.name}: def {name}")
    assert sorted(found) == ["redact.py: def redact", "retry.py: class Retry"]


def test_the_pieces_live_in_sevimg_cert_only() -> None:
    for module in ("retry.py", "redact.py"):
        text = Path(REPO / "src/sevimg_cert" / module).read_text()
        assert "import sevimg\n" not in text and "from sevimg." not in text
