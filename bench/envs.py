"""The benchmark's virtualenvs.

* ``.bench-venv`` (in the work tree, ignored by git): the baseline, Scrapy
  2.13.4 + scrapy-splash 0.11.1 (the last Scrapy scrapy-splash works with).
* ``~/.cache/scrapy-splash-cluster/bench-venv-cluster``: Scrapy 2.19 + this
  project, installed from a release wheel built from the work tree (so a
  benchmark measures an optimised build and a snapshot of the code, whatever
  happens in the tree meanwhile), plus matplotlib for the plots. The runner
  itself runs in this one. The wheel and cargo's output are kept beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "scrapy-splash-cluster"))
BASELINE_VENV = Path(os.environ.get("BENCH_BASELINE_VENV", ROOT / ".bench-venv"))
CLUSTER_VENV = CACHE / "bench-venv-cluster"
WHEELS = CACHE / "bench-wheels"
CARGO_TARGET = CACHE / "bench-target"

BASELINE_REQUIREMENTS = ("scrapy==2.13.4", "scrapy-splash==0.11.1")
CLUSTER_REQUIREMENTS = ("scrapy==2.19.0", "matplotlib>=3.8", "maturin>=1.9.4,<2")


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _run(command: list[str], **kwargs: object) -> None:
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def _has(venv: Path, check: str) -> bool:
    python = python_of(venv)
    if not python.exists():
        return False
    result = subprocess.run([str(python), "-c", check], capture_output=True)
    return result.returncode == 0


def _make_venv(venv: Path, requirements: tuple[str, ...]) -> None:
    """Creates the venv if it has no python, then installs the requirements."""
    if not python_of(venv).exists():
        _say(f"creating {venv}")
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(python_of(venv)), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _say(f"installing {' '.join(requirements)} in {venv}")
    _run([str(python_of(venv)), "-m", "pip", "install", "-q", *requirements])


def ensure_baseline_venv() -> Path:
    """The scrapy-splash venv; created when missing or wrong. Returns its python."""
    check = (
        "import scrapy, scrapy_splash, importlib.metadata as m; "
        "assert scrapy.__version__ == '2.13.4'; "
        "assert m.version('scrapy-splash') == '0.11.1'"
    )
    if not _has(BASELINE_VENV, check):
        _make_venv(BASELINE_VENV, BASELINE_REQUIREMENTS)
    return python_of(BASELINE_VENV)


def ensure_cluster_venv(build: bool = True) -> Path:
    """The project's venv: Scrapy 2.19, matplotlib, and a fresh release build of the tree."""
    check = (
        "import scrapy, matplotlib, shutil, sys, os; assert scrapy.__version__ == '2.19.0'; "
        "assert os.path.exists(os.path.join(os.path.dirname(sys.executable), 'maturin'))"
    )
    if not _has(CLUSTER_VENV, check):
        _make_venv(CLUSTER_VENV, CLUSTER_REQUIREMENTS)
    installed = _has(CLUSTER_VENV, "import scrapy_splash_cluster._core")
    if build or not installed:
        _say("building a release wheel of the work tree (cargo output in ~/.cache)")
        WHEELS.mkdir(parents=True, exist_ok=True)
        for old in WHEELS.glob("*.whl"):
            old.unlink()
        maturin = CLUSTER_VENV / "bin" / "maturin"
        env = {**os.environ, "CARGO_TARGET_DIR": str(CARGO_TARGET)}
        _run([str(maturin), "build", "--release", "-q", "-o", str(WHEELS)], cwd=ROOT, env=env)
        (wheel,) = WHEELS.glob("*.whl")
        _run(
            [
                str(python_of(CLUSTER_VENV)),
                "-m",
                "pip",
                "install",
                "-q",
                "--force-reinstall",
                "--no-deps",
                str(wheel),
            ]
        )
    return python_of(CLUSTER_VENV)


def in_cluster_venv() -> bool:
    return Path(sys.prefix).resolve() == CLUSTER_VENV.resolve()


def versions(python: Path) -> dict[str, str]:
    """Python, Scrapy, Twisted and the Splash package versions of one venv."""
    code = (
        "import json, platform, importlib.metadata as m\n"
        "out = {'python': platform.python_version()}\n"
        "for name in ('scrapy', 'twisted', 'scrapy-splash', 'scrapy-splash-cluster'):\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))
