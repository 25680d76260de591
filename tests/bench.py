"""`nox -s bench`: build and boot numbers for this machine, printed and saved.

    cold      debian-13 guest from an empty cache (tools tree, packages, image)
    no-op     the same build again, nothing changed
    warm      after a one-line YAML change (a kernel command-line token)
    sizes     guest-debian-13.efi, guest-debian-forky.efi, and host-debian-forky.efi with
              its guest embedded, against the catalog's budgets (size_budget_mb)
    boot      guest-debian-13 to its readiness marker with `sevimg run --no-sev`, --boots
              times (default 3): each time, the median against the 20 s target
              (TCG on this machine), and the load average when it started

    cli       CPU seconds (user + sys, best of --runs) of `sevimg --help` and of
              `sevimg validate` over the whole catalog, beside a bare `python -c pass`
    tests     wall seconds and test count of the fast run (pytest -n auto: what
              `nox`'s tests session runs, without coverage), and the machine's load
    serve     `sevimg serve`'s peak RSS and threads under 200 concurrent hostile
              connections on loopback (tests/bench_serve.py)
    parsers   every parser of peer data (evidence blocks, console frames, EFI
              variables, Release/Packages/primary, HTTP answers) at its size cap
              with hostile input, and at half of it (tests/bench_parsers.py)

Results go to stdout and to out/bench.json in the checkout. Pass --keep-cache
to measure "cold" with the existing tools tree and package cache,
--cli-only for the CLI numbers alone (a few seconds, no root, nothing saved),
--serve-only for serve's numbers alone (about a minute, nothing saved),
--parsers-only for the parsers alone,
--tests-only for the fast run's numbers alone (no root, nothing saved),
--boot-only DIR for the boot numbers alone, of the guest-debian-13.efi that a
`sevimg build` wrote to DIR (no root needed, nothing saved).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sevimg.catalog.index import load_catalog
from sevimg.catalog.resolve import resolve
from sevimg.workspace import Workspace
from tests.bench_parsers import parser_numbers
from tests.bench_serve import serve_numbers
from tests.e2e.conftest import MKOSI_VERSION, machine_debian_mirror

REPO = Path(__file__).resolve().parents[1]
# The images whose size is measured: result key -> (release, role).
MEASURED = {
    "guest_debian_13_mb": ("debian-13", "guest"),
    "guest_debian_forky_mb": ("debian-forky", "guest"),
    "host_debian_forky_mb": ("debian-forky", "host"),
}


def budgets_mb(root: Path) -> dict[str, float]:
    """The catalog's size budgets (size_budget_mb) of the measured images, in MB (10**6 bytes)."""
    catalog = load_catalog(Workspace(root))
    found: dict[str, float] = {}
    for key, (image, role) in MEASURED.items():
        budget = resolve(catalog.entries[image], role).size_budget_mb  # type: ignore[arg-type]
        if budget is not None:
            found[key] = budget
    return found


# The guest's time to its readiness marker, under TCG here (issue 19).
BOOT_TARGET_S = 20.0
READY = re.compile(r"ready after ([0-9.]+) s \((\w+)\)")

# mkosi as tools/install-mkosi put it in this checkout's cache.
ENV = {**os.environ, "SEVIMG_CACHE": str(REPO / ".cache")}


def sevimg(root: Path, *args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sevimg", "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"bench: sevimg {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return round(seconds, 1)


def cpu_seconds(argv: list[str], runs: int) -> float:
    """User + system CPU seconds of the process `argv`, the best of `runs` (it must exit 0)."""
    # As an installed package runs: with its bytecode compiled (pip does that on
    # install), not recompiling every module on each start.
    env = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(argv, capture_output=True, check=False, env=env)  # writes the bytecode
    best = float("inf")
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"bench: {' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, used)
    return round(best, 3)


def cli_numbers(runs: int) -> dict[str, float]:
    """CPU seconds of a bare interpreter, `sevimg --help` and `sevimg validate` (whole catalog)."""
    sevimg_argv = [sys.executable, "-m", "sevimg", "--root", str(REPO)]
    return {
        "cpu_python_pass_s": cpu_seconds([sys.executable, "-c", "pass"], runs),
        "cpu_sevimg_help_s": cpu_seconds([*sevimg_argv, "--help"], runs),
        "cpu_sevimg_validate_catalog_s": cpu_seconds([*sevimg_argv, "validate"], runs),
    }


def fast_run_numbers() -> dict[str, float | str]:
    """Wall seconds and outcome counts of the fast test run (pyproject's default selection)."""
    load = os.getloadavg()[0]
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "auto",
            "-p",
            "no:cacheprovider",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}
    if proc.returncode != 0:
        sys.exit(f"bench: the fast run failed ({last}):\n{proc.stdout[-4000:]}\n{proc.stderr}")
    outcomes = ("passed", "failed", "skipped", "xfailed", "xpassed", "error", "errors")
    ran = sum(n for word, n in counts.items() if word in outcomes)
    return {
        "fast_run_wall_s": round(seconds, 1),
        "fast_run_tests": ran,
        "fast_run_summary": last.strip("= "),
        "load_average_at_start": round(load, 2),
    }


def boot_numbers(root: Path, artifacts: Path, boots: int) -> dict[str, float | str]:
    """Boot guest-debian-13 from `artifacts` `boots` times with `sevimg run --no-sev`.

    Each boot's seconds to the readiness marker as `run` prints them, their
    median against BOOT_TARGET_S, and the load average before the first
    (the machine is shared: a loaded one boots slower under TCG).
    """
    load = round(os.getloadavg()[0], 2)
    seconds: list[float] = []
    accel = ""
    for _ in range(boots):
        proc = subprocess.run(
            [sys.executable, "-m", "sevimg", "--root", str(root), "run", "debian-13", "--no-sev", "--from", str(artifacts)],
            capture_output=True, text=True, check=False, env=ENV,
        )  # fmt: skip
        match = READY.search(proc.stdout)
        if proc.returncode != 0 or not match:
            sys.exit(f"bench: the guest did not boot:\n{proc.stdout}\n{proc.stderr}")
        seconds.append(float(match.group(1)))
        accel = match.group(2)
    median = round(statistics.median(seconds), 1)
    return {
        "boot_to_marker_s": median,
        "boot_to_marker_runs_s": " ".join(f"{s:.1f}" for s in seconds),
        "boot_accel": accel,
        "boot_target_s": BOOT_TARGET_S,
        "boot_within_target": "yes" if median <= BOOT_TARGET_S else "NO",
        "boot_load_average_at_start": load,
    }


def show(results: dict[str, float | str]) -> None:
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--keep-cache", action="store_true", help="reuse .cache/bench instead of starting cold"
    )
    parser.add_argument(
        "--cli-only", action="store_true", help="only the CPU seconds of --help and validate"
    )
    parser.add_argument(
        "--parsers-only",
        action="store_true",
        help="only the parsers of peer data at their caps (tests/bench_parsers.py)",
    )
    parser.add_argument(
        "--tests-only", action="store_true", help="only the fast test run's wall time and count"
    )
    parser.add_argument(
        "--runs", type=int, default=7, metavar="N", help="CLI timings: the best of N (default 7)"
    )
    parser.add_argument(
        "--serve-only", action="store_true", help="only serve's memory under hostile connections"
    )
    parser.add_argument(
        "--boots", type=int, default=3, metavar="N", help="boot the guest N times (default 3)"
    )
    parser.add_argument(
        "--boot-only",
        type=Path,
        metavar="DIR",
        help="only the boot numbers, of the guest that `sevimg build` wrote to DIR",
    )
    options = parser.parse_args()
    if options.runs < 1:
        parser.error("--runs: at least 1")
    if options.boots < 1:
        parser.error("--boots: at least 1")
    if options.boot_only:
        if not (options.boot_only / "guest-debian-13.efi").is_file():
            parser.error(f"--boot-only: no guest-debian-13.efi in {options.boot_only}")
        print(f"bench: guest-debian-13 to its readiness marker, {options.boots} boots", flush=True)
        boot = boot_numbers(REPO, options.boot_only, options.boots)
        show(boot)
        if boot["boot_within_target"] != "yes":
            sys.exit(f"bench: the guest took {boot['boot_to_marker_s']} s, over {BOOT_TARGET_S} s")
        return
    if options.serve_only:
        print("bench: sevimg serve under hostile connections", flush=True)
        show(serve_numbers())
        return

    tests: dict[str, float | str] = {}
    if not options.cli_only and not options.parsers_only:
        print("bench: the fast test run (plain pytest, as `nox -s tests` without coverage)")
        tests = fast_run_numbers()
        show(tests)
        if options.tests_only:
            return

    parsers: dict[str, str] = {}
    if not options.cli_only:
        print("bench: parsers of peer data at their caps (best of 3)", flush=True)
        parsers = parser_numbers()
        show({**parsers})
        if options.parsers_only:
            return

    cli = cli_numbers(options.runs)
    print(f"bench: CPU seconds (user + sys), best of {options.runs}", flush=True)
    show({**cli})
    if options.cli_only:
        return
    serve = serve_numbers()
    show(serve)

    work = Path(tempfile.mkdtemp(prefix="sevimg-bench-"))
    cache = REPO / ".cache" / "bench"
    if not options.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(REPO / "images", work / "images")
    shutil.copy(REPO / "sevimg.yaml", work / "sevimg.yaml")
    mirror = machine_debian_mirror()
    (work / "sevimg.local.yaml").write_text(
        f"schema_version: 1\nmirrors:\n  debian:\n    url: {mirror}\n    security_url: {mirror}-security\n"
        f"tools_tree:\n  distribution: debian\n  release: trixie\ncache_dir: {cache}\n"
    )
    out = work / "out"
    build = ["build", "-o", str(out), "--mkosi-version", MKOSI_VERSION]
    results: dict[str, float | str] = {**tests, **cli, **serve, **parsers, "mkosi": MKOSI_VERSION}
    print(f"bench: workspace {work}, cache {cache}, mkosi {MKOSI_VERSION}", flush=True)

    results["cold_build_guest_debian_13_s"] = sevimg(work, *build, "debian-13", "--role", "guest")
    results["noop_build_guest_debian_13_s"] = sevimg(work, *build, "debian-13", "--role", "guest")
    release = work / "images" / "debian-13.yaml"
    release.write_text(release.read_text() + "guest:\n  add_kernel_command_line: [quiet]\n")
    results["warm_build_after_one_line_change_s"] = sevimg(
        work, *build, "debian-13", "--role", "guest"
    )
    results["guest_debian_13_mb"] = round((out / "guest-debian-13.efi").stat().st_size / 1e6, 1)

    results["build_debian_forky_host_and_guest_s"] = sevimg(work, *build, "debian-forky")
    results["guest_debian_forky_mb"] = round(
        (out / "guest-debian-forky.efi").stat().st_size / 1e6, 1
    )
    results["host_debian_forky_mb"] = round((out / "host-debian-forky.efi").stat().st_size / 1e6, 1)

    results.update(boot_numbers(work, out, options.boots))

    over = []
    if results["boot_within_target"] != "yes":
        over.append(
            f"the guest took {results['boot_to_marker_s']} s to its readiness marker, "
            f"over the {BOOT_TARGET_S} s target"
        )
    for key, budget in budgets_mb(work).items():
        size = results[key]
        assert isinstance(size, float)
        name = key.removesuffix("_mb")
        results[f"{name}_budget_mb"] = budget
        results[f"{name}_within_budget"] = "yes" if size <= budget else "NO"
        if size > budget:
            over.append(f"{name} is {size} MB, over its {budget} MB budget")

    show(results)
    target = REPO / "out" / "bench.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"bench: saved {target}")
    shutil.rmtree(work, ignore_errors=True)
    if over:
        sys.exit("bench: " + "; ".join(over))


if __name__ == "__main__":
    main()
