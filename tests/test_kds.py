"""AMD KDS client against a fake KDS (a real HTTP server on 127.0.0.1): URLs, retries, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest

from sevimg_cert.kds import MAX_RESPONSE, Kds, KdsError, KdsRefused, check_base_url, retry_after
from sevimg_cert.redact import redact
from sevimg_cert.report import Product, parse_report
from sevimg_cert.verify import Expected, verify
from tests import certkit as kit
from tests.certkit import MEASUREMENT, NONCE, ReportSpec
from tests.fakekds import FakeKds, closed_port_url, serve


class Sleeps:
    """Stands in for time.sleep: remembers for how long the client would wait, returns at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def fake(product: str = "Genoa") -> FakeKds:
    synth = kit.make_chain(product)
    hwid = (kit.TURIN_CHIP_ID[:8] if product == "Turin" else kit.CHIP_ID).hex()
    return FakeKds(chain=synth, product=product, hwid=hwid)


def spec(product: str, version: int = 5) -> ReportSpec:
    return (
        kit.turin_spec(version=version)
        if product == "Turin"
        else ReportSpec(product=product, version=version)
    )


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_vcek_urls_have_kds_form(product: str) -> None:
    report = parse_report(kit.signed_report(spec(product)))
    url = Kds("https://kdsintf.amd.com/").vcek_url(report, Product(product))
    if product == "Turin":
        assert url == (
            "https://kdsintf.amd.com/vcek/v1/Turin/0123456789abcdef?fmcSPL=02&blSPL=01&teeSPL=00&snpSPL=04&ucodeSPL=72"
        )
    else:
        assert url == (
            f"https://kdsintf.amd.com/vcek/v1/{product}/{kit.CHIP_ID.hex()}?blSPL=03&teeSPL=00&snpSPL=23&ucodeSPL=213"
        )
    assert (
        Kds().chain_url(Product(product)) == f"https://kdsintf.amd.com/vcek/v1/{product}/cert_chain"
    )


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@pytest.mark.parametrize(
    ("route", "status"),
    [("vcek", 429), ("chain", 429), ("vcek", 500), ("vcek", 502), ("chain", 503), ("vcek", 504)],
)
def test_a_transient_kds_error_is_retried_and_the_report_verifies(
    product: str, route: str, status: int
) -> None:
    state = fake(product)
    state.faults[route] = [status]
    sleeps = Sleeps()
    with serve(state):
        client = Kds(state.url, backoff=0.01, sleep=sleeps)
        raw = kit.signed_report(spec(product))
        result = verify(
            raw,
            client.fetch,
            Expected(NONCE, MEASUREMENT, 0, (state.chain.ark,)),
        )
    assert result.passed, [c for c in result.checks if c.verdict != "pass"]
    assert state.seen(route) == 2 and state.seen("unknown") == 0
    assert sleeps.waits == [0.0]  # Retry-After: 0 was honoured
    assert result.chain is not None and result.chain.sources["vcek"].startswith(
        f"{state.url}/vcek/v1/{product}/"
    )
    query = next(q for k, _, q in state.requests if k == "vcek")
    assert query["snpSPL"] == [f"{(kit.TURIN_TCB if product == 'Turin' else kit.Tcb()).snp:02d}"]
    assert ("fmcSPL" in query) == (product == "Turin")


def test_429_then_200_verifies_with_two_requests() -> None:
    state = fake()
    state.faults["vcek"] = [429]
    state.retry_after = "7"
    sleeps = Sleeps()
    with serve(state):
        client = Kds(state.url, sleep=sleeps)
        result = verify(
            kit.signed_report(), client.fetch, Expected(NONCE, MEASUREMENT, 0, (state.chain.ark,))
        )
    assert result.passed
    assert state.seen("vcek") == 2 and state.seen("chain") == 1
    assert sleeps.waits == [7.0]  # it waited as Retry-After said


def test_backoff_doubles_without_retry_after_and_is_capped() -> None:
    state = fake()
    state.faults["chain"] = [503, 503, 503]
    state.retry_after = None
    sleeps = Sleeps()
    with serve(state):
        Kds(state.url, backoff=0.01, max_wait=0.03, sleep=sleeps).fetch_chain(Product.GENOA)
    assert sleeps.waits == [0.01, 0.02, 0.03]


def test_a_kds_that_keeps_failing_gives_up_after_the_attempts() -> None:
    state = fake()
    state.faults["vcek"] = [429] * 10
    with serve(state):
        client = Kds(state.url, attempts=4, backoff=0.01, sleep=Sleeps())
        report = parse_report(kit.signed_report())
        with pytest.raises(KdsError, match=r"could not be reached after 4 attempts .*HTTP 429"):
            client.fetch(report)
    assert state.seen("vcek") == 4


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_a_permanent_kds_error_is_not_retried(status: int) -> None:
    state = fake()
    state.faults["vcek"] = [status]
    with serve(state), pytest.raises(KdsError, match=f"HTTP {status}"):
        Kds(state.url, backoff=0.01).fetch(parse_report(kit.signed_report()))
    assert state.seen("vcek") == 1


def test_a_chip_kds_does_not_know_is_a_404_with_a_hint() -> None:
    state = fake()
    with serve(state):
        report = parse_report(kit.signed_report(ReportSpec(chip_id=b"\x01" * 64)))
        with pytest.raises(KdsError, match="HTTP 404 .*KDS knows no such chip"):
            Kds(state.url).fetch(report)


@pytest.mark.parametrize(
    ("route", "body", "reason"),
    [
        ("vcek", b"", "not an X.509 certificate"),
        ("vcek", b"<html>maintenance</html>", "not an X.509 certificate"),
        (
            "chain",
            b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
            "not an X.509 certificate",
        ),
        ("chain", kit.pem(kit.make_chain().ask), "1 certificates, expected the ASK and the ARK"),
    ],
)
def test_kds_answers_that_are_not_certificates_are_clean_errors(
    route: str, body: bytes, reason: str
) -> None:
    state = fake()
    state.bodies[route] = body
    with serve(state), pytest.raises(KdsError, match=reason):
        Kds(state.url).fetch(parse_report(kit.signed_report()))


def test_an_unreachable_kds_is_a_clean_error_naming_it() -> None:
    url = closed_port_url()
    sleeps = Sleeps()
    with pytest.raises(
        KdsError, match=rf"AMD KDS at {url} could not be reached after 3 attempts"
    ) as info:
        Kds(url, attempts=3, backoff=0.01, sleep=sleeps).fetch(parse_report(kit.signed_report()))
    assert "refused" in str(info.value).lower() and sleeps.waits == [0.01, 0.02]


def test_credentials_in_the_kds_url_are_sent_but_never_shown() -> None:
    state = fake()
    state.faults["vcek"] = [404]
    with serve(state):
        url = state.url.replace("http://", "http://lab:s3cr%40t@")
        with pytest.raises(KdsError) as info:
            Kds(url).fetch(parse_report(kit.signed_report()))
    assert "s3cr" not in str(info.value) and "lab:" not in str(info.value)
    assert state.authorizations == ["Basic bGFiOnMzY3JAdA=="]  # lab:s3cr@t
    unreachable = closed_port_url().replace("http://", "http://lab:hunter2@")
    with pytest.raises(KdsError) as info:
        Kds(unreachable, attempts=1).fetch(parse_report(kit.signed_report()))
    assert "hunter2" not in str(info.value)


def test_a_masked_chip_id_cannot_be_fetched() -> None:
    report = parse_report(kit.signed_report(ReportSpec(chip_id=bytes(64))))
    with pytest.raises(KdsError, match="chip ID is masked"):
        Kds("http://127.0.0.1:9").fetch(report)


@pytest.mark.parametrize("product", ["Milan", "Genoa"])
def test_a_version_2_report_is_looked_up_under_each_product_that_writes_one(product: str) -> None:
    state = fake(product)
    with serve(state):
        report = parse_report(kit.signed_report(ReportSpec(version=2, product=product)))
        assert report.product is None
        chain = Kds(state.url).fetch(report)
    assert chain.vcek == state.chain.vcek
    asked = [
        urlsplit(path).path.split("/")[3] for kind, path, _ in state.requests if kind != "chain"
    ]
    # Milan first; a 404 there is KDS not knowing the chip as Milan, then Genoa.
    assert asked == (["Milan"] if product == "Milan" else ["Milan", "Genoa"])
    assert state.seen("chain") == 1


def test_a_version_2_report_kds_knows_under_no_product_asks_for_it() -> None:
    state = fake("Milan")
    state.hwid = "00" * 63 + "01"  # KDS knows another chip only
    with serve(state):
        report = parse_report(kit.signed_report(ReportSpec(version=2, product="Milan")))
        with pytest.raises(KdsRefused) as info:
            Kds(state.url).fetch(report)
        named = Kds(state.url).fetch
        with pytest.raises(KdsRefused, match="HTTP 404"):
            named(report, Product.MILAN)
    message = str(info.value)
    assert "does not say which processor made it" in message
    assert "as Milan: HTTP 404; as Genoa: HTTP 404" in message
    assert "--product milan or genoa" in message and state.seen("chain") == 0


def test_a_version_2_lookup_stops_at_an_error_that_is_not_a_no() -> None:
    # A KDS that fails (503 to the end) has not said the chip is not Milan: no other product is tried.
    state = fake("Genoa")
    state.faults["unknown"] = [503, 503]
    state.retry_after = None
    with serve(state):
        report = parse_report(kit.signed_report(ReportSpec(version=2, product="Genoa")))
        with pytest.raises(KdsError) as info:
            Kds(state.url, attempts=2, sleep=lambda _: None).fetch(report)
    assert not isinstance(info.value, KdsRefused)
    assert "could not be reached after 2 attempts" in str(info.value)
    assert state.seen("vcek") == 0 and state.seen("unknown") == 2


@pytest.mark.parametrize(
    "url",
    [
        "",
        "kdsintf.amd.com",
        "ftp://kdsintf.amd.com",
        "file:///etc/passwd",
        "http://",
        "https://:443",
        "http://host:port",
        "http://host:99999",
        "https://kds/?x=1",
        "https://kds/#frag",
        "javascript:alert(1)",
        "http://kds example/",
        "http://kds.example/\n",
        "http://kds.example/\x00",
    ],
)
def test_bad_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        check_base_url(url)
    with pytest.raises(ValueError):
        Kds(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://kdsintf.amd.com", "https://kdsintf.amd.com"),
        ("http://u:p@h:8080/x", "http://h:8080/x"),
        ("http://u@h/", "http://h/"),
        ("http://u:p@[::1]:80/", "http://[::1]:80/"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("7") == 7.0 and retry_after(" 0 ") == 0.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "-1", "1.5e9x"):
        assert retry_after(bad) is None


def test_a_host_name_that_cannot_be_encoded_is_a_clean_error() -> None:
    client = Kds("http://" + "a" * 70 + ".example", backoff=0.01)
    with pytest.raises(KdsError, match="aaaa"):
        client.fetch(parse_report(kit.signed_report()))


def test_a_version_2_lookup_refused_for_want_of_credentials_is_not_taken_as_a_no() -> None:
    state = fake("Genoa")
    state.faults["unknown"] = [403]
    with serve(state):
        report = parse_report(kit.signed_report(ReportSpec(version=2, product="Genoa")))
        with pytest.raises(KdsRefused) as info:
            Kds(state.url, attempts=1).fetch(report)
    assert info.value.status == 403 and "/vcek/v1/Milan/" in str(info.value)
    assert state.seen("vcek") == 0  # Genoa was not asked: a 403 says nothing about the chip


def test_an_answer_over_the_cap_names_kds_and_the_url_once() -> None:
    state = fake()
    state.bodies["vcek"] = b"x" * (MAX_RESPONSE + 1)
    with serve(state), pytest.raises(KdsError) as raised:
        Kds(state.url).fetch(parse_report(kit.signed_report()))
    message = str(raised.value)
    assert message.startswith(f"AMD KDS at {state.url}: ") and "larger than" in message
    assert message.count("/vcek/v1/") == 1, message
