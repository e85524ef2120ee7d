#!/usr/bin/env python3
"""Real Splash 3.5 nodes on this machine, without Docker.

    python3 scripts/splash.py install
    python3 scripts/splash.py start 3 --base-port 8050 [--slots 5] [--maxrss MB]
                                      [--engine-args --disable-browser-caches ...]
    python3 scripts/splash.py status
    python3 scripts/splash.py stop

Why this exists: the project's tests run against mock nodes, which are only as
good as their fidelity to Splash. The end-to-end tier (``tests/e2e``) and any
developer who wants to see the balancer in front of the real thing need real
nodes, and Splash 3.5 has no route but Debian's PyQt5 packages (``splash``
imports ``PyQt5.QtWebKit``, which has no Linux wheel) plus three runtime
shims for Python 3.11 (see ``splash_launcher.py`` beside this file).

``install`` is idempotent: the Debian packages, and a venv made by Debian's own
``/usr/bin/python3`` with ``--system-site-packages`` holding ``splash==3.5`` and
``lupa>=2,<3``, live under a cache directory (default
``~/.cache/scrapy-splash-cluster/splash-3.5``, or ``$SCRAPY_SPLASH_CLUSTER_SPLASH_HOME``)
and a second run checks them and reuses them. A failed install prints a loud
error naming what failed and exits non-zero: it never pretends.

``start`` runs each node as ``-i 127.0.0.1 --port P --slots S --max-timeout 90``
with its log in the run directory (``<home>/run`` or ``--run-dir``), waits for
every node's ``/_ping`` and records the node's pid and the pid of the Xvfb that
Splash starts as its child, so that ``stop`` can end both by pid (SIGTERM, then
SIGKILL after a timeout): a SIGKILLed node leaves its Xvfb behind, and nothing
here ever kills by process name.

Importable (stdlib only): ``RealSplashNode`` is the handle the e2e tests use
(start, stop, kill, terminate, freeze, unfreeze, restart on the same port).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "APT_PACKAGES",
    "PIP_REQUIREMENTS",
    "ProcessRef",
    "RealSplashNode",
    "SplashError",
    "SplashInstall",
    "SplashInstallError",
    "free_port",
    "free_ports",
    "http_get",
    "install",
    "splash_home",
]

SPLASH_VERSION = "3.5"
#: Debian 12 packages: Qt5 with both engines, Xvfb, and the Python libraries
#: Splash needs that must match Debian's PyQt5 (so they come from Debian too).
APT_PACKAGES: tuple[str, ...] = (
    "xvfb",
    "python3-venv",
    "python3-pyqt5",
    "python3-pyqt5.qtwebkit",
    "python3-pyqt5.qtwebengine",
    "python3-twisted",
    "python3-qt5reactor",
    "python3-psutil",
    "python3-pil",
    "python3-attr",
    "python3-funcparserlib",
    "python3-h2",
)
PIP_REQUIREMENTS: tuple[str, ...] = (f"splash=={SPLASH_VERSION}", "lupa>=2,<3")
#: Debian's interpreter: pyenv's or the project's Python has no PyQt5.
SYSTEM_PYTHON = "/usr/bin/python3"
HOME_ENV = "SCRAPY_SPLASH_CLUSTER_SPLASH_HOME"
LAUNCHER = Path(__file__).resolve().with_name("splash_launcher.py")
MAX_TIMEOUT = 90
_MARKER = "installed.json"
_STATE = "nodes.json"
_STOP_GRACE = 10.0
_XVFB_GRACE = 3.0


class SplashError(RuntimeError):
    """A node did not start, or did not stop, as asked."""


class SplashInstallError(SplashError):
    """Splash could not be installed; the message names what failed."""


def splash_home() -> Path:
    """The cache directory of the install (``$SCRAPY_SPLASH_CLUSTER_SPLASH_HOME``)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "scrapy-splash-cluster" / f"splash-{SPLASH_VERSION}"


def _say(message: str) -> None:
    print(f"splash: {message}", file=sys.stderr, flush=True)


# -- install ---------------------------------------------------------------------


@dataclass
class SplashInstall:
    """A checked install: where its interpreter is and whether it was reused."""

    home: Path
    python: Path
    reused: bool
    seconds: float
    versions: dict[str, str]


def _missing_apt_packages() -> list[str]:
    missing = []
    for package in APT_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or "install ok installed" not in proc.stdout:
            missing.append(package)
    return missing


def _run_logged(
    command: Sequence[str], log: Path, what: str, env: dict[str, str] | None = None
) -> None:
    """Runs a step of the install with its output in ``log``; raises with the tail on failure."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        proc = subprocess.run(
            list(command), stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SplashInstallError(
            f"{what} failed (exit {proc.returncode}): {' '.join(command)}\n"
            f"--- last lines of {log} ---\n{tail}"
        )


def _venv_versions(python: Path) -> dict[str, str] | None:
    """The installed versions of splash and lupa in the venv, or None if absent."""
    if not python.exists():
        return None
    code = (
        "import importlib.metadata as m, json\n"
        "print(json.dumps({n: m.version(n) for n in ('splash', 'lupa')}))"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    try:
        versions: dict[str, str] = json.loads(proc.stdout)
    except ValueError:
        return None
    return versions


def _check_runtime(python: Path) -> None:
    """Imports what a node needs through the launcher, shims applied: a broken
    install fails here, loudly, instead of as a node that never answers."""
    proc = subprocess.run(
        [str(python), str(LAUNCHER), "--ssc-check"],
        capture_output=True,
        text=True,
        check=False,
        env=_node_env(),
    )
    if proc.returncode != 0:
        raise SplashInstallError(
            f"the Splash venv {python.parent.parent} does not import what a node needs "
            f"(exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    if shutil.which("Xvfb") is None:
        raise SplashInstallError("Xvfb is not on PATH (Debian package xvfb)")


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    """One install at a time per home (two test runs may start together)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install(home: Path | None = None, *, quiet: bool = False) -> SplashInstall:
    """Installs Splash under ``home`` or checks and reuses the install there.

    Raises :class:`SplashInstallError` naming what failed.
    """
    home = home or splash_home()
    say = (lambda _m: None) if quiet else _say
    started = time.monotonic()
    venv = home / "venv"
    python = venv / "bin" / "python"
    marker = home / _MARKER
    log = home / "install.log"
    with _locked(home):
        if marker.exists():
            missing = _missing_apt_packages()
            versions = _venv_versions(python)
            if not missing and versions and versions.get("splash") == SPLASH_VERSION:
                _check_runtime(python)
                seconds = time.monotonic() - started
                say(f"Splash {SPLASH_VERSION} already installed in {home}: reusing it")
                return SplashInstall(home, python, True, seconds, versions)
            say(f"the install in {home} is incomplete; repairing it")
            marker.unlink()

        if not Path(SYSTEM_PYTHON).exists():
            raise SplashInstallError(
                f"{SYSTEM_PYTHON} not found: Splash needs Debian's Python with Debian's PyQt5"
            )
        missing = _missing_apt_packages()
        if missing:
            if os.geteuid() != 0:
                raise SplashInstallError(
                    "missing Debian packages and not root, cannot install them: "
                    f"{' '.join(missing)}\n  run: sudo apt-get install {' '.join(missing)}"
                )
            say(f"apt-get install {' '.join(missing)} (log: {log})")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            _run_logged(["apt-get", "update"], log, "apt-get update", env)
            _run_logged(
                ["apt-get", "install", "-y", "-q", *missing],
                log,
                f"apt-get install of {' '.join(missing)}",
                env,
            )
            still = _missing_apt_packages()
            if still:
                raise SplashInstallError(
                    f"apt-get finished but these packages are not installed: {' '.join(still)}"
                )

        versions = _venv_versions(python)
        if not versions or versions.get("splash") != SPLASH_VERSION:
            if not python.exists():
                say(f"creating the venv {venv} ({SYSTEM_PYTHON} --system-site-packages)")
                _run_logged(
                    [SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)],
                    log,
                    "creating the Splash venv",
                )
            say(f"pip install {' '.join(PIP_REQUIREMENTS)} (log: {log})")
            _run_logged(
                [
                    str(python),
                    *("-m", "pip", "install", "-q", "--disable-pip-version-check"),
                    *PIP_REQUIREMENTS,
                ],
                log,
                f"pip install {' '.join(PIP_REQUIREMENTS)}",
            )
            versions = _venv_versions(python)
            if not versions or versions.get("splash") != SPLASH_VERSION:
                raise SplashInstallError(
                    f"pip finished but splash {SPLASH_VERSION} is not in {venv}"
                )
        _check_runtime(python)
        seconds = time.monotonic() - started
        marker.write_text(
            json.dumps({"versions": versions, "installed_at": time.time(), "seconds": seconds})
        )
        say(f"Splash {SPLASH_VERSION} installed in {home} in {seconds:.1f} s")
        return SplashInstall(home, python, False, seconds, versions)


# -- processes -------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time in clock ticks) from /proc, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class ProcessRef:
    """A process by pid *and* start time, so that a recorded pid that the
    system has since given to another process is never signalled."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        stat = _proc_stat(pid)
        return None if stat is None else cls(pid, stat[2])

    def alive(self) -> bool:
        """True while it runs (a zombie, or a pid now used by another process, is not it)."""
        stat = _proc_stat(self.pid)
        return stat is not None and stat[2] == self.start and stat[0] not in ("Z", "X")

    def signal(self, signum: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def end(self, grace: float) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
        sent = self.signal(signal.SIGCONT) and self.signal(signal.SIGTERM)
        if sent and not self.wait_gone(grace):
            self.signal(signal.SIGKILL)
            self.wait_gone(5.0)


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None and stat[1] == pid:
                children.append(int(entry))
    return children


def _xvfb_display(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for arg in argv:
        if arg.startswith(b":") and arg[1:].isdigit():
            return arg.decode()
    return None


def _remove_stale_x_lock(display: str | None, pid: int) -> None:
    """A SIGKILLed Xvfb leaves /tmp/.X<n>-lock behind; remove it if it is that Xvfb's."""
    if not display:
        return
    number = display[1:]
    lock = Path(f"/tmp/.X{number}-lock")
    try:
        owner = int(lock.read_text().strip())
    except (OSError, ValueError):
        return
    if owner == pid:
        for path in (lock, Path(f"/tmp/.X11-unix/X{number}")):
            with contextlib.suppress(OSError):
                path.unlink()


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, the kernel's picks.

    The sockets stay bound until all are chosen, so that the kernel cannot
    hand out one port twice; a race with other programs binding meanwhile
    remains possible, as with any such pick.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """One free loopback port (see :func:`free_ports`)."""
    return free_ports(1)[0]


def _node_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "QT_QPA_PLATFORM", "DISPLAY")
    }
    # QtWebEngine refuses to start as root without it.
    env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    return env


# Loopback only: no proxy from the environment may sit between us and a node.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET on loopback, bypassing any proxy; (status, body), also for HTTP errors.
    Raises OSError when there is no answer."""
    try:
        with _LOOPBACK.open(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()
    except http.client.HTTPException as error:  # a half-started or dying node
        raise OSError(f"bad answer from {url}: {error!r}") from error


class RealSplashNode:
    """One real Splash 3.5 process on loopback, and the means to hurt it.

    ``start()`` spawns the node and waits for its ``/_ping``; ``start_seconds``
    is then how long that took, ``spawned_at`` and ``started_at`` the
    ``time.monotonic()`` of the spawn and of the first answer. The node's Xvfb
    (Splash starts it as a child) is found and recorded at start, because a
    SIGKILLed node leaves it behind and it must then be ended by its own pid.
    ``restart()`` reuses the port. ``parent_pid`` makes the node end itself
    when that process is gone, so a crashed test run leaves no node behind
    (the launcher watches it).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        slots: int = 5,
        maxrss_mb: int | None = None,
        max_timeout: int = MAX_TIMEOUT,
        extra_args: Sequence[str] = (),
        home: Path | None = None,
        log_dir: Path | None = None,
        name: str | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.home = home or splash_home()
        self.python = self.home / "venv" / "bin" / "python"
        self.port = port or free_port()
        self.slots = slots
        self.maxrss_mb = maxrss_mb
        self.max_timeout = max_timeout
        self.extra_args = list(extra_args)
        self.name = name or f"splash-{self.port}"
        self.log_dir = log_dir or self.home / "run"
        self.log_path = self.log_dir / f"{self.name}.log"
        self.parent_pid = parent_pid
        self.start_seconds: float | None = None
        self.spawned_at: float | None = None
        self.started_at: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ref: ProcessRef | None = None
        self._xvfb: ProcessRef | None = None
        self._xvfb_display: str | None = None
        self._frozen = False
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else ("running" if self.running else "stopped")
        return f"<RealSplashNode {self.name} {self.url} {state}>"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        """``host:port``, as the add-on's per-node stats name the node."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._ref.pid if self._ref else None

    @property
    def xvfb_pid(self) -> int | None:
        return self._xvfb.pid if self._xvfb else None

    @property
    def xvfb_alive(self) -> bool:
        """True while the Xvfb recorded at start still runs."""
        return self._xvfb is not None and self._xvfb.alive()

    @property
    def running(self) -> bool:
        """True while the process exists (frozen included)."""
        if self._proc is not None:
            return self._proc.poll() is None
        return self._ref is not None and self._ref.alive()

    @property
    def frozen(self) -> bool:
        return self._frozen

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def command(self) -> list[str]:
        command = [str(self.python), str(LAUNCHER)]
        if self.parent_pid:
            command += ["--ssc-parent-pid", str(self.parent_pid)]
        command += ["-i", "127.0.0.1", "--port", str(self.port), "--slots", str(self.slots)]
        command += ["--max-timeout", str(self.max_timeout)]
        if self.maxrss_mb is not None:
            command += ["--maxrss", str(self.maxrss_mb)]
        return command + self.extra_args

    def start(self, timeout: float = 60.0) -> RealSplashNode:
        """Spawns the node and waits until ``/_ping`` answers 200."""
        with self._lock:
            if self.running:
                raise SplashError(f"{self.name} is already running (pid {self.pid})")
            if not self.python.exists():
                venv = self.python.parent.parent
                raise SplashError(f"no Splash venv at {venv}: run `scripts/splash.py install`")
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:
                log.write(f"\n--- {time.strftime('%F %T')} {' '.join(self.command())}\n".encode())
                log.flush()
                begun = self.spawned_at = time.monotonic()
                # Own session: a Ctrl-C in the terminal reaches the test run,
                # whose teardown stops the nodes, not the nodes themselves.
                self._proc = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_node_env(),
                    start_new_session=True,
                )
            self._ref = ProcessRef.of(self._proc.pid) or ProcessRef(self._proc.pid, -1)
            self._xvfb = None
            self._xvfb_display = None
            self._frozen = False
            try:
                self._wait_ready(begun + timeout)
            except BaseException:
                self._find_xvfb()  # so that kill() ends it too
                self.kill()
                raise
            self.start_seconds = time.monotonic() - begun
            self.started_at = time.monotonic()
            self._find_xvfb()
            return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise SplashError(
                    f"{self.name} exited with status {self._proc.returncode} before answering "
                    f"/_ping; log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http_get(f"{self.url}/_ping", 1.0)
                if status == 200:
                    return
            if time.monotonic() >= deadline:
                raise SplashError(
                    f"{self.name} did not answer /_ping on {self.url}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _find_xvfb(self) -> None:
        """Records the Xvfb that Splash started as its child (before /_ping answers)."""
        assert self._ref is not None
        for child in _children(self._ref.pid):
            if _proc_comm(child) == "Xvfb":
                self._xvfb = ProcessRef.of(child)
                self._xvfb_display = _xvfb_display(child)
                return

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            status, _ = http_get(f"{self.url}/_ping", timeout)
        except OSError:
            return False
        return status == 200

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _reap(self, timeout: float | None) -> bool:
        """Waits for the node process to exit; True if it did."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return self._ref is None or self._ref.wait_gone(timeout or 0.0)

    def _end_xvfb(self) -> None:
        """Ends the node's Xvfb by its recorded pid, if the node left it behind."""
        xvfb, display = self._xvfb, self._xvfb_display
        if xvfb is None:
            return
        if xvfb.alive():
            xvfb.end(_XVFB_GRACE)
        if not xvfb.alive():
            _remove_stale_x_lock(display, xvfb.pid)

    def kill(self) -> None:
        """SIGKILL: every socket of the node closes at once; then its Xvfb is ended."""
        with self._lock:
            if self._ref is not None:
                self._ref.signal(signal.SIGKILL)
            self._frozen = False
            self._reap(5.0)
            self._end_xvfb()

    def terminate(self, timeout: float = _STOP_GRACE) -> None:
        """SIGTERM, as an orchestrator stops a node; raises if it is still up after ``timeout``."""
        with self._lock:
            if self._ref is not None and self._ref.signal(signal.SIGTERM) and self._frozen:
                self.unfreeze()
            if not self._reap(timeout):
                raise SplashError(f"{self.name} did not exit within {timeout} s of SIGTERM")
            self._end_xvfb()

    def stop(self, timeout: float = _STOP_GRACE) -> None:
        """Stops the node if it runs (SIGTERM, SIGKILL after ``timeout``) and its Xvfb;
        safe to call twice, and on a frozen node."""
        with self._lock:
            if self._ref is not None and self.running:
                self._ref.signal(signal.SIGCONT)
                self._ref.signal(signal.SIGTERM)
                if not self._reap(timeout):
                    self._ref.signal(signal.SIGKILL)
                    self._reap(5.0)
            self._frozen = False
            self._end_xvfb()

    def freeze(self) -> None:
        """SIGSTOP: the node keeps its sockets (connects succeed) but answers nothing."""
        with self._lock:
            if self._ref is not None and self._ref.signal(signal.SIGSTOP):
                self._frozen = True

    def unfreeze(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        with self._lock:
            if self._ref is not None:
                self._ref.signal(signal.SIGCONT)
            self._frozen = False

    def restart(self, timeout: float = 60.0) -> RealSplashNode:
        """Stops the node if it runs and starts a new one on the same port."""
        with self._lock:
            self.stop()
            return self.start(timeout)

    def wait_exit(self, timeout: float) -> int | None:
        """Waits for the node to exit by itself; its status, or None if still running."""
        if not self._reap(timeout):
            return None
        self._end_xvfb()
        return self.returncode

    def record(self) -> dict[str, Any]:
        """What ``stop`` and ``status`` of another process need to find this node."""
        return {
            "name": self.name,
            "url": self.url,
            "port": self.port,
            "pid": asdict(self._ref) if self._ref else None,
            "xvfb": asdict(self._xvfb) if self._xvfb else None,
            "xvfb_display": self._xvfb_display,
            "log": str(self.log_path),
            "start_seconds": self.start_seconds,
            "recorded_at": time.time(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], home: Path | None = None) -> RealSplashNode:
        node = cls(
            record["port"], home=home, log_dir=Path(record["log"]).parent, name=record["name"]
        )
        node._ref = ProcessRef(**record["pid"]) if record.get("pid") else None
        node._xvfb = ProcessRef(**record["xvfb"]) if record.get("xvfb") else None
        node._xvfb_display = record.get("xvfb_display")
        node.start_seconds = record.get("start_seconds")
        return node


# -- command line ----------------------------------------------------------------


def start_in_parallel(nodes: Sequence[RealSplashNode], timeout: float = 60.0) -> None:
    """Starts nodes at once (each waits for its own /_ping: a node takes about
    a second); raises the first failure after every start has ended."""
    errors: list[BaseException] = []

    def start(node: RealSplashNode) -> None:
        try:
            node.start(timeout)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) if args.run_dir else Path(args.home) / "run"


def _load_state(run_dir: Path) -> list[dict[str, Any]]:
    try:
        records: list[dict[str, Any]] = json.loads((run_dir / _STATE).read_text())
    except (OSError, ValueError):
        return []
    return records


def _save_state(run_dir: Path, records: list[dict[str, Any]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (_STATE + ".tmp")
    tmp.write_text(json.dumps(records, indent=2))
    tmp.replace(run_dir / _STATE)


def _cmd_install(args: argparse.Namespace) -> int:
    result = install(Path(args.home))
    print(f"python={result.python} reused={result.reused} seconds={result.seconds:.1f}")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    home, run_dir = Path(args.home), _run_dir(args)
    if not (home / _MARKER).exists():
        raise SplashInstallError(f"Splash is not installed in {home}: run `install` first")
    records = _load_state(run_dir)
    live = [r for r in records if RealSplashNode.from_record(r, home).running]
    taken = {r["port"] for r in live}
    ports = [args.base_port + i for i in range(args.count)]
    if taken & set(ports):
        raise SplashError(f"ports {sorted(taken & set(ports))} already have recorded nodes")
    nodes = [
        RealSplashNode(
            port,
            slots=args.slots,
            maxrss_mb=args.maxrss,
            extra_args=args.engine_args or (),
            home=home,
            log_dir=run_dir,
        )
        for port in ports
    ]
    try:
        start_in_parallel(nodes, args.timeout)
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    _save_state(run_dir, live + [node.record() for node in nodes])
    for node in nodes:
        print(f"{node.url}  pid={node.pid} xvfb={node.xvfb_pid} up in {node.start_seconds:.2f}s")
    print("SPLASH_URLS=" + ",".join(node.url for node in nodes))
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    home, run_dir = Path(args.home), _run_dir(args)
    records = _load_state(run_dir)
    if not records:
        print(f"no nodes recorded in {run_dir / _STATE}")
        return 0
    for record in records:
        node = RealSplashNode.from_record(record, home)
        was = "running" if node.running else "not running"
        node.stop(args.timeout)
        print(f"{node.url} pid={node.pid} ({was}): stopped")
    _save_state(run_dir, [])
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    home, run_dir = Path(args.home), _run_dir(args)
    installed = home / _MARKER
    print(f"install: {home} ({'installed' if installed.exists() else 'not installed'})")
    records = _load_state(run_dir)
    if not records:
        print("nodes: none recorded")
    down = 0
    for record in records:
        node = RealSplashNode.from_record(record, home)
        state = "UP" if node.running and node.ping() else ("no ping" if node.running else "gone")
        down += state != "UP"
        print(f"{node.url} pid={node.pid} xvfb={node.xvfb_pid} {state}  log={node.log_path}")
    return 1 if down else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/splash.py", description="Install and run real Splash 3.5 nodes on loopback."
    )
    parser.add_argument(
        "--home", default=str(splash_home()), help=f"install directory (${HOME_ENV})"
    )
    parser.add_argument("--run-dir", default=None, help="logs and pids (default <home>/run)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="apt packages + the Splash venv (idempotent)")
    start = commands.add_parser("start", help="start N nodes on consecutive ports")
    start.add_argument("count", type=int)
    start.add_argument("--base-port", type=int, default=8050)
    start.add_argument("--slots", type=int, default=5)
    start.add_argument("--maxrss", type=int, default=None, help="Splash --maxrss, in MB")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for /_ping")
    start.add_argument(
        "--engine-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="everything after it goes to Splash as is",
    )
    stop = commands.add_parser("stop", help="stop every recorded node and its Xvfb")
    stop.add_argument("--timeout", type=float, default=_STOP_GRACE, help="SIGTERM grace")
    commands.add_parser("status", help="the recorded nodes and whether they answer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "install": _cmd_install,
        "start": _cmd_start,
        "stop": _cmd_stop,
        "status": _cmd_status,
    }
    try:
        return handlers[args.command](args)
    except SplashError as error:
        banner = "!" * 72
        kind = "INSTALL FAILED" if isinstance(error, SplashInstallError) else "FAILED"
        print(f"{banner}\nSPLASH {kind}: {error}\n{banner}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
