"""Runs Splash 3.5 (``splash.server``) on Python 3.11 with three runtime shims.

    QTWEBENGINE_DISABLE_SANDBOX=1 venv/bin/python splash_launcher.py \\
        [--ssc-parent-pid PID] -i 127.0.0.1 --port 8050 --slots 5 --max-timeout 90

Why a launcher and not patches: the venv holds Splash exactly as PyPI ships
it; the shims are applied in this process before ``splash.server`` runs as
``__main__``, so nothing in site-packages is edited and removing this file
removes them. Each shim restores what Splash 3.5 assumed of older Pythons:

1. ``json.loads(..., encoding=...)``: Splash passes ``encoding`` when it reads a
   JSON POST body (``splash/render_options.py``); the keyword is gone since
   Python 3.9, so every JSON POST answered 500. ``json.loads`` ignores it here.
2. ``QTimer.start`` / ``QTimer.setInterval`` / ``QTimer.singleShot`` with float
   milliseconds: since Python 3.10 sip refuses floats, so ``wait=0.5`` and Lua
   timers answered 500. The float is rounded to an int here.
3. ``lupa`` is ``lupa.lua52``: with lupa 2 the top-level module is whichever Lua
   it found first; the official image runs Lua 5.2 (``table.unpack``...).

``--ssc-parent-pid PID`` (removed from the arguments before Splash sees them)
makes the node stop itself (SIGTERM, so it also stops its Xvfb) once PID is
no longer its parent: a test run that crashes leaves no node behind.
``--ssc-check`` applies the shims, imports what a node needs and exits.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import runpy
import signal
import sys
import threading
import time
from typing import Any


def _shim_json() -> None:
    original = json.loads
    if getattr(original, "_ssc_shim", False):
        return

    @functools.wraps(original)
    def loads(s: Any, *args: Any, encoding: Any = None, **kwargs: Any) -> Any:
        return original(s, *args, **kwargs)

    loads._ssc_shim = True  # type: ignore[attr-defined]
    json.loads = loads


def _int_ms(value: Any) -> Any:
    return round(value) if isinstance(value, float) else value


def _shim_qtimer() -> None:
    from PyQt5.QtCore import QTimer

    start, set_interval, single_shot = QTimer.start, QTimer.setInterval, QTimer.singleShot

    def patched_start(self: QTimer, *args: Any) -> None:
        start(self, *(_int_ms(a) for a in args))

    def patched_set_interval(self: QTimer, msec: Any) -> None:
        set_interval(self, _int_ms(msec))

    def patched_single_shot(msec: Any, *args: Any) -> None:
        single_shot(_int_ms(msec), *args)

    QTimer.start = patched_start
    QTimer.setInterval = patched_set_interval
    QTimer.singleShot = staticmethod(patched_single_shot)


def _shim_lupa() -> None:
    import lupa.lua52

    sys.modules["lupa"] = lupa.lua52


def apply_shims() -> None:
    """The three shims, in the order Splash's imports need them."""
    _shim_json()
    _shim_qtimer()
    _shim_lupa()


def _watch_parent(parent_pid: int) -> None:
    """SIGTERM to ourselves once our parent is gone (we were re-parented)."""
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _check() -> int:
    for module in (
        "PyQt5.QtWebKit",  # the webkit engine
        "PyQt5.QtWebEngineWidgets",  # the chromium engine
        "qt5reactor",
        "xvfbwrapper",  # how Splash starts its Xvfb
        "splash.render_options",  # what shim 1 is for
        "splash.server",
    ):
        importlib.import_module(module)
    version = importlib.import_module("splash").__version__
    print(f"splash {version} imports with the shims applied")
    return 0


def main() -> int:
    # Python put this file's folder first on sys.path, and scripts/splash.py
    # there would shadow the ``splash`` package.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    argv = sys.argv[1:]
    apply_shims()
    if "--ssc-check" in argv:
        return _check()
    if "--ssc-parent-pid" in argv:
        at = argv.index("--ssc-parent-pid")
        parent_pid = int(argv[at + 1])
        del argv[at : at + 2]
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    sys.argv = ["splash", *argv]
    runpy.run_module("splash.server", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
