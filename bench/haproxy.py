"""HAProxy in front of the mock nodes: the classic setup the project replaces.

The configuration is the one found in scrapy-splash deployments (leastconn,
``retries 3``, ``option redispatch``, an HTTP health check on ``/_ping``, and
per server ``check maxconn 5 inter 2s fall 10 observe layer4``), bound to
127.0.0.1, with a stats socket so that the benchmark can read HAProxy's own
retry and redispatch counters at the end of a crawl.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CONFIG_TEMPLATE = """\
global
    maxconn 4096
    stats socket {socket} mode 600 level admin
    log stdout format raw local0 notice

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 90s
    timeout server 90s
    timeout queue 60s
    retries 3
    option redispatch

frontend splash
    bind 127.0.0.1:{port}
    default_backend splash_nodes

backend splash_nodes
    balance leastconn
    option httpchk GET /_ping
{servers}
"""
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVER_LINE = (
    "    server {name} 127.0.0.1:{port} check maxconn {maxconn} inter 2s fall 10 observe layer4"
)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class HAProxyMissing(RuntimeError):
    """The haproxy binary is not installed."""


def haproxy_binary() -> str:
    """The haproxy executable, or a clear error saying how to get it."""
    path = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if path is None:
        raise HAProxyMissing(
            "haproxy is not installed: the HAProxy contender needs it "
            "(Debian/Ubuntu: `apt-get install -y haproxy`; this benchmark was written for "
            "HAProxy 2.6). Or leave it out: --contenders cluster single"
        )
    return path


def haproxy_version() -> str:
    """First line of ``haproxy -v``."""
    out = subprocess.run([haproxy_binary(), "-v"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HAProxy:
    """One HAProxy process in front of the given nodes (name, port), on a free port."""

    def __init__(self, nodes: list[tuple[str, int]], maxconn: int) -> None:
        self.nodes = nodes
        self.maxconn = maxconn
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="bench-haproxy-")
        self.socket_path = str(Path(self._dir.name) / "stats.sock")
        self.config_path = Path(self._dir.name) / "haproxy.cfg"
        self.log_path = Path(self._dir.name) / "haproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def config(self) -> str:
        servers = "\n".join(
            SERVER_LINE.format(name=name, port=port, maxconn=self.maxconn)
            for name, port in self.nodes
        )
        return CONFIG_TEMPLATE.format(socket=self.socket_path, port=self.port, servers=servers)

    def start(self, timeout: float = 10.0) -> HAProxy:
        self.config_path.write_text(self.config())
        binary = haproxy_binary()
        subprocess.run([binary, "-c", "-q", "-f", str(self.config_path)], check=True)
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            [binary, "-db", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"haproxy exited at start: {self.log_path.read_text()}")
            try:
                rows = self.stats()
            except OSError:
                time.sleep(0.05)
                continue
            # Ready once every server has passed its first check.
            servers = [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]
            if servers and all(r["status"] == "UP" for r in servers):
                return self
            time.sleep(0.05)
        raise RuntimeError("haproxy did not report every server UP in time")

    def command(self, line: str) -> str:
        """One command on the stats socket, e.g. ``show stat``."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(self.socket_path)
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def stats(self) -> list[dict[str, str]]:
        """``show stat`` as a list of rows (frontend, servers, backend)."""
        text = self.command("show stat").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def cpu_seconds(self) -> float:
        """User + system CPU time of the haproxy process so far."""
        return process_cpu_seconds(self.pid)

    def summary(self) -> dict[str, Any]:
        """What the benchmark reports: retries, redispatches, 5xx, DOWN transitions."""
        rows = self.stats()
        backend = next(r for r in rows if r["svname"] == "BACKEND")
        servers = [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")]

        def number(row: dict[str, str], key: str) -> int:
            return int(row.get(key) or 0)

        return {
            "retries": number(backend, "wretr"),
            "redispatches": number(backend, "wredis"),
            "responses_5xx": number(backend, "hrsp_5xx"),
            "connection_errors": number(backend, "econ"),
            "response_errors": number(backend, "eresp"),
            "downs": sum(number(r, "chkdown") for r in servers),
            "servers": {
                r["svname"]: {
                    "requests": number(r, "stot"),
                    "downs": number(r, "chkdown"),
                    "retries": number(r, "wretr"),
                    "redispatches": number(r, "wredis"),
                    "status": r["status"],
                }
                for r in servers
            },
        }

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._dir.cleanup()

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
