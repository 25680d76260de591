"""sevimg_cert.peerhttp against hostile peers on 127.0.0.1: one deadline, a cap, redirects, escapes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sevimg_cert import peerhttp
from sevimg_cert.dispatch import Retry, Server, booted
from sevimg_cert.kds import Kds, KdsError
from sevimg_cert.peerhttp import Deadline, PeerError, PeerRefused, PeerTimeout, exchange, shown
from tests.hostilekit import Script, TickingClock, answer, hang, hostile, stream

ESC = "\x1b[2J\x1b]0;owned\x07"


def test_a_plain_answer() -> None:
    with hostile(answer("200 OK", b"hello")) as peer:
        got = exchange(peer.url, deadline=Deadline(5), max_body=100)
    assert (got.status, got.body) == (200, b"hello")
    assert peer.requests[0].startswith(b"GET / HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "script",
    [
        hang(),
        hang(b"HTTP/1.1 200 OK\r\n"),
        hang(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    ],
    ids=["silent", "after-the-status-line", "mid-body"],
)
def test_a_peer_that_hangs_ends_at_the_deadline(script: Script) -> None:
    with hostile(script) as peer, pytest.raises(PeerTimeout, match="within 0.2 s"):
        exchange(peer.url, deadline=Deadline(0.2), max_body=100, read_timeout=30)


@pytest.mark.parametrize(
    ("head", "unit"),
    [
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n", b"x"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n"),
    ],
    ids=["endless-100-continue", "dripping-body", "dripping-chunks"],
)
def test_a_peer_that_keeps_talking_cannot_hold_past_the_whole_deadline(
    head: bytes, unit: bytes
) -> None:
    # Every read gets bytes at once, so a per-read timeout never fires; the clock
    # moving one second per read ends it at the exchange's deadline.
    with hostile(stream(head, unit)) as peer, pytest.raises(PeerTimeout, match="within 50 s"):
        exchange(
            peer.url,
            deadline=Deadline(50, TickingClock()),
            max_body=1 << 30,
            read_timeout=30,
        )


def test_an_answer_over_the_cap_is_refused() -> None:
    with hostile(answer("200 OK", b"x" * 101)) as peer, pytest.raises(PeerRefused, match="100"):
        exchange(peer.url, deadline=Deadline(5), max_body=100)


def test_escapes_in_a_status_line_never_reach_a_message() -> None:
    with hostile(answer(f"500 {ESC}")) as peer:
        got = exchange(peer.url, deadline=Deadline(5), max_body=100)
    assert got.status == 500 and "\x1b" not in got.reason and "\\x1b" in got.reason
    with (
        hostile(hang(f"HTTP/1.1 {ESC}\r\n\r\n".encode())) as peer,
        pytest.raises(PeerError) as info,
    ):
        exchange(peer.url, deadline=Deadline(5), max_body=100)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)


def test_get_follows_redirects_and_credentials_stay_with_their_host() -> None:
    redirect = "Location: {}x"
    with (
        hostile(answer("200 OK", b"there")) as there,
        hostile(answer("302 Found", headers=(redirect.format(there.url),))) as here,
    ):
        url = here.url.replace("http://", "http://lab:pw@")
        got = exchange(url, deadline=Deadline(5), max_body=100, redirects=3)
    assert got.body == b"there" and got.url == there.url + "x"
    assert b"Authorization: Basic" in here.requests[0]
    assert b"Authorization" not in there.requests[0]


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_post_and_put_follow_no_redirect(method: str) -> None:
    with hostile(answer("200 OK")) as there:
        moved = answer("307 Temporary", headers=(f"Location: {there.url}",))
        with hostile(moved) as here:
            got = exchange(here.url, method, b"{}", deadline=Deadline(5), max_body=100, redirects=3)
    assert got.status == 307 and len(here.requests) == 1 and there.requests == []


@pytest.mark.parametrize(
    ("start", "location", "problem"),
    [
        ("http://a/x", "ftp://b/y", "not http"),
        ("http://a/x", "file:///etc/passwd", "not http"),
        ("https://a/x", "http://a/y", "from https"),
        ("https://a/x", "//b/y", None),
        ("http://a/x", "https://b/y", None),
        ("http://a/x", "/y", None),
    ],
)
def test_the_redirect_rule(start: str, location: str, problem: str | None) -> None:
    if problem is None:
        assert peerhttp.redirect_target(start, location).startswith(("http://", "https://"))
    else:
        with pytest.raises(PeerRefused, match=problem):
            peerhttp.redirect_target(start, location)


def test_redirect_loops_end() -> None:
    with (
        hostile(answer("301 Moved", headers=("Location: /",))) as peer,
        pytest.raises(PeerRefused, match="more than 3 redirects"),
    ):
        exchange(peer.url, deadline=Deadline(5), max_body=100, redirects=3)
    assert len(peer.requests) == 4


@given(st.binary(max_size=600))
def test_any_answer_is_an_answer_or_a_peer_error(raw: bytes) -> None:
    with hostile(hang(raw)) as peer:
        peer.release.set()  # answer, then close at once
        try:
            got = exchange(peer.url, deadline=Deadline(5), max_body=1000)
        except PeerError as error:
            assert all(c.isprintable() for c in str(error))
        else:
            assert 100 <= got.status <= 999 and got.reason.isprintable()


@given(st.text(max_size=300))
def test_shown_is_printable_and_bounded(text: str) -> None:
    out = shown(text, 50)
    assert out.isprintable() and "\x1b" not in out
    assert len(out) <= 50 * 10 + 1


def test_the_reporter_follows_no_redirect_and_escapes_what_dispatch_says() -> None:
    said: list[str] = []
    retry = Retry(attempts=2, first_delay=0, timeout=5)
    with hostile(answer("200 OK")) as there:
        moved = answer(f"302 {ESC}", headers=(f"Location: {there.url}",))
        with hostile(moved) as here:
            took = booted([Server(here.url, "test")], retry=retry, say=said.append)
    assert took is None and len(here.requests) == 1 and there.requests == []
    assert any("not followed for POST" in line for line in said)
    assert not any("\x1b" in line or "\x07" in line for line in said)


def test_a_dripping_dispatch_cannot_hold_the_reporter_past_its_deadline() -> None:
    said: list[str] = []
    retry = Retry(attempts=3, first_delay=0, timeout=30)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"
    with hostile(stream(head, b"x")) as peer:
        took = booted(
            [Server(peer.url, "test")],
            retry=retry,
            say=said.append,
            deadline=Deadline(40, TickingClock()),
        )
    assert took is None
    assert any("within 40 s" in line for line in said), said


def test_a_dripping_kds_cannot_hold_the_client_past_its_budget() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"
    with hostile(stream(head, b"x")) as peer:
        client = Kds(
            peer.url.rstrip("/"), attempts=3, budget=60, clock=TickingClock(), sleep=lambda s: None
        )
        with pytest.raises(KdsError, match="could not be reached"):
            client.get(peer.url + "x")


def test_kds_refuses_a_redirect_to_another_scheme() -> None:
    moved = answer("302 Found", headers=("Location: ftp://127.0.0.1/x",))
    with hostile(moved) as peer, pytest.raises(KdsError, match="not http"):
        Kds(peer.url.rstrip("/")).get(peer.url + "x")
    assert len(peer.requests) == 1
