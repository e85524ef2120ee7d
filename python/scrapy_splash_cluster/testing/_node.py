"""The mock Splash node's server: its two ports, its slots and queue, its renders.

Why a mock: a real Splash node needs Qt, Xvfb and 370 MB per process and
renders in milliseconds to seconds; a balancer's tests need many nodes that
start in a tenth of a second, answer deterministically, and fail on command in
each way a real node (or the proxy in front of it) fails.

What is faithful to Splash 3.5 (``splash/resources.py``, ``render_options.py``):

* the endpoints, their arguments and checks (``_args``), the JSON error
  format (``_errors``), the shapes of the answers (``_pages``);
* ``--slots`` renders at once, the rest in an unbounded FIFO queue, no 503;
  the global timeout starts when the request arrives, so a request can time out
  in the queue. As in Splash, the timer is ``timeout + wait`` seconds and the
  504's ``info.timeout`` is ``timeout``;
* a client that disconnects cancels its render and frees its slot;
* with ``capacity`` (None: unlimited), a node whose host can serve fewer
  renders at full speed than its slots accept: beyond ``capacity`` renders,
  all renders share the node as a CPU-bound Splash's do (processor sharing,
  see ``_capacity``), so each one's render time stretches in proportion, and
  the timeout, counted from arrival, ends a stretched render as a 504 too;
* with ``maxrss``, Splash's ``--maxrss``: a simulated peak RSS (``_memory``)
  reported by ``/_ping`` and ``/_debug``, checked every ``maxrss_check``
  seconds; over the limit the node exits (every render in flight and queued
  cut) and, with ``restart_after``, listens again as a new process, by the
  same path as the ``crash`` fault (:meth:`MockSplashServer._exit_process`).

What is not, in the default ``"static"`` render mode: pages are not fetched
and Lua is not run. A render takes ``latency + wait`` seconds and returns fixed
content naming the url and the node; ``/execute`` and ``/run`` return a JSON
summary instead of running the script. A url whose host ends in ``.invalid``
fails as an unresolvable host does (502 RenderError, Network error 3) on every
endpoint.

The ``"fetch"`` render mode (``render_mode="fetch"``, ``--render-mode fetch``)
is for demos and end-to-end tests that scrape a real local website through the
nodes. The render endpoints (``/render.*``) then really load the ``url``
argument (``_fetch``: loopback ``http://`` only, redirects followed, Qt's
error codes for a page that cannot be loaded), still taking ``latency +
wait`` seconds besides the load, which counts against the render's
``timeout`` (a page that never answers ends as 504 GlobalTimeoutError, as in
Splash):

* a page with an error status (404, 500...) is rendered anyway, as Splash
  does: render.html answers 200 with that page. The page's status shows where
  Splash 3.5 shows it: in the HAR (render.har, or render.json with ``har=1``)
  and in render.json's ``history`` (``history=1``). Splash's render.json has
  no ``http_status`` key, so neither does the mock's: with scrapy-splash's
  magic responses, the Scrapy response of a 404 page is a 200 with both;
* render.json's ``url`` is the url after redirects and ``title`` the page's
  ``<title>``; render.png and render.jpeg load the page, then answer the fixed
  image. The mock runs no Lua: ``/execute`` and ``/run`` with a ``url``
  argument load that url as the usual session script would (cookies in,
  ``splash:go``, then ``{url, http_status, html, cookies}``); without one they
  load nothing and answer as in static mode;
* the mock cannot run JavaScript. It emulates one page convention instead,
  the one the demo site in ``examples/`` follows (see
  :func:`~._pages.emulate_page_script`): a page written to it comes out of
  the mock as it would come out of a browser running the page's script, and a
  page that relies on any other script comes out as fetched, unrendered;
* every rendered page gets ``<meta name="rendered-by" content="NODE">`` at
  the start of its ``<head>``, so that a spider can tell which node rendered
  it (the ``X-Mock-Splash-Node`` header is still sent as well).

Fault injection (the ``/fault`` control call) is described in
:data:`~._faults.FAULT_MODES` and in the package docstring.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import errno
import html
import json
import os
import sys
import time
from typing import Any

from ._args import DEFAULT_TIMEOUT, ArgumentCache, parse_args, validate
from ._capacity import SharedCpu
from ._errors import (
    HTML,
    NOT_FOUND_BODY,
    BadOption,
    ScriptError,
    bad_option,
    global_timeout,
    json_response,
    method_not_allowed,
)
from ._faults import (
    CONNECTION_FAULTS,
    FAULT_MODES,
    RENDER_FAULTS,
    FaultState,
    fault_answer,
    garbage,
)
from ._fetch import LoadError, Page, load_render_page, unresolvable_host
from ._http import Connection, HttpApp, Request, Response
from ._memory import MaxrssOptions, SimulatedRss
from ._pages import (
    add_rendered_by,
    emulate_page_script,
    render_answer,
    script_summary,
    static_page,
)

__all__ = ["RENDER_ENDPOINTS", "RENDER_MODES", "MockSplashServer"]

RENDER_ENDPOINTS = (
    "/render.html",
    "/render.png",
    "/render.jpeg",
    "/render.json",
    "/render.har",
    "/execute",
    "/run",
)

#: What a render does: answer fixed content, or load the page (see the module docstring).
RENDER_MODES = ("static", "fetch")

_LOG_SIZE = 1000


def _num_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


class _Stats:
    """Counters of the render port, since start or the last reset."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_endpoint: collections.Counter[str] = collections.Counter()
        self.pings = 0
        self.in_progress = 0
        self.max_in_progress = 0
        self.max_active = 0
        self.completed = 0
        self.cancelled = 0
        self.dropped = 0
        self.bytes_received = 0
        self.expired_args = 0
        # Exits on --maxrss (each cuts every render in flight or queued).
        self.exits = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=_LOG_SIZE)

    @classmethod
    def fresh(cls, in_progress: int, active: int) -> _Stats:
        """Zeroed counters that keep the live gauges (and start their maxima there)."""
        stats = cls()
        stats.in_progress = stats.max_in_progress = in_progress
        stats.max_active = active
        return stats


class _Job:
    """One render request from arrival to answer."""

    __slots__ = (
        "args",
        "conn",
        "endpoint",
        "entry",
        "fault",
        "fault_params",
        "page",
        "render_time",
        "rendering",
        "saved",
        "task",
        "timed_out",
        "timeout",
        "timer",
        "url",
        "wait",
    )

    def __init__(self, conn: Connection, endpoint: str, entry: dict[str, Any]) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self.entry = entry
        self.args: dict[str, Any] = {}
        self.url: str = ""
        self.timeout = DEFAULT_TIMEOUT
        self.wait = 0.0
        self.render_time = 0.0
        self.fault: str | None = None
        self.fault_params: dict[str, Any] = {}
        # Fetch mode: the loaded page, or the RenderError answer of a failed load.
        self.page: Page | Response | None = None
        self.rendering = False
        # save_args: argument name -> the key it was saved under.
        self.saved: dict[str, str] = {}
        self.timed_out = False
        self.task: asyncio.Task[Response | None] | None = None
        self.timer: asyncio.TimerHandle | None = None


class MockSplashServer:
    """A mock Splash node in the running asyncio loop: render port + control port.

    Use ``await start()`` / ``await close()``; :class:`MockSplashNode` runs one
    in a subprocess instead, which is what tests that kill nodes need.
    """

    def __init__(
        self,
        *,
        name: str = "mock-splash",
        host: str = "127.0.0.1",
        port: int = 0,
        control_port: int = 0,
        slots: int = 20,
        max_timeout: float = 90.0,
        latency: float = 0.0,
        bind_retry: float = 0.5,
        render_mode: str = "static",
        capacity: int | None = None,
        maxrss: float | None = None,
        rss_per_render: float = 0.0,
        base_rss: float = 100.0,
        maxrss_check: float = 60.0,
        restart_after: float | None = None,
    ) -> None:
        if not name or not name.isprintable() or not name.isascii():
            raise ValueError(f"name must be printable ASCII, got {name!r}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if max_timeout <= 0:
            raise ValueError(f"max_timeout must be > 0, got {max_timeout}")
        if latency < 0:
            raise ValueError(f"latency must be >= 0, got {latency}")
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
        self._name = name
        self.render_mode = render_mode
        self._argcache = ArgumentCache()
        self.host = host
        self.slots = slots
        self.max_timeout = float(max_timeout)
        self.latency = float(latency)
        self._port = port
        self._control_port = control_port
        self._bind_retry = bind_retry
        self._render_app = HttpApp(self._handle_render_port, (("X-Mock-Splash-Node", name),))
        self._control_app = HttpApp(self._handle_control)
        self._render_server: asyncio.Server | None = None
        self._control_server: asyncio.Server | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._stats = _Stats()
        self._jobs: set[_Job] = set()
        self._active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # Renders past the node's capacity share it (see _capacity).
        self._cpu = SharedCpu(capacity)
        self.memory = MaxrssOptions(maxrss, rss_per_render, base_rss, maxrss_check, restart_after)
        self._rss = SimulatedRss(base_rss, rss_per_render)
        self._maxrss_timer: asyncio.TimerHandle | None = None
        # False between an exit (crash, --maxrss) and the supervisor's restart.
        self._alive = True
        self._fault = FaultState()
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------

    @property
    def name(self) -> str:
        """The node's name, sent in every render-port answer as X-Mock-Splash-Node."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self._render_app.set_extra_headers((("X-Mock-Splash-Node", value),))

    @property
    def port(self) -> int:
        """The render port (the one a balancer sends to)."""
        return self._port

    @property
    def control_port(self) -> int:
        """The control port (stats and faults)."""
        return self._control_port

    async def start(self) -> None:
        """Listen on both ports; ports given as 0 become the ephemeral ones chosen."""
        self._render_server = await self._listen(self._render_app, self._port)
        self._port = self._render_server.sockets[0].getsockname()[1]
        try:
            self._control_server = await self._listen(self._control_app, self._control_port)
        except BaseException:
            self._render_server.close()
            raise
        self._control_port = self._control_server.sockets[0].getsockname()[1]
        self._schedule_maxrss_check()

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel every render."""
        if self._reopen_task is not None:
            self._reopen_task.cancel()
        self._cancel_maxrss_check()
        for server in (self._render_server, self._control_server):
            if server is not None:
                server.close()
        self._render_server = self._control_server = None
        for app in (self._render_app, self._control_app):
            for conn in list(app.connections):
                conn.drop("shutdown")
        for task in list(self._background):
            task.cancel()
        await asyncio.sleep(0)

    async def _listen(self, app: HttpApp, port: int) -> asyncio.Server:
        """Bind with SO_REUSEADDR, retrying a busy fixed port for a moment.

        The retry covers a restart on the same port while the old process's
        socket is still being torn down.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._bind_retry
        while True:
            try:
                return await loop.create_server(
                    app.protocol, self.host, port, reuse_address=True, backlog=1024
                )
            except OSError as exc:
                if port == 0 or exc.errno != errno.EADDRINUSE or loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.05)

    def _close_render_port(self, reason: str) -> None:
        if self._render_server is not None:
            self._render_server.close()
            self._render_server = None
        for conn in list(self._render_app.connections):
            conn.drop(reason)

    async def _open_render_port(self) -> None:
        if self._render_server is None:
            self._render_server = await self._listen(self._render_app, self._port)
        if not self._alive:
            # Listening again after an exit: a new process, as a supervisor
            # starts it, with nothing of the old one's memory or cache.
            self._alive = True
            self._rss.restart()
            self._argcache.clear()
            self._schedule_maxrss_check()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- faults --------------------------------------------------------------

    async def set_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply a fault given as the JSON of ``POST /fault``; ValueError if invalid."""
        mode = self._fault.set(spec)
        if mode == "refuse":
            if self._reopen_task is not None:
                self._reopen_task.cancel()
                self._reopen_task = None
            self._close_render_port("refuse")
        elif mode == "restart":
            self._fault.clear()
            self._close_render_port("restart")
            if self._reopen_task is not None:
                self._reopen_task.cancel()
            downtime = float(self._fault_downtime(spec))
            self._reopen_task = self._spawn(self._reopen_after(downtime))
        else:
            if mode == "die" and spec.get("count") is None:
                for job in list(self._jobs):
                    job.conn.drop("die")
            # Any other mode listens (after refuse, too); during a restart's
            # downtime only none/clear cuts the downtime short.
            restarting = self._reopen_task is not None and not self._reopen_task.done()
            if restarting and mode == "none":
                assert self._reopen_task is not None
                self._reopen_task.cancel()
                self._reopen_task = None
                restarting = False
            if not restarting:
                await self._open_render_port()
        return self.fault_info()

    @staticmethod
    def _fault_downtime(params: dict[str, Any]) -> float:
        return float(params.get("downtime", 0.5))

    def _exit_process(self, reason: str, restart_after: float | None) -> None:
        """Die as Splash does when it crashes or stops on ``--maxrss``, and come
        back as its supervisor restarts it: every connection closed (renders in
        flight and queued cut, counted dropped with ``reason``), listening again
        as a new process after ``restart_after`` seconds, or never (None)."""
        self._close_render_port(reason)
        self._alive = False
        self._cancel_maxrss_check()
        if self._reopen_task is not None:
            self._reopen_task.cancel()
            self._reopen_task = None
        if restart_after is not None:
            self._reopen_task = self._spawn(self._reopen_after(restart_after))

    # -- --maxrss --------------------------------------------------------------

    def _schedule_maxrss_check(self) -> None:
        """Splash's check: every ``maxrss_check`` seconds, the first after start."""
        if self.memory.maxrss is None:
            return
        self._cancel_maxrss_check()
        loop = asyncio.get_running_loop()
        self._maxrss_timer = loop.call_later(self.memory.maxrss_check, self._check_maxrss)

    def _next_maxrss_check_in(self) -> float | None:
        """Seconds to the next --maxrss check, None when none is due."""
        if self._maxrss_timer is None:
            return None
        return max(0.0, self._maxrss_timer.when() - asyncio.get_running_loop().time())

    def _cancel_maxrss_check(self) -> None:
        if self._maxrss_timer is not None:
            self._maxrss_timer.cancel()
            self._maxrss_timer = None

    def _check_maxrss(self) -> None:
        self._maxrss_timer = None
        if not self._rss.over(self.memory.maxrss):
            self._schedule_maxrss_check()
            return
        # Splash logs this line, then stops its reactor: exit status 1.
        print(
            f"mock-splash {self.name}: maxrss exceeded {self.memory.maxrss:g} MB "
            f"(peak {self._rss.peak_mb:g} MB), shutting down...",
            file=sys.stderr,
        )
        self._stats.exits += 1
        self._exit_process("maxrss", self.memory.restart_after)

    def set_rss(self, mb: float) -> dict[str, Any]:
        """Set the simulated peak RSS (``POST /rss``); ValueError if not a number >= 0."""
        self._rss.set(mb)
        return self.rss_info()

    def rss_info(self) -> dict[str, Any]:
        """The memory model: peak RSS (MB) now, the limit, the exits so far."""
        return {
            "rss_mb": self._rss.peak_mb,
            "maxrss": self.memory.maxrss,
            "exits": self._stats.exits,
        }

    async def _reopen_after(self, downtime: float) -> None:
        await asyncio.sleep(downtime)
        try:
            await self._open_render_port()
        except OSError as exc:
            print(
                f"mock-splash {self.name}: cannot re-open port {self._port}: {exc}", file=sys.stderr
            )
        self._reopen_task = None

    def fault_info(self) -> dict[str, Any]:
        """The current fault: mode, renders left (None: until changed), params."""
        return self._fault.info()

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The ``GET /stats`` document (see the package docstring)."""
        s = self._stats
        return {
            "name": self.name,
            "port": self._port,
            "listening": self._render_server is not None,
            "slots": self.slots,
            "latency": self.latency,
            "render_mode": self.render_mode,
            "capacity": self._cpu.model.capacity,
            "speed": self._cpu.model.speed,
            "min_speed": self._cpu.model.min_speed,
            "alive": self._alive,
            "maxrss": self.memory.maxrss,
            "rss_mb": self._rss.peak_mb,
            "exits": s.exits,
            "next_maxrss_check_in": self._next_maxrss_check_in(),
            "requests": s.requests,
            "by_endpoint": dict(s.by_endpoint),
            "pings": s.pings,
            "in_progress": s.in_progress,
            "max_in_progress": s.max_in_progress,
            "active": self._active,
            "max_active": s.max_active,
            "queued": len(self._waiters),
            "completed": s.completed,
            "cancelled": s.cancelled,
            "dropped": s.dropped,
            "bytes_received": s.bytes_received,
            "expired_args": s.expired_args,
            "saved_args": len(self._argcache),
            "statuses": dict(s.statuses),
            "log": list(s.log),
            "fault": self._fault.mode,
            "fault_detail": self.fault_info(),
        }

    def reset_stats(self) -> None:
        """Zero the counters (not the fault, not what is in progress)."""
        self._stats = _Stats.fresh(len(self._jobs), self._active)
        self._cpu.model.reset_min_speed()

    # -- control port ----------------------------------------------------------

    def _handle_control(
        self, conn: Connection, request: Request
    ) -> Response | asyncio.Future[Response | None]:
        route = (request.method, request.path)
        if route == ("GET", "/stats"):
            return json_response(self.stats())
        if route == ("POST", "/reset"):
            self.reset_stats()
            return json_response({"status": "ok"})
        if route == ("GET", "/fault"):
            return json_response(self.fault_info())
        if route == ("GET", "/rss"):
            return json_response(self.rss_info())
        if route == ("POST", "/rss"):
            return self._control_rss(request)
        if route == ("POST", "/fault"):
            try:
                spec = json.loads(request.body or b"{}")
            except ValueError as exc:
                return json_response({"error": f"invalid JSON: {exc}"}, 400)
            if not isinstance(spec, dict):
                return json_response({"error": "the body must be a JSON object"}, 400)
            # Shielded: a control client that hangs up must not leave a fault
            # half applied (the render port closed and never re-opened).
            return asyncio.shield(self._spawn(self._control_fault(spec)))
        if request.path in ("/stats", "/reset", "/fault", "/rss"):
            return json_response({"error": "method not allowed"}, 405)
        endpoints = ["GET /stats", "POST /reset", "GET|POST /fault", "GET|POST /rss"]
        return json_response({"error": "not found", "endpoints": endpoints}, 404)

    def _control_rss(self, request: Request) -> Response:
        try:
            spec = json.loads(request.body or b"{}")
            if not isinstance(spec, dict) or "mb" not in spec:
                raise ValueError('the body must be a JSON object {"mb": N}')
            info = self.set_rss(spec["mb"])
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"status": "ok", **info})

    async def _control_fault(self, spec: dict[str, Any]) -> Response:
        try:
            info = await self.set_fault(spec)
        except ValueError as exc:
            return json_response({"error": str(exc), "modes": list(FAULT_MODES)}, 400)
        except OSError as exc:
            return json_response({"error": f"cannot re-open the render port: {exc}"}, 500)
        return json_response({"status": "ok", "fault": info})

    # -- render port -----------------------------------------------------------

    def _handle_render_port(
        self, conn: Connection, request: Request
    ) -> Response | asyncio.Future[Response | None] | None:
        path = request.path
        if path in RENDER_ENDPOINTS:
            return self._handle_render(conn, request, path)
        if self._fault.mode == "hang":
            conn.hang()
            return None
        if path == "/_ping":
            return self._handle_ping(conn, request)
        if path == "/_debug":
            if request.method != "GET":
                return method_not_allowed("GET")
            return json_response(
                {
                    "active": [job.url for job in self._jobs if job.rendering],
                    "qsize": len(self._waiters),
                    "maxrss": self._rss.peak_kb,
                    "fds": _num_fds(),
                    "argcache": len(self._argcache),
                    "leaks": {},
                }
            )
        if path == "/" and request.method == "GET":
            title = f"Splash (mock) {html.escape(self.name)}"
            body = f"<html><head><title>{title}</title></head><body></body></html>"
            return Response(200, body.encode(), HTML)
        return Response(404, NOT_FOUND_BODY, HTML)

    def _handle_ping(
        self, conn: Connection, request: Request
    ) -> Response | asyncio.Future[Response | None] | None:
        self._stats.pings += 1
        if request.method != "GET":
            return method_not_allowed("GET")
        answer = json_response({"status": "ok", "maxrss": self._rss.peak_bytes})
        mode, params = self._fault.mode, self._fault.params
        if not params.get("ping") or mode not in CONNECTION_FAULTS | RENDER_FAULTS:
            return answer
        if mode == "hang":
            conn.hang()
            return None
        if mode == "latency":

            async def later() -> Response:
                await asyncio.sleep(float(params["latency"]))
                return answer

            return self._spawn(later())
        return fault_answer(mode, params, self.name, "", DEFAULT_TIMEOUT, "/_ping")

    def _handle_render(
        self, conn: Connection, request: Request, endpoint: str
    ) -> Response | asyncio.Future[Response | None] | None:
        stats = self._stats
        stats.requests += 1
        stats.by_endpoint[endpoint] += 1
        entry: dict[str, Any] = {
            "endpoint": endpoint,
            "url": None,
            "status": None,
            "method": request.method,
            # Wall-clock arrival, comparable across processes: tests measure
            # the spacing Scrapy's download slots put between renders.
            "received_at": time.time(),
            # What the balancer sent as credentials, so tests can check that
            # a node gets its own and no other.
            "authorization": request.headers.get("authorization"),
        }
        stats.log.append(entry)
        job = _Job(conn, endpoint, entry)

        stats.bytes_received += len(request.body)
        parsed = parse_args(request)
        if isinstance(parsed, dict):
            cached = self._argcache.apply(parsed)
            if isinstance(cached, Response):
                stats.expired_args += 1
                parsed = cached
            else:
                parsed, job.saved = cached
        if isinstance(parsed, dict):
            url = parsed.get("url")
            entry["url"] = url if isinstance(url, str) else None
            # Small arguments only: a 10 KB Lua source has no place in stats.
            entry["args"] = {
                k: v for k, v in parsed.items() if len(json.dumps(v, default=str)) <= 2000
            }

        taken = self._fault.take(CONNECTION_FAULTS)
        if taken is not None:
            mode, params = taken
            stats.dropped += 1
            entry["status"] = mode
            if mode == "hang":
                conn.hang()
                return None
            if mode == "die":
                conn.drop("die")
                return None
            return garbage(params)

        stats.in_progress += 1
        stats.max_in_progress = max(stats.max_in_progress, stats.in_progress)
        if isinstance(parsed, Response):
            return self._answer(job, parsed)
        job.args = parsed
        try:
            checked = validate(endpoint, parsed, self.max_timeout)
        except BadOption as exc:
            return self._answer(job, bad_option(exc.info))
        except ScriptError as exc:
            return self._answer(job, exc.response())
        job.timeout, job.wait, job.url = checked.timeout, checked.wait, checked.url

        taken = self._fault.take(RENDER_FAULTS, job.url)
        latency = self.latency
        if taken is not None:
            job.fault, job.fault_params = taken
            if job.fault == "latency":
                latency = float(job.fault_params["latency"])
        job.render_time = latency + job.wait

        if (
            job.render_time <= 0
            and job.fault != "crash"  # a crash cuts renders: it needs a task
            and not self._loads_page(job)
            and self._active < self.slots
            and not self._waiters
        ):
            # Fast path: nothing to wait for, answer without a task.
            self._active += 1
            stats.max_active = max(stats.max_active, self._active)
            self._active -= 1
            return self._answer(job, self._result(job))

        loop = asyncio.get_running_loop()
        self._jobs.add(job)
        job.task = loop.create_task(self._render(job))
        job.timer = loop.call_later(job.timeout + job.wait, self._expire, job)
        return job.task

    def _expire(self, job: _Job) -> None:
        job.timed_out = True
        if job.task is not None:
            job.task.cancel()

    async def _render(self, job: _Job) -> Response | None:
        try:
            await self._acquire()
            try:
                job.rendering = True
                if self._loads_page(job):
                    job.page = await self._load(job)
                # A page that failed to load answers at once, as in Splash.
                if not isinstance(job.page, Response):
                    await self._cpu.run(job.render_time)
            finally:
                job.rendering = False
                self._release()
        except asyncio.CancelledError:
            if not job.timed_out or job.conn.closed:
                self._end_unanswered(job)
                raise
            response = global_timeout(job.timeout)
        else:
            if job.fault == "crash":
                # The page takes the whole process down with it: this
                # render and every other one in flight end unanswered.
                self._exit_process("crash", self._fault_downtime(job.fault_params))
                self._end_unanswered(job)
                raise asyncio.CancelledError
            response = self._result(job)
        finally:
            if job.timer is not None:
                job.timer.cancel()
        return self._answer(job, response)

    def _loads_page(self, job: _Job) -> bool:
        """Whether this render loads its page: fetch mode, a render endpoint, no fault
        that fails the render anyway."""
        # job.url is "about:blank" for a script given no url: nothing to load.
        scripted = job.endpoint in ("/execute", "/run") and job.url not in ("", "about:blank")
        return (
            self.render_mode == "fetch"
            and (job.endpoint.startswith("/render.") or scripted)
            and job.fault in (None, "latency")
        )

    async def _load(self, job: _Job) -> Page | Response:
        """Load the job's page and run its emulated script; a RenderError answer if
        the page cannot be loaded."""
        try:
            page = await load_render_page(job.url, job.args)
        except LoadError as exc:
            job.entry["page_status"] = None
            return exc.response()
        job.entry["page_status"] = page.status
        page.text = add_rendered_by(emulate_page_script(page.text), self.name)
        return page

    async def _acquire(self) -> None:
        """Take a render slot, waiting in FIFO order behind earlier requests."""
        if self._active < self.slots and not self._waiters:
            self._active += 1
            self._stats.max_active = max(self._stats.max_active, self._active)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot came just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        """Hand the slot to the first waiter, or give it back."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    def _answer(self, job: _Job, response: Response) -> Response:
        """Account for an answer being sent (or a broken one, for faults)."""
        stats = self._stats
        self._jobs.discard(job)
        stats.in_progress -= 1
        if response.raw is not None:
            stats.dropped += 1
            job.entry["status"] = job.fault or "fault"
        else:
            stats.completed += 1
            stats.statuses[str(response.status)] += 1
            job.entry["status"] = response.status
            if job.saved:
                saved = ";".join(f"{name}={key}" for name, key in job.saved.items())
                response = dataclasses.replace(
                    response, headers=(*response.headers, ("X-Splash-Saved-Arguments", saved))
                )
        return response

    def _end_unanswered(self, job: _Job) -> None:
        """Account for a render ended without an answer."""
        stats = self._stats
        self._jobs.discard(job)
        stats.in_progress -= 1
        reason = job.conn.drop_reason
        if reason is None:  # the client went away
            stats.cancelled += 1
            job.entry["status"] = "cancelled"
        else:
            stats.dropped += 1
            job.entry["status"] = reason

    # -- results ---------------------------------------------------------------

    def _result(self, job: _Job) -> Response:
        """What a finished render answers: its fault, a page error, or content."""
        self._rss.rendered()
        if job.fault is not None and job.fault != "latency":
            return fault_answer(
                job.fault, job.fault_params, self.name, job.url, job.timeout, job.endpoint
            )
        if isinstance(job.page, Response):
            return job.page
        if job.page is not None:
            return render_answer(self.name, job.endpoint, job.url, job.args, job.page)
        unresolvable = unresolvable_host(job.url)
        if unresolvable is not None:
            return unresolvable.response()
        if job.endpoint in ("/execute", "/run"):
            return script_summary(self.name, job.url, job.args)
        return render_answer(
            self.name, job.endpoint, job.url, job.args, static_page(job.url, self.name)
        )
