"""Installs the one release wheel from dist/ into a fresh venv of every
CPython from 3.10 up and tries it there, as a user would:

1. without Scrapy: the core's asyncio tests against mock nodes
   (tests/test_cluster.py, test_mock_node.py, test_stats.py) and
   tests/wheel/test_without_scrapy.py;
2. with the newest Scrapy that installs there: one real crawl through the
   add-on (tests/test_scrapy.py::test_crawl_spreads_over_nodes_and_reports).

On the oldest Python the package's dependency floors are installed instead of
the newest versions (pyproject's `>=` pins made `==`), so the floors are tried
too, and stubtest checks _core.pyi against the extension under that Python.
Last, `pip install` of the sdist with no cargo or rustc on PATH must fail
saying "a Rust toolchain is needed".

    python tests/wheel/matrix.py [--python 3.12 ...]

A CPython that is not installed is a skip with its reason; under CI (CI set, as CI=true) it
is a failure, since CI machines have them all (pyenv). The venvs live in
target/wheel-venvs; the figures go to target/wheel-matrix.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
VENVS = ROOT / "target" / "wheel-venvs"
REPORT = ROOT / "target" / "wheel-matrix.json"

# Every CPython the wheel claims and this machine kind has (pyenv), oldest
# first; newer ones found in pyenv are tried as well.
CLAIMED = ("3.10", "3.11", "3.12", "3.13")
CORE_TESTS = (
    "tests/test_cluster.py",
    "tests/test_mock_node.py",
    "tests/test_stats.py",
    "tests/wheel/test_without_scrapy.py",
)
CRAWL_TEST = "tests/test_scrapy.py::test_crawl_spreads_over_nodes_and_reports"
# What the tests use that is not the package's: test_stats parses /metrics.
TEST_TOOLS = ("prometheus-client",)
RUST_NEEDED = "a Rust toolchain is needed"


@dataclass
class Leg:
    python: str
    result: str = "not run"
    reason: str = ""
    interpreter: str = ""
    floors: bool = False
    scrapy: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


class LegFailed(Exception):
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="only these versions, e.g. 3.12")
    options = parser.parse_args()
    in_ci = bool(os.environ.get("CI"))

    wheel, sdist = dist_files()
    print(f"wheel: {wheel.name} ({wheel.stat().st_size} bytes)\nsdist: {sdist.name}")
    check_wheel_claims(wheel)
    versions = options.python or [*CLAIMED, *newer_pyenv_versions()]
    legs = [Leg(python=v) for v in versions]
    legs[0].floors = versions[0] == CLAIMED[0]
    for leg in legs:
        interpreter = find_python(leg.python)
        if interpreter is None:
            leg.result = "FAIL" if in_ci else "skip"
            leg.reason = (
                f"CPython {leg.python} is not installed (no pyenv version, no python{leg.python})"
            )
            print(f"\n== {leg.python}: {leg.result}: {leg.reason}", flush=True)
            continue
        leg.interpreter = str(interpreter)
        run_leg(leg, interpreter, wheel)

    sdist_leg = Leg(python=f"{legs[0].python} sdist without Rust")
    interpreter = find_python(legs[0].python)
    if interpreter is not None:
        sdist_leg.interpreter = str(interpreter)
        run_sdist_without_rust(sdist_leg, interpreter, sdist)
    else:
        sdist_leg.result, sdist_leg.reason = legs[0].result, legs[0].reason

    legs.append(sdist_leg)
    REPORT.write_text(json.dumps([asdict(leg) for leg in legs], indent=2) + "\n")
    print_summary(legs)
    return 1 if any(leg.result == "FAIL" for leg in legs) else 0


def dist_files() -> tuple[Path, Path]:
    """The one wheel and the one sdist `make dist` left in dist/."""
    wheels = sorted(DIST.glob("*.whl"))
    sdists = sorted(DIST.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        sys.exit(
            f"dist/ should hold one wheel and one sdist, found {wheels + sdists}: run `make dist`"
        )
    return wheels[0], sdists[0]


def check_wheel_claims(wheel: Path) -> None:
    """The wheel's tags claim what pyproject does: the stable ABI from the
    oldest Python that requires-python allows, and that Python is CLAIMED[0]."""
    with zipfile.ZipFile(wheel) as archive:
        info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
        tags = re.findall(r"^Tag: (.+)$", archive.read(f"{info}/WHEEL").decode(), re.M)
        requires = re.search(
            r"^Requires-Python: >=(\d+)\.(\d+)$", archive.read(f"{info}/METADATA").decode(), re.M
        )
    floor = f"cp{requires[1]}{requires[2]}" if requires else None
    if floor != "cp" + CLAIMED[0].replace(".", ""):
        sys.exit(f"Requires-Python does not start at {CLAIMED[0]}: {requires}")
    wrong = [t for t in tags if not t.startswith(f"{floor}-abi3-manylinux_")]
    if not tags or wrong:
        sys.exit(f"the wheel's tags {tags} do not claim {floor}-abi3-manylinux_*")
    print("tags:", ", ".join(tags), "| Requires-Python: >=" + CLAIMED[0])


def run_leg(leg: Leg, interpreter: Path, wheel: Path) -> None:
    print(f"\n== CPython {leg.python} ({interpreter})", flush=True)
    started = time.monotonic()
    try:
        venv = fresh_venv(leg, interpreter)
        constraints = write_floor_constraints(venv) if leg.floors else None
        timed(leg, "install", pip_install, venv, [f"{wheel}[test]", *TEST_TOOLS], constraints)
        check_installed_from_wheel(venv)
        if scrapy_version(venv) is not None:
            raise LegFailed("Scrapy got installed with the wheel alone; it must stay optional")
        timed(leg, "core tests", pytest, venv, CORE_TESTS)
        if leg.floors:
            timed(leg, "install mypy", pip_install, venv, ["mypy"], None)
            timed(
                leg, "stubtest", run, venv, ["-m", "mypy.stubtest", "scrapy_splash_cluster._core"]
            )
        timed(leg, "install scrapy", pip_install, venv, [f"{wheel}[scrapy]"], constraints)
        leg.scrapy = scrapy_version(venv) or ""
        timed(leg, "crawl", pytest, venv, (CRAWL_TEST,))
        leg.result = "pass"
    except LegFailed as error:
        leg.result, leg.reason = "FAIL", str(error)
        print(f"FAIL: {error}", flush=True)
    leg.seconds["total"] = round(time.monotonic() - started, 1)


def run_sdist_without_rust(leg: Leg, interpreter: Path, sdist: Path) -> None:
    """pip install of the sdist where neither cargo nor rustc is on PATH."""
    print(f"\n== {leg.python} ({interpreter})", flush=True)
    started = time.monotonic()
    try:
        venv = fresh_venv(leg, interpreter)
        path = os.pathsep.join(
            d
            for d in os.environ["PATH"].split(os.pathsep)
            if d and not any((Path(d) / tool).exists() for tool in ("cargo", "rustc"))
        )
        env = venv_env(venv) | {"PATH": f"{venv / 'bin'}{os.pathsep}{path}"}
        # --no-cache-dir: a wheel pip once built from this sdist would be reused.
        command = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            str(sdist),
        ]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        output = proc.stdout + proc.stderr
        if proc.returncode == 0:
            raise LegFailed("the sdist installed without cargo or rustc on PATH")
        if RUST_NEEDED not in output:
            raise LegFailed(f"pip failed without saying {RUST_NEEDED!r}:\n{output[-3000:]}")
        message = next(line for line in output.splitlines() if RUST_NEEDED in line)
        print(f"pip failed as it should: {message.strip()}")
        leg.result = "pass"
    except LegFailed as error:
        leg.result, leg.reason = "FAIL", str(error)
        print(f"FAIL: {error}", flush=True)
    leg.seconds["total"] = round(time.monotonic() - started, 1)


def find_python(version: str) -> Path | None:
    """The newest pyenv CPython `version`.x, else python`version` on PATH."""
    found = sorted(
        (patch_level(p.name), p / "bin" / f"python{version}") for p in pyenv_versions(version)
    )
    candidates = [python for _, python in reversed(found)]
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    for python in candidates:
        # A pyenv shim for a version that is not installed is on PATH yet fails.
        probe = subprocess.run([python, "--version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.startswith(f"Python {version}."):
            return python
    return None


def pyenv_versions(version: str) -> list[Path]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    # Plain CPython releases only: not 3.13.0t (free-threaded, no abi3) nor dev builds.
    pattern = re.compile(rf"{re.escape(version)}\.\d+")
    return [p for p in root.glob(f"{version}.*") if pattern.fullmatch(p.name)]


def newer_pyenv_versions() -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    newest_claimed = tuple(int(n) for n in CLAIMED[-1].split("."))
    found = set()
    for path in root.glob("3.*"):
        match = re.fullmatch(r"3\.(\d+)\.\d+", path.name)
        if match and (3, int(match[1])) > newest_claimed:
            found.add(int(match[1]))
    return [f"3.{minor}" for minor in sorted(found)]


def patch_level(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in name.split("."))


def fresh_venv(leg: Leg, interpreter: Path) -> Path:
    venv = VENVS / re.sub(r"[^\w.]+", "-", leg.python)
    shutil.rmtree(venv, ignore_errors=True)
    timed(leg, "venv", check, [str(interpreter), "-m", "venv", str(venv)], None)
    return venv


def write_floor_constraints(venv: Path) -> Path:
    """pip constraints pinning each dependency to its floor in pyproject."""
    floors = [re.sub(r">=", "==", r.replace(" ", "")) for r in optional_dependencies()]
    path = venv / "floors.txt"
    path.write_text("\n".join(floors) + "\n")
    print("floors:", ", ".join(floors))
    return path


def optional_dependencies() -> list[str]:
    # tomllib is 3.11+; the list is plain enough for a pattern on 3.10.
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return re.findall(r'"([A-Za-z0-9_.-]+\s*>=\s*[0-9.]+)"', section)


def pip_install(venv: Path, requirements: list[str], constraints: Path | None) -> None:
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements]
    if constraints is not None:
        command += ["-c", str(constraints)]
    check(command, venv)


def check_installed_from_wheel(venv: Path) -> None:
    """The tests must import the wheel's package, not the source tree."""
    code = "import scrapy_splash_cluster as p; print(p.__file__, p.__version__)"
    out = check([str(venv / "bin" / "python"), "-c", code], venv)
    where = Path(out.split()[0]).resolve()
    if not where.is_relative_to(venv.resolve()):
        raise LegFailed(f"scrapy_splash_cluster was imported from {where}, not from the venv")
    print("imported from", where.parent, "version", out.split()[1])


def scrapy_version(venv: Path) -> str | None:
    code = (
        "import importlib.metadata as m\n"
        "try: print(m.version('scrapy'))\n"
        "except m.PackageNotFoundError: pass"
    )
    out = check([str(venv / "bin" / "python"), "-c", code], venv).strip()
    return out or None


def pytest(venv: Path, tests: tuple[str, ...]) -> None:
    check([str(venv / "bin" / "python"), "-m", "pytest", "-q", *tests], venv, echo=True)


def run(venv: Path, args: list[str]) -> None:
    check([str(venv / "bin" / "python"), *args], venv, echo=True)


def venv_env(venv: Path) -> dict[str, str]:
    # Nothing of the caller's environment may put the source tree or another
    # venv's packages on the path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def check(command: list[str], venv: Path | None, echo: bool = False) -> str:
    env = venv_env(venv) if venv is not None else None
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if echo:
        print(proc.stdout.rstrip().splitlines()[-1] if proc.stdout.strip() else "", flush=True)
    if proc.returncode != 0:
        raise LegFailed(
            f"`{' '.join(command)}` exited {proc.returncode}:\n"
            f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return proc.stdout


def timed(leg: Leg, step: str, action, *args) -> None:
    started = time.monotonic()
    try:
        action(*args)
    finally:
        leg.seconds[step] = round(time.monotonic() - started, 1)


def print_summary(legs: list[Leg]) -> None:
    print("\n| Python | result | Scrapy | seconds | detail |\n|---|---|---|---|---|")
    for leg in legs:
        steps = ", ".join(f"{k} {v}" for k, v in leg.seconds.items() if k != "total")
        detail = leg.reason.splitlines()[0] if leg.reason else steps
        floors = " (floors)" if leg.floors else ""
        total = leg.seconds.get("total", "")
        print(f"| {leg.python}{floors} | {leg.result} | {leg.scrapy} | {total} | {detail} |")


if __name__ == "__main__":
    sys.exit(main())
