"""The build backend: maturin's, behind a check that a Rust toolchain is there.

Building from the sdist compiles the Rust core, so it needs cargo and rustc.
Without cargo on PATH, maturin's own backend does not stop: it installs
puccinialin, downloads rustup and a whole toolchain (about 1 GB, into
~/.cache/puccinialin) and builds with that, unasked. This backend stops
instead, with what is missing and the two ways on (install Rust, or install
the prebuilt wheel). With a toolchain present every hook is maturin's.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import maturin

_NEEDED = (
    "error: a Rust toolchain is needed to build scrapy-splash-cluster from source: {problem}.\n"
    "Install Rust 1.85 or newer (cargo and rustc) from https://rustup.rs or your system's\n"
    "packages, then install again; or install a prebuilt wheel (`make dist` builds one),\n"
    "which needs no Rust: pip install scrapy_splash_cluster-<version>-cp310-abi3-<platform>.whl\n"
)


def _toolchain_problem() -> str | None:
    """What keeps cargo and rustc from running, or None when both run."""
    for tool in ("cargo", "rustc"):
        path = shutil.which(tool)
        if path is None:
            return f"{tool} is not on PATH"
        try:
            # A rustup shim with no default toolchain is on PATH yet cannot run.
            subprocess.run([path, "--version"], capture_output=True, check=True, timeout=120)
        except subprocess.CalledProcessError as error:
            output = error.stderr.decode(errors="replace").strip().splitlines()
            return f"`{tool} --version` failed" + (f" ({output[0]})" if output else "")
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"`{tool} --version` could not run ({error})"
    return None


def _require_rust() -> None:
    problem = _toolchain_problem()
    if problem is not None:
        sys.stderr.write(_NEEDED.format(problem=problem))
        sys.exit(1)


def _checked(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def checked_hook(*args: Any, **kwargs: Any) -> Any:
        _require_rust()
        return hook(*args, **kwargs)

    return checked_hook


# Every PEP 517/660 hook maturin has, each checked first: the frontend may
# call any of them first (pip asks for the build requirements, `build --sdist`
# goes straight to build_sdist).
get_requires_for_build_wheel = _checked(maturin.get_requires_for_build_wheel)
get_requires_for_build_editable = _checked(maturin.get_requires_for_build_editable)
get_requires_for_build_sdist = _checked(maturin.get_requires_for_build_sdist)
prepare_metadata_for_build_wheel = _checked(maturin.prepare_metadata_for_build_wheel)
prepare_metadata_for_build_editable = _checked(maturin.prepare_metadata_for_build_editable)
build_wheel = _checked(maturin.build_wheel)
build_editable = _checked(maturin.build_editable)
build_sdist = _checked(maturin.build_sdist)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]
