"""Typed records: each catalog file decoded once, after the schema check.

The resolver and policy read these records instead of the documents'
dictionaries, so the records must say exactly what the files say, point at
the same line and column, and exist only for files that passed the schema.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from sevimg.catalog import records as rec
from sevimg.catalog.index import Catalog, Entry, load_catalog
from sevimg.catalog.load import Document, JsonPath
from sevimg.catalog.pipeline import check_entry
from sevimg.catalog.resolve import roles_of
from sevimg.problems import has_errors
from sevimg.workspace import Workspace

from .conftest import IMAGES

SRC = Path(rec.__file__).parent
RELEASES = sorted(p.stem for p in IMAGES.glob("*-*.yaml"))
LISTS = (
    "packages",
    "kernel_command_line",
    "add_packages",
    "remove_packages",
    "add_kernel_command_line",
    "remove_kernel_command_line",
)
SETTINGS = ("kernel", "qemu", "ovmf", "systemd_boot", "qemu_binary", "sev_firmware")
REPO_KEYS = ("roles", "suite", "url", "components", "baseurl", "gpgkey", "gpgcheck")


def _layers(entry: Entry) -> list[tuple[Document, Any]]:
    assert entry.records is not None
    return [
        (entry.family_doc, entry.records.family),
        (entry.distro_doc, entry.records.distro),
        (entry.release, entry.records.release),
    ]


def _sections(record: Any) -> list[rec.Section]:
    found = [record.sections[name] for name in rec.SECTIONS]
    return found + ([record.debug] if isinstance(record, rec.ReleaseRecord) else [])


@pytest.mark.parametrize("image", RELEASES)
def test_sections_say_what_the_file_says(catalog: Catalog, image: str) -> None:
    entry = catalog.entries[image]
    for doc, record in _layers(entry):
        for section in _sections(record):
            name = str(section.where.path[0])
            raw = doc.data.get(name) or {}
            assert section.present == (name in doc.data), (doc.display, name)
            for key in LISTS:
                assert getattr(section, key) == tuple(raw.get(key) or ()), (doc.display, name, key)
            for key in SETTINGS:
                assert section.setting(key) == raw.get(key), (doc.display, name, key)
            modules = raw.get("kernel_modules")
            if modules:
                assert section.kernel_modules == rec.KernelModuleRules(
                    tuple(modules.get("include") or ()), tuple(modules.get("exclude") or ())
                )
            else:
                assert section.kernel_modules is None


@pytest.mark.parametrize("image", RELEASES)
def test_top_level_fields_say_what_the_file_says(catalog: Catalog, image: str) -> None:
    entry = catalog.entries[image]
    assert entry.records is not None
    release, distro = entry.records.release, entry.records.distro
    data, ddata = entry.release.data, entry.distro_doc.data
    assert (release.release, release.status, release.codename, release.name) == (
        data["release"],
        data["status"],
        data.get("codename"),
        data.get("name"),
    )
    assert release.archived == bool(data.get("archived"))
    assert release.roles == (tuple(data["roles"]) if data.get("roles") else None)
    declared = data.get("roles") or ("guest", "host")
    assert roles_of(entry) == tuple(r for r in ("guest", "host") if r in declared)
    for component in ("kernel", "qemu", "ovmf"):
        assert getattr(release.versions, component) == (data.get("versions") or {}).get(component)
    assert (distro.name, distro.family) == (ddata["name"], ddata["family"])
    assert distro.mkosi.distribution == ddata["mkosi"]["distribution"]
    assert distro.mkosi.repositories == tuple(ddata["mkosi"].get("repositories") or ())
    assert distro.kernel_command_line == tuple(ddata.get("kernel_command_line") or ())
    assert (distro.repository is None) == (not ddata.get("repository"))
    for repo, raw in zip(
        release.extra_repositories, data.get("extra_repositories") or (), strict=True
    ):
        assert (repo.name, repo.packages) == (raw["name"], tuple(raw["packages"]))
        for key in REPO_KEYS:
            assert repo.has(key) == (key in raw), (image, repo.name, key)


def _paths(record: Any) -> list[tuple[rec.Located, tuple[str | int, ...], JsonPath]]:
    """Every field a record holds: (record location, path below it, its path in the file)."""
    found: list[tuple[rec.Located, tuple[str | int, ...], JsonPath]] = []
    names = [*rec.SECTIONS, *(["debug"] if isinstance(record, rec.ReleaseRecord) else [])]
    for name, section in zip(names, _sections(record), strict=True):
        if not section.present:
            continue
        below: list[tuple[str | int, ...]] = [()]
        for key in LISTS:
            below += [(key, i) for i in range(len(getattr(section, key)))]
        below += [(key,) for key in SETTINGS if section.setting(key) is not None]
        found += [(section.where, b, (name, *b)) for b in below]
    for i, repo in enumerate(getattr(record, "extra_repositories", ())):
        below = [(), ("name",), ("packages", 0), *((k,) for k in REPO_KEYS if repo.has(k))]
        found += [(repo.where, b, ("extra_repositories", i, *b)) for b in below]
    return found


@pytest.mark.parametrize("image", RELEASES)
def test_records_locate_their_fields_as_the_document_does(catalog: Catalog, image: str) -> None:
    checked = 0
    for doc, record in _layers(catalog.entries[image]):
        for where, below, path in _paths(record):
            ours = where.problem(*below, message="m")
            assert where.doc is doc
            assert ours == doc.problem(path, "m"), path
            assert ours.line is not None and ours.line > 1, path
            checked += 1
    assert checked > 5


MODULE_RULES = [
    {"include": ["drivers/net/"]},
    {"exclude": ["drivers/gpu/"]},
    {"include": ["kvm", "kvm_amd"], "exclude": ["drivers/sound/", "drivers/gpu/"]},
    {"include": [], "exclude": ["drivers/media/"]},
    {"exclude": [], "include": ["fs/9p/"]},
]


@pytest.mark.parametrize("rules", MODULE_RULES)
@pytest.mark.parametrize(
    ("name", "role"), [("fedora-42", "host"), ("fedora", "guest"), ("ubuntu-24.04", "guest")]
)
def test_kernel_module_rules_decode_include_and_exclude(
    workspace: Path, rules: dict[str, list[str]], name: str, role: str
) -> None:
    path = workspace / "images" / f"{name}.yaml"
    lines = "".join(f"    {key}: [{', '.join(values)}]\n" for key, values in rules.items())
    text = path.read_text()
    assert f"\n{role}:" not in text
    path.write_text(text + f"{role}:\n  kernel_modules:\n{lines}")
    catalog = load_catalog(Workspace(workspace))
    assert not has_errors(catalog.problems), catalog.problems
    image = name if "-" in name else next(i for i in RELEASES if i.startswith(f"{name}-"))
    records = catalog.entries[image].records
    assert records is not None
    layer = records.release if "-" in name else records.distro
    section = layer.sections[role]
    assert section.kernel_modules == rec.KernelModuleRules(
        tuple(rules.get("include", ())), tuple(rules.get("exclude", ()))
    )
    spec = check_entry(catalog, catalog.entries[image]).spec(role)  # type: ignore[arg-type]
    assert set(rules.get("include", ())) <= set(spec.kernel_modules.include)
    assert set(rules.get("exclude", ())) <= set(spec.kernel_modules.exclude)
    assert not set(rules.get("include", ())) & set(rules.get("exclude", ()))


BREAKAGES = [
    ("debian-13", "status: supported", "status: maybe"),
    ("debian-13", 'release: "13"', 'release: "14"'),
    ("debian-13", "roles: [host]", "roles: [router]"),
    ("debian-13", "packages: [ovmf-amdsev]", "packages: ovmf-amdsev"),
    ("fedora-42", "status:", "bogus_key: 1\nstatus:"),
    ("ubuntu-24.04", "status:", "versions: 6.8\nstatus:"),
    ("debian-13", "status:", "archived: yes please\nstatus:"),
    ("debian", "family: debian", "family: debain"),
    ("debian", "distribution: debian", "distribution: debianish"),
    ("fedora", "distro: fedora", "distro: fedoora"),
]


@pytest.mark.parametrize(("name", "old", "new"), BREAKAGES)
def test_no_records_for_files_that_fail_the_schema(
    workspace: Path, name: str, old: str, new: str
) -> None:
    path = workspace / "images" / f"{name}.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    catalog = load_catalog(Workspace(workspace))
    affected = [i for i in RELEASES if i == name or i.partition("-")[0] == name]
    assert affected
    for image in affected:
        assert image in catalog.broken
        entry = catalog.entries.get(image)
        if entry is not None:
            assert entry.records is None
            checked = check_entry(catalog, entry)
            assert not checked.specs and has_errors(checked.problems)
    # every other release still decodes
    for image in set(RELEASES) - set(affected) - catalog.broken:
        assert catalog.entries[image].records is not None


RECORD_TYPES = [
    t for t in vars(rec).values() if dataclasses.is_dataclass(t) and t.__module__ == rec.__name__
]


@pytest.mark.parametrize("kind", RECORD_TYPES, ids=lambda t: t.__name__)
def test_records_are_frozen(kind: type) -> None:
    assert kind.__dataclass_params__.frozen  # type: ignore[attr-defined]


# Reading a document's dictionary: `.data`, `x.get("key")`, `x["key"]`.
DICT_READS = re.compile(r"\.data\b|\.get\(\"|(?<!UNITS)(?<!ENABLE)\[\"[a-z_]+\"\]")


@pytest.mark.parametrize("module", ["resolve.py", "policy.py"])
def test_resolver_and_policy_read_attributes_not_dictionaries(module: str) -> None:
    text = (SRC / module).read_text()
    assert DICT_READS.findall(text) == []
    assert "Mapping[str, Any]" not in text


@pytest.mark.parametrize(
    "line",
    [
        'x = self.d["mkosi"]',
        "y = entry.release.data",
        'z = repo.get("url")',
        'w = doc.data.get("versions")',
    ],
)
def test_the_dictionary_read_pattern_finds_dictionary_reads(line: str) -> None:
    assert DICT_READS.findall(line)
