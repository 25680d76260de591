"""`sevimg verify`'s policy: a YAML file (schema/verify-policy.schema.json) and the flags over it.

The file is read like a catalog file: YAML with positions, validated by its
JSON Schema, every problem located as file:line:column: field. Flags given on
the command line override the file's values one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sevimg.catalog.load import LoadError, load_file
from sevimg.catalog.schema import VERIFY_POLICY, schemas_for
from sevimg.problems import SevimgError
from sevimg.workspace import packaged
from sevimg_cert.policy import TCB_COMPONENTS, MinimumTcb, Policy


@dataclass(frozen=True)
class Overrides:
    """The policy flags as given (None: not given, the file's or the default value stands)."""

    minimum_tcb: tuple[str, ...] = ()  # COMPONENT=N
    refuse_smt: bool | None = None
    allow_migration_agent: bool | None = None
    require_single_socket: bool | None = None
    minimum_abi: str | None = None
    minimum_report_version: int | None = None
    vmpl: int | None = None
    require_revocation_check: bool | None = None


def _abi(text: str, where: str) -> tuple[int, int]:
    major, dot, minor = text.strip().partition(".")
    if not dot or not major.isdigit() or not minor.isdigit():
        raise SevimgError(f"{where}: {text!r} is not MAJOR.MINOR (e.g. 1.51)")
    pair = (int(major), int(minor))
    if max(pair) > 255:
        raise SevimgError(f"{where}: {text!r}: each part is 0 to 255")
    return pair


def load_policy_file(path: Path) -> tuple[Policy, int | None]:
    """The policy in `path`, and the VMPL it names (if any); SevimgError with located problems."""
    if not path.is_file():
        raise SevimgError(
            f"--policy: {path}: {'not a regular file' if path.exists() else 'no such file'}"
        )
    try:
        doc = load_file(path, display=str(path))
    except LoadError as exc:
        raise SevimgError(f"--policy: {exc.problem}", [exc.problem]) from None
    problems = schemas_for(packaged("schema")).validate(doc, VERIFY_POLICY)
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise SevimgError(f"--policy: {path} is not a valid policy ({count}, above)", problems)
    data: dict[str, Any] = doc.data
    tcb = data.get("minimum_tcb", {})
    guest = data.get("guest_policy", {})
    policy = Policy(
        minimum_tcb=MinimumTcb(**{k: int(v) for k, v in tcb.items()}),
        allow_smt=bool(guest.get("allow_smt", True)),
        allow_migration_agent=bool(guest.get("allow_migration_agent", False)),
        require_single_socket=bool(guest.get("require_single_socket", False)),
        minimum_abi=_abi(guest["minimum_abi"], f"{path}: guest_policy.minimum_abi")
        if "minimum_abi" in guest
        else (0, 0),
        minimum_report_version=int(data.get("minimum_report_version", 2)),
        require_revocation_check=bool(data.get("require_revocation_check", False)),
    )
    vmpl = data.get("vmpl")
    return policy, None if vmpl is None else int(vmpl)


def parse_minimum_tcb(values: tuple[str, ...], base: MinimumTcb) -> MinimumTcb:
    """`base` with each COMPONENT=N of `values` (from --min-tcb) applied."""
    changes: dict[str, int] = {}
    for value in values:
        name, eq, number = value.partition("=")
        name = name.strip().lower()
        if not eq or name not in TCB_COMPONENTS:
            raise SevimgError(
                f"--min-tcb: {value!r} is not COMPONENT=N (components: {', '.join(TCB_COMPONENTS)})"
            )
        if not number.strip().isdigit() or int(number) > 255:
            raise SevimgError(f"--min-tcb: {value!r}: N is a security version number, 0 to 255")
        changes[name] = int(number)
    return replace(base, **changes)


def resolve(path: Path | None, flags: Overrides, vmpl_default: int = 0) -> tuple[Policy, int]:
    """The policy (file, then flags over it) and the VMPL to expect."""
    policy, vmpl = load_policy_file(path) if path is not None else (Policy(), None)
    changes: dict[str, Any] = {
        "minimum_tcb": parse_minimum_tcb(flags.minimum_tcb, policy.minimum_tcb)
    }
    if flags.refuse_smt is not None:
        changes["allow_smt"] = not flags.refuse_smt
    for name in ("allow_migration_agent", "require_single_socket", "require_revocation_check"):
        if getattr(flags, name) is not None:
            changes[name] = getattr(flags, name)
    if flags.minimum_abi is not None:
        changes["minimum_abi"] = _abi(flags.minimum_abi, "--min-abi")
    if flags.minimum_report_version is not None:
        changes["minimum_report_version"] = flags.minimum_report_version
    chosen = flags.vmpl if flags.vmpl is not None else vmpl
    return replace(policy, **changes), vmpl_default if chosen is None else chosen
