"""MockSplashNode: a handle on a mock Splash node running as a subprocess.

Why a subprocess and not a server in the test's own loop: the failures a
balancer must survive are process-level. SIGKILL closes every socket at once,
SIGSTOP leaves connections open with nobody reading, and a restart on the same
port is a new process. Only a real process gives those for real; the handle
sends the signals, and talks to the node's control port (small blocking
``http.client`` calls) for stats and injected faults.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ._capacity import check_capacity
from ._memory import MaxrssOptions
from ._node import RENDER_MODES

__all__ = ["MockSplashNode", "MockSplashNodeError", "start_nodes", "stop_nodes"]

# The child runs ``scrapy_splash_cluster.testing`` as ``__main__`` (the same
# code as ``python -m scrapy_splash_cluster.testing``) behind a bare parent
# package, so that it does not execute ``scrapy_splash_cluster/__init__.py``:
# that imports the compiled balancer (tens of MB in a debug build), which a
# mock node does not use and must not depend on; a node must start while the
# extension is missing, stale or being rebuilt.
_BOOTSTRAP = """\
import runpy, sys, types
package = types.ModuleType("scrapy_splash_cluster")
package.__path__ = [sys.argv.pop(1)]
sys.modules["scrapy_splash_cluster"] = package
runpy.run_module("scrapy_splash_cluster.testing", run_name="__main__", alter_sys=True)
"""
_READY_RE = re.compile(rb"^MOCK-SPLASH READY name=(.*) port=(\d+) control_port=(\d+) pid=(\d+)\s*$")
# The directory holding the ``scrapy_splash_cluster`` package, put first on the
# child's PYTHONPATH so it imports this very copy, wherever the tests found it.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_PACKAGE_ROOT = str(_PACKAGE_DIR.parent)
_CONTROL_TIMEOUT = 5.0
_STOP_GRACE = 5.0


class MockSplashNodeError(RuntimeError):
    """A node did not start, or a control call failed."""


class MockSplashNode:
    """A mock Splash node in a child process, plus the means to hurt it.

    ``start()`` spawns the command line node (``python -m
    scrapy_splash_cluster.testing``, see ``_BOOTSTRAP``) and waits for its
    READY line; ``url`` is then the base URL to give a balancer. ``port=0``
    picks an ephemeral port at the first start; ``restart()`` reuses it.
    ``render_mode="fetch"`` makes the node load pages from a loopback site
    instead of answering fixed content (see ``_node``'s docstring); a restart
    keeps the mode, as it keeps the port. ``capacity=N`` makes a node whose
    renders beyond N at once share it and slow down in proportion (see the
    package docstring). ``maxrss`` (MB), ``rss_per_render``, ``base_rss``,
    ``maxrss_check`` and ``restart_after`` make it exit as Splash's
    ``--maxrss`` does, and come back as under a supervisor (the package
    docstring again); :meth:`set_rss` pushes its simulated RSS on demand.
    """

    def __init__(
        self,
        name: str,
        port: int = 0,
        slots: int = 20,
        latency: float = 0.0,
        max_timeout: float = 90.0,
        host: str = "127.0.0.1",
        *,
        control_port: int = 0,
        startup_timeout: float = 15.0,
        render_mode: str = "static",
        capacity: int | None = None,
        maxrss: float | None = None,
        rss_per_render: float = 0.0,
        base_rss: float = 100.0,
        maxrss_check: float = 60.0,
        restart_after: float | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if max_timeout <= 0:
            raise ValueError(f"max_timeout must be > 0, got {max_timeout}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        check_capacity(capacity)
        self._name = name
        self._requested_port = port
        self._port: int | None = port or None
        self._requested_control_port = control_port
        self._control_port: int | None = None
        self.slots = slots
        self.latency = latency
        self.max_timeout = max_timeout
        self.render_mode = render_mode
        self.capacity = capacity
        self.memory = MaxrssOptions(maxrss, rss_per_render, base_rss, maxrss_check, restart_after)
        self.host = host
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._pid: int | None = None
        self._frozen = False

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else ("running" if self.running else "stopped")
        return f"<MockSplashNode {self._name} port={self._port} {state}>"

    # -- properties ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's name (its answers carry it in X-Mock-Splash-Node)."""
        return self._name

    @property
    def port(self) -> int:
        """The render port; known once started (kept across restarts)."""
        if self._port is None:
            raise MockSplashNodeError(f"node {self._name} has not been started")
        return self._port

    @property
    def control_port(self) -> int:
        """The control port of the current process."""
        if self._control_port is None:
            raise MockSplashNodeError(f"node {self._name} has not been started")
        return self._control_port

    @property
    def url(self) -> str:
        """Base URL of the render port, e.g. ``http://127.0.0.1:8050``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """Pid of the current (or last) process."""
        if self._pid is None:
            raise MockSplashNodeError(f"node {self._name} has not been started")
        return self._pid

    @property
    def running(self) -> bool:
        """True while the process exists (frozen included)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def frozen(self) -> bool:
        """True between ``freeze()`` and ``unfreeze()``."""
        return self._frozen

    # -- process lifecycle -----------------------------------------------------

    def start(self) -> MockSplashNode:
        """Spawn the node and wait for its READY line (``startup_timeout`` s)."""
        if self.running:
            raise MockSplashNodeError(f"node {self._name} is already running")
        self._cleanup()
        port = self._port or self._requested_port
        cmd = [
            sys.executable,
            "-c",
            _BOOTSTRAP,
            str(_PACKAGE_DIR),
            "--name",
            self._name,
            "--host",
            self.host,
            "--port",
            str(port),
            "--control-port",
            str(self._requested_control_port),
            "--slots",
            str(self.slots),
            "--max-timeout",
            repr(float(self.max_timeout)),
            "--latency",
            repr(float(self.latency)),
            "--render-mode",
            self.render_mode,
            "--parent-pid",
            str(os.getpid()),
        ]
        if self.capacity is not None:
            cmd += ["--capacity", str(self.capacity)]
        cmd += self.memory.cli_args()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        # A file, not a pipe: nobody reads stderr while the node runs.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _cleanup
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, env=env
        )
        self._pid = self._proc.pid
        try:
            line = self._read_ready_line()
        except BaseException:
            self._force_stop()
            raise
        match = _READY_RE.match(line)
        if match is None:
            self._force_stop()
            raise MockSplashNodeError(f"node {self._name}: unexpected first line {line!r}")
        self._port = int(match.group(2))
        self._control_port = int(match.group(3))
        # The node writes nothing else to stdout.
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        return self

    def _read_ready_line(self) -> bytes:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.startup_timeout
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MockSplashNodeError(
                    f"node {self._name} did not print its READY line within "
                    f"{self.startup_timeout} s; stderr:\n{self._stderr_text()}"
                )
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                proc.wait(timeout=_STOP_GRACE)
                raise MockSplashNodeError(
                    f"node {self._name} exited with status {proc.returncode} before it was ready; "
                    f"stderr:\n{self._stderr_text()}"
                )
            data += chunk
        return data.split(b"\n", 1)[0]

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def _signal(self, signum: int) -> bool:
        """Send a signal if the process still runs; False if it had exited."""
        if not self.running:
            return False
        assert self._proc is not None
        try:
            self._proc.send_signal(signum)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL and reap: every socket of the node closes at once."""
        self._signal(signal.SIGKILL)
        self._frozen = False
        if self._proc is not None:
            self._proc.wait()

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait for the node to exit (``subprocess.TimeoutExpired`` if it does not)."""
        if self._signal(signal.SIGTERM) and self._frozen:
            self.unfreeze()
        if self._proc is not None:
            self._proc.wait(timeout=timeout)

    def freeze(self) -> None:
        """SIGSTOP: the node keeps its sockets (connects still succeed) but answers nothing."""
        if self._signal(signal.SIGSTOP):
            self._frozen = True

    def unfreeze(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        self._signal(signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        """Stop the node if it runs (SIGTERM, SIGKILL after 5 s); safe to call twice."""
        if self.running:
            if self._frozen:
                self.unfreeze()
            self._signal(signal.SIGTERM)
            assert self._proc is not None
            try:
                self._proc.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._force_stop()
        self._cleanup()

    def restart(self) -> MockSplashNode:
        """Stop the process if it runs, start a new one on the same render port."""
        self.stop()
        return self.start()

    def _force_stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
        self._frozen = False
        self._cleanup()

    def _cleanup(self) -> None:
        """Release the pipes and files of a process that has exited."""
        if self._proc is not None and self._proc.poll() is not None:
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
            self._frozen = False
        if self._proc is None and self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> MockSplashNode:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control port ----------------------------------------------------------

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        conn = http.client.HTTPConnection(self.host, self.control_port, timeout=_CONTROL_TIMEOUT)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise MockSplashNodeError(
                f"node {self._name}: control call {method} {path} failed: {exc!r}"
            ) from exc
        finally:
            conn.close()
        if response.status != 200:
            raise MockSplashNodeError(
                f"node {self._name}: control call {method} {path} answered {response.status}: "
                f"{data.decode('utf-8', 'replace')}"
            )
        return json.loads(data)

    def set_fault(self, mode: str, count: int | None = None, **params: Any) -> dict[str, Any]:
        """Inject a fault (see the package docstring); returns the node's fault state.

        ``count=N`` applies it to the next N render requests only. Extra
        keyword arguments are the mode's parameters (``latency``, ``downtime``,
        ``ping``, ``garbage``).
        """
        result = self._control("POST", "/fault", {"mode": mode, "count": count, **params})
        return dict(result["fault"])

    def clear_fault(self) -> None:
        """Back to normal service (re-opens the render port after ``refuse``)."""
        self.set_fault("none")

    def set_rss(self, mb: float) -> dict[str, Any]:
        """Set the node's simulated peak RSS to ``mb`` MB (``POST /rss``): the
        next ``--maxrss`` check exits the node if that is over its limit.
        Returns ``{"rss_mb", "maxrss", "exits"}``."""
        result = self._control("POST", "/rss", {"mb": mb})
        return {key: result[key] for key in ("rss_mb", "maxrss", "exits")}

    def stats(self) -> dict[str, Any]:
        """The node's counters (``GET /stats`` on the control port)."""
        return dict(self._control("GET", "/stats"))

    def reset_stats(self) -> None:
        """Zero the node's counters (the fault stays)."""
        self._control("POST", "/reset")


def start_nodes(
    n: int = 3, *, name_prefix: str = "node", first_index: int = 1, **node_kwargs: Any
) -> list[MockSplashNode]:
    """Start ``n`` nodes named ``<prefix>-<i>`` in parallel threads and return them.

    Starting in parallel matters because each node is a Python process that
    takes a tenth of a second or so to import and listen. If any node fails,
    the ones that started are stopped and the first error is raised.
    ``node_kwargs`` go to :class:`MockSplashNode` (``slots``, ``latency``...).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if node_kwargs.get("port") and n > 1:
        raise ValueError("a fixed port can only be given when starting one node")
    nodes = [
        MockSplashNode(f"{name_prefix}-{i}", **node_kwargs)
        for i in range(first_index, first_index + n)
    ]
    with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
        futures = [pool.submit(node.start) for node in nodes]
        errors = [exc for exc in (future.exception() for future in futures) if exc is not None]
    if errors:
        stop_nodes(nodes)
        raise errors[0]
    return nodes


def stop_nodes(nodes: list[MockSplashNode]) -> None:
    """Stop nodes in parallel (a frozen or hung node can take 5 s to stop)."""
    if not nodes:
        return
    with ThreadPoolExecutor(max_workers=min(len(nodes), 16)) as pool:
        futures = [pool.submit(node.stop) for node in nodes]
    errors = [exc for exc in (future.exception() for future in futures) if exc is not None]
    if errors:
        raise errors[0]
