"""Reproducibility and size budgets as catalog data: resolved, rendered, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevimg.catalog import payload
from sevimg.catalog.index import Catalog
from sevimg.imaging.examine import over_budget
from tests.conftest import CliFn
from tests.test_resolve import edit, spec_of


def test_budgets_come_from_the_distribution_and_a_release_overrides(
    catalog: Catalog, workspace: Path
) -> None:
    assert spec_of(catalog, "debian-13", "guest").size_budget_mb == 28
    assert spec_of(catalog, "debian-forky", "host").size_budget_mb == 160
    assert spec_of(catalog, "ubuntu-26.04", "guest").size_budget_mb == 36
    assert spec_of(catalog, "ubuntu-26.04", "host").size_budget_mb == 200
    assert spec_of(catalog, "fedora-43", "guest").size_budget_mb is None
    changed = edit(workspace, "debian-13", "guest:\n  size_budget_mb: 31.5\n")
    assert spec_of(changed, "debian-13", "guest").size_budget_mb == 31.5
    assert spec_of(changed, "debian-13", "host").size_budget_mb == 160


def test_epoch_and_seed_are_functions_of_the_catalog(catalog: Catalog, workspace: Path) -> None:
    guest = spec_of(catalog, "debian-13", "guest")
    host = spec_of(catalog, "debian-13", "host")
    assert guest.source_date_epoch == payload.DEFAULT_SOURCE_DATE_EPOCH
    assert guest.seed != host.seed
    assert guest.seed == spec_of(catalog, "debian-13", "guest").seed
    changed = edit(workspace, "debian", "source_date_epoch: 1700000000\n")
    assert spec_of(changed, "debian-13", "guest").source_date_epoch == 1700000000
    changed = edit(workspace, "debian-13", "source_date_epoch: 1750000000\n")
    assert spec_of(changed, "debian-13", "guest").source_date_epoch == 1750000000
    assert spec_of(changed, "debian-forky", "guest").source_date_epoch == 1700000000


def test_rendered_config_carries_epoch_seed_and_level(cli: CliFn, workspace: Path) -> None:
    out = workspace / "build"
    assert cli("render", "debian-13", "-o", str(out)).code == 0
    guest = (out / "guest-debian-13" / "mkosi.conf").read_text()
    host = (out / "host-debian-13" / "mkosi.conf").read_text()
    assert f"SourceDateEpoch={payload.DEFAULT_SOURCE_DATE_EPOCH}\n" in guest
    assert "CompressLevel=19\n" in guest and "CompressLevel=3\n" in host
    seeds = [
        line for text in (guest, host) for line in text.splitlines() if line.startswith("Seed=")
    ]
    assert len(set(seeds)) == 2


@pytest.mark.parametrize(
    ("file", "text", "field"),
    [
        ("debian-13", "guest:\n  size_budget_mb: -1\n", "size_budget_mb"),
        ("debian-13", "guest:\n  size_budget_mb: lots\n", "size_budget_mb"),
        ("debian", "source_date_epoch: yesterday\n", "source_date_epoch"),
        ("debian-13", "source_date_epoch: -5\n", "source_date_epoch"),
    ],
)
def test_bad_values_are_located_errors(
    cli: CliFn, workspace: Path, file: str, text: str, field: str
) -> None:
    path = workspace / "images" / f"{file}.yaml"
    path.write_text(path.read_text() + text)
    run = cli("validate", file if "-" in file else "debian-13")
    assert run.code == 1
    assert f"images/{file}.yaml:" in run.output and field in run.output
    assert "Traceback" not in run.output


def test_over_budget_says_by_how_much_and_where(catalog: Catalog) -> None:
    spec = spec_of(catalog, "debian-13", "guest")
    assert over_budget(spec, 28_000_000) is None
    message = over_budget(spec, 34_649_600)
    assert message == (
        "34.6 MB is over its size budget of 28 MB "
        "(size_budget_mb in images/debian.yaml or images/debian-13.yaml)"
    )
    assert over_budget(spec_of(catalog, "fedora-43", "guest"), 10**9) is None
