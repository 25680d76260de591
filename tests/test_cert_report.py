"""sevimg_cert: the report parser, the pinned AMD roots, and the package's import boundary."""

from __future__ import annotations

import ast
import hashlib
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sevimg_cert import roots
from sevimg_cert.certs import rsa_pss_problem
from sevimg_cert.report import Product, ReportError, parse_report, product_from_cpuid
from tests.certkit import CPUID, ReportSpec, Tcb, pack_report, turin_spec
from tests.conftest import examples

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "sevimg_cert"


def distinct_spec(version: int, product: str, seed: int = 1) -> ReportSpec:
    """A spec whose every field holds different bytes, so a field read at a wrong offset shows."""
    rng = random.Random(seed * 100 + version)
    turin = product == "Turin"

    def tcb() -> Tcb:
        return Tcb(
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(256),
            rng.randrange(256) if turin else None,
        )

    chip = rng.randbytes(8) + bytes(56) if turin else rng.randbytes(64)
    return ReportSpec(
        version=version,
        product=product,
        guest_svn=rng.getrandbits(32),
        policy=rng.getrandbits(64),
        family_id=rng.randbytes(16),
        image_id=rng.randbytes(16),
        vmpl=rng.randrange(4),
        signature_algo=1,
        platform_info=rng.getrandbits(64),
        key_info=rng.getrandbits(32),
        report_data=rng.randbytes(64),
        measurement=rng.randbytes(48),
        host_data=rng.randbytes(32),
        id_key_digest=rng.randbytes(48),
        author_key_digest=rng.randbytes(48),
        report_id=rng.randbytes(32),
        report_id_ma=rng.randbytes(32),
        chip_id=chip,
        current_tcb=tcb(),
        reported_tcb=tcb(),
        committed_tcb=tcb(),
        launch_tcb=tcb(),
        current_version=(rng.randrange(256), rng.randrange(256), rng.randrange(256)),
        committed_version=(rng.randrange(256), rng.randrange(256), rng.randrange(256)),
        launch_mit_vector=rng.getrandbits(64),
        current_mit_vector=rng.getrandbits(64),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@pytest.mark.parametrize("version", [2, 3, 5])
def test_every_field_of_every_version_parses(version: int, product: str, seed: int) -> None:
    spec = distinct_spec(version, product, seed)
    # A v2 report does not say Milan or Genoa: that is the caller's to say.
    given_product = Product(product) if version == 2 and product != "Turin" else None
    report = parse_report(bytes(pack_report(spec)), product=given_product)
    assert report.version == version and report.product is Product(product)
    for name in (
        "guest_svn",
        "policy",
        "family_id",
        "image_id",
        "vmpl",
        "platform_info",
        "key_info",
    ):
        assert getattr(report, name) == getattr(spec, name), name
    for name in ("report_data", "measurement", "host_data", "id_key_digest", "author_key_digest"):
        assert getattr(report, name) == getattr(spec, name), name
    assert (report.report_id, report.report_id_ma, report.chip_id) == (
        spec.report_id,
        spec.report_id_ma,
        spec.chip_id,
    )
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        got, want = getattr(report, name), getattr(spec, name)
        assert (got.bootloader, got.tee, got.snp, got.microcode, got.fmc) == (
            want.bl,
            want.tee,
            want.snp,
            want.ucode,
            want.fmc,
        ), name
    assert (
        report.current_version.major,
        report.current_version.minor,
        report.current_version.build,
    ) == spec.current_version
    assert (
        report.committed_version.major,
        report.committed_version.minor,
        report.committed_version.build,
    ) == spec.committed_version
    if version >= 3:
        assert (report.cpuid_family, report.cpuid_model, report.cpuid_stepping) == CPUID[product]
    else:
        assert report.cpuid_family is report.cpuid_model is report.cpuid_stepping is None
    if version >= 5:
        assert (report.launch_mit_vector, report.current_mit_vector) == (
            spec.launch_mit_vector,
            spec.current_mit_vector,
        )
    else:
        assert report.launch_mit_vector is report.current_mit_vector is None
    assert report.debug_allowed == bool(spec.policy & (1 << 19))
    assert (
        len(report.signed_bytes) == 0x2A0
        and report.as_dict()["measurement"] == spec.measurement.hex()
    )


@pytest.mark.parametrize("size", [0, 1, 4, 100, 0x2A0, 0x49F, 0x4A1, 2 * 0x4A0, 4096])
def test_wrong_sizes_are_named(size: int) -> None:
    data = (bytes(pack_report(ReportSpec())) * 4)[:size]
    with pytest.raises(
        ReportError, match=rf"{size} bytes; an SEV-SNP attestation report is 1184"
    ) as info:
        parse_report(data)
    assert ("truncated" in str(info.value)) == (size < 1184)


@pytest.mark.parametrize("version", [0, 1, 6, 7, 42, 255, 0x100, 0x02000000, 2**31, 2**32 - 1])
def test_unknown_versions_are_refused(version: int) -> None:
    data = bytearray(pack_report(ReportSpec()))
    data[0:4] = version.to_bytes(4, "little")
    with pytest.raises(
        ReportError,
        match=rf"report version {version} is not one this verifier knows \(2, 3, 4, 5\)",
    ):
        parse_report(bytes(data))


def test_version_4_reads_as_version_3() -> None:
    # go-sev-guest (abi.ReportVersion4) and virtee (ReportVariant::V3 for 3 | 4) both read it.
    report = parse_report(bytes(pack_report(ReportSpec(version=4, product="Genoa"))))
    assert report.product is Product.GENOA and report.cpuid_model == 0x11
    assert report.launch_mit_vector is None and report.current_mit_vector is None


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [
        (0x19, 0x00, Product.MILAN),
        (0x19, 0x01, Product.MILAN),
        (0x19, 0x0F, Product.MILAN),
        (0x19, 0x10, Product.GENOA),
        (0x19, 0x11, Product.GENOA),
        (0x19, 0xA0, Product.GENOA),
        (0x19, 0xAF, Product.GENOA),
        (0x1A, 0x00, Product.TURIN),
        (0x1A, 0x02, Product.TURIN),
        (0x1A, 0x11, Product.TURIN),
        (0x19, 0x21, None),
        (0x19, 0x50, None),
        (0x1A, 0x50, None),
        (0x17, 0x31, None),
        (0x00, 0x00, None),
    ],
)
def test_product_from_cpuid(family: int, model: int, product: Product | None) -> None:
    assert product_from_cpuid(family, model) is product


def _with_cpuid(spec: ReportSpec, family: int, model: int) -> bytes:
    data = pack_report(spec)
    data[0x188:0x18A] = bytes([family, model])
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "given", "product", "turin_layout"),
    [
        (_with_cpuid(ReportSpec(version=5), 0x19, 0x01), None, Product.MILAN, False),
        (_with_cpuid(ReportSpec(version=3), 0x19, 0x11), None, Product.GENOA, False),
        (_with_cpuid(turin_spec(version=5), 0x1A, 0x02), None, Product.TURIN, True),
        (
            _with_cpuid(ReportSpec(version=5), 0x1A, 0x50),
            None,
            None,
            True,
        ),  # a newer family: Turin's layout
        (_with_cpuid(ReportSpec(version=5), 0x19, 0x50), None, None, False),
        (bytes(pack_report(ReportSpec(version=2))), None, None, False),
        (bytes(pack_report(turin_spec(version=2))), None, Product.TURIN, True),
        (bytes(pack_report(ReportSpec(version=2, chip_id=bytes(64)))), None, None, False),
        (_with_cpuid(ReportSpec(version=5), 0x19, 0x11), Product.TURIN, Product.TURIN, True),
        (bytes(pack_report(turin_spec(version=2))), Product.MILAN, Product.MILAN, False),
    ],
)
def test_product_and_tcb_layout(
    data: bytes, given: Product | None, product: Product | None, turin_layout: bool
) -> None:
    report = parse_report(data, product=given)
    assert report.product is product
    assert (report.reported_tcb.fmc is not None) == turin_layout
    raw = data[0x180:0x188]
    expected_bl = raw[1] if turin_layout else raw[0]
    assert report.reported_tcb.bootloader == expected_bl and report.reported_tcb.microcode == raw[7]


@pytest.mark.parametrize("name", ["milan", "Genoa", "TURIN", " turin "])
def test_product_names(name: str) -> None:
    assert Product.parse(name).value.lower() == name.strip().lower()


@pytest.mark.parametrize("name", ["siena", "Bergamo", "GENOA-X"])
def test_genoa_class_names_are_genoa(name: str) -> None:
    assert Product.parse(name) is Product.GENOA


@pytest.mark.parametrize("name", ["", "rome", "naples", "venice", "milan-b0", "9004"])
def test_unknown_product_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown processor"):
        Product.parse(name)


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(min_size=0x4A0, max_size=0x4A0), st.sampled_from([2, 3, 4, 5]))
def test_any_bytes_of_a_known_version_parse(data: bytes, version: int) -> None:
    report = parse_report(version.to_bytes(4, "little") + data[4:])
    assert report.raw[4:] == data[4:] and len(report.chip_id) == 64


@settings(max_examples=examples(300), deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        parse_report(data)
    except ReportError as exc:
        assert "bytes" in str(exc) or "version" in str(exc)


# The pinned roots --------------------------------------------------------------------------


def _readme_fingerprints() -> dict[str, str]:
    text = (PACKAGE / "roots" / "README.md").read_text()
    return dict(re.findall(r"^\| (\w+/\w+\.pem) \|.*\| ([0-9a-f]{64}) \|$", text, re.MULTILINE))


@pytest.mark.parametrize("product", list(Product))
def test_pinned_roots_are_amds_real_chain(product: Product) -> None:
    pair = roots.for_product(product)
    folder = PACKAGE / "roots" / product.value.lower()
    documented = _readme_fingerprints()
    for kind, cert in (("ark", pair.ark), ("ask", pair.ask), ("asvk", pair.asvk)):
        der = subprocess.run(
            ["openssl", "x509", "-in", str(folder / f"{kind}.pem"), "-outform", "DER"],
            capture_output=True,
            check=True,
        ).stdout
        by_openssl = hashlib.sha256(der).hexdigest()
        assert by_openssl == roots.fingerprint(cert) == roots.FINGERPRINTS[product, kind]
        assert documented[f"{product.value.lower()}/{kind}.pem"] == by_openssl
    assert pair.ark.subject.rfc4514_string().startswith(
        f"CN=ARK-{product.value},O=Advanced Micro Devices"
    )
    assert pair.ask.subject.rfc4514_string().startswith(
        f"CN=SEV-{product.value},O=Advanced Micro Devices"
    )
    assert pair.asvk.subject.rfc4514_string().startswith(
        f"CN=SEV-VLEK-{product.value},O=Advanced Micro Devices"
    )
    assert pair.ark.issuer == pair.ark.subject and pair.ask.issuer == pair.ark.subject
    assert pair.asvk.issuer == pair.ark.subject
    assert rsa_pss_problem(pair.ark, pair.ark) is None  # self-signed
    assert rsa_pss_problem(pair.ask, pair.ark) is None  # ASK signed by its ARK
    assert rsa_pss_problem(pair.asvk, pair.ark) is None  # ASVK signed by its ARK
    for kind in ("ask", "asvk"):
        verdict = subprocess.run(
            ["openssl", "verify", "-CAfile", str(folder / "ark.pem"), str(folder / f"{kind}.pem")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verdict.returncode == 0 and verdict.stdout.strip().endswith(": OK"), (
            verdict.stdout + verdict.stderr
        )


@pytest.mark.parametrize(
    ("ask_of", "ark_of"), [(a, b) for a in Product for b in Product if a is not b]
)
def test_no_pinned_ask_is_signed_by_another_products_ark(ask_of: Product, ark_of: Product) -> None:
    for cert in (roots.for_product(ask_of).ask, roots.for_product(ask_of).asvk):
        problem = rsa_pss_problem(cert, roots.for_product(ark_of).ark)
        assert problem is not None and "does not verify" in problem


def test_readme_documents_every_pinned_file() -> None:
    assert len(_readme_fingerprints()) == 9
    assert sorted(
        p.relative_to(PACKAGE / "roots").as_posix() for p in (PACKAGE / "roots").rglob("*.pem")
    ) == sorted(_readme_fingerprints())


@pytest.mark.parametrize(("product", "kind"), sorted(roots.FINGERPRINTS))
def test_a_pinned_file_that_is_not_the_documented_one_is_refused(
    product: Product, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(roots.FINGERPRINTS, (product, kind), "00" * 32)
    roots.pinned.cache_clear()
    try:
        with pytest.raises(
            roots.PinnedRootError, match=f"{product.value.lower()}/{kind}.pem has SHA-256"
        ):
            roots.pinned()
    finally:
        monkeypatch.undo()
        roots.pinned.cache_clear()
    assert len(roots.pinned()) == 3


@pytest.mark.parametrize(
    ("version", "refused"),
    [("41.0.7", True), ("42.0.8", True), ("38.0.4", True), ("3.4.8", True), ("43.0.0", False),
     ("51.0.1", False), ("60.0.0.dev1", False), ("unknown", False)],
)  # fmt: skip
def test_a_cryptography_too_old_for_amds_certificates_is_named(
    version: str, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cryptography

    from sevimg_cert.certs import CertError, parse_certs

    monkeypatch.setattr(cryptography, "__version__", version)
    assert (roots.cryptography_too_old() is not None) == refused
    if refused:
        pem = (PACKAGE / "roots" / "milan" / "ark.pem").read_bytes()
        with pytest.raises(
            CertError, match=f"cryptography {version} cannot read AMD's certificates"
        ):
            parse_certs(pem, "ark.pem")


# The import boundary -----------------------------------------------------------------------


def test_sevimg_cert_imports_only_the_standard_library_and_cryptography() -> None:
    allowed = set(sys.stdlib_module_names) | {"cryptography", "sevimg_cert", "__future__"}
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) >= 6
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{source}: relative import"
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{source}:{node.lineno}: imports {name}"
        assert len(source.read_text().splitlines()) < 450, f"{source} is too long"


def test_sevimg_cert_works_when_sevimg_cannot_be_imported() -> None:
    program = """
import sys
sys.modules["sevimg"] = None  # any import of sevimg now fails
import sevimg_cert, sevimg_cert.report, sevimg_cert.verify, sevimg_cert.kds, sevimg_cert.certs, sevimg_cert.roots
import sevimg_cert.dispatch, sevimg_cert.efi, sevimg_cert.mdns, sevimg_cert.after, sevimg_cert.harness
assert len(sevimg_cert.roots.pinned()) == 3
loaded = sorted(m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] in
    {"sevimg", "click", "rich", "httpx", "yaml", "jinja2", "jsonschema", "sh"})
print("loaded:", loaded)
"""
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "loaded: []"
