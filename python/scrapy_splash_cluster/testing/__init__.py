"""Mock Splash nodes for testing a balancer without browsers.

A mock node speaks Splash 3.5's HTTP API on a render port (``/render.html``,
``.png``, ``.jpeg``, ``.json``, ``.har``, ``/execute``, ``/run``, ``/_ping``,
``/_debug``), with Splash's argument checks, JSON errors, slots and internal
queue, and answers every render with fixed content that names the url and the
node (header ``X-Mock-Splash-Node``). It does not fetch pages or run Lua: a
render takes the node's latency plus the ``wait`` argument (at full speed:
see ``capacity``); a url whose host
ends in ``.invalid`` fails as an unresolvable host (502 RenderError). A second,
control port serves stats and injects faults, and keeps working while the
render port refuses connections.

In pytest (the nodes are subprocesses, so tests can kill and freeze them)::

    pytest_plugins = ["scrapy_splash_cluster.testing.fixtures"]

    def test_failover(splash_nodes):
        a, b = splash_nodes(2, slots=5, latency=0.05)
        a.set_fault("die")              # a drops every render request
        ...                             # send through the balancer to a.url, b.url
        assert b.stats()["completed"] > 0
        a.kill(); a.restart()           # or a.freeze() / a.unfreeze()

Without pytest: ``nodes = start_nodes(3)`` then ``stop_nodes(nodes)``, or
``with MockSplashNode("node-1") as node: ...``. From a shell::

    python -m scrapy_splash_cluster.testing --port 8050 --slots 5 --latency 0.2

prints ``MOCK-SPLASH READY name=... port=... control_port=... pid=...``.

Node options (keyword arguments of :class:`MockSplashNode`, ``start_nodes``
and ``splash_nodes``; the CLI flag in brackets):

* ``slots`` (``--slots``, default 20): renders at once, as Splash's
  ``--slots``; the rest wait in the node's FIFO queue.
* ``latency`` (``--latency``, default 0): seconds of work each render takes,
  plus its ``wait`` argument.
* ``max_timeout`` (``--max-timeout``, default 90): the largest ``timeout``
  argument. A render's ``timeout`` (default 30 s) counts from arrival, queue
  included; when it expires the render ends as 504 GlobalTimeoutError.
* ``capacity`` (``--capacity``, default None = unlimited): renders the node
  runs at full speed. With k > capacity renders working, each progresses at
  ``capacity / k`` of full speed (processor sharing, as renders share a
  CPU-bound Splash's cores), so its wall time stretches in proportion and a
  render stretched past its ``timeout`` is a 504. Exact and event-driven:
  every render's work left is recomputed whenever one starts or ends.
* ``maxrss`` (``--maxrss``, MB, default None = off), ``rss_per_render``
  (``--rss-per-render``, MB, default 0), ``base_rss`` (``--base-rss``, MB,
  default 100), ``maxrss_check`` (``--maxrss-check``, s, default 60, as
  Splash), ``restart_after`` (``--restart-after``, s, default None = stay
  down): Splash's ``--maxrss``. The node's simulated peak RSS starts at
  ``base_rss`` and grows by ``rss_per_render`` per render that ran (argument
  errors do not render); ``/_ping`` reports it as ``maxrss`` in bytes,
  ``/_debug`` in KB, as Splash does. Every ``maxrss_check`` seconds (the
  first that long after start) a peak over ``maxrss`` makes the node exit as
  Splash 3.5 does (its exit status 1): the render port closes, every render in
  flight and queued is cut (counted ``dropped``, log status ``"maxrss"``),
  ``exits`` counts it. The mock's process and control port stay, so its stats
  can be read. With ``restart_after`` the port listens again that many seconds
  later as a new process: peak RSS back to ``base_rss``, the argument cache
  empty, checks running again (the ``crash`` fault's downtime is the same).
  Without it the node stays down until a fault mode other than ``refuse``
  (``none`` / ``clear``) is set, which starts it the same way.
* ``render_mode`` (``--render-mode``): ``static`` (fixed content) or
  ``fetch`` (load pages from a loopback site, see ``_node``).

Control port (``node.control_port``, all JSON):

* ``GET /stats``: ``requests`` (render requests received), ``by_endpoint``,
  ``pings``, ``in_progress`` (received, not answered: queued or rendering) and
  ``max_in_progress``, ``active`` (rendering) and ``max_active``, ``queued``,
  ``capacity``, ``speed`` (each working render's share of full speed now,
  1.0 at or under capacity) and ``min_speed`` (the lowest since the reset),
  ``alive`` (False between an exit and the restart), ``maxrss`` (the limit,
  MB), ``rss_mb`` (the simulated peak now), ``exits`` (``--maxrss`` exits),
  ``next_maxrss_check_in`` (seconds to the next check, None when none is due),
  ``completed`` (answered with a whole HTTP response, any status),
  ``cancelled`` (the client went away), ``dropped`` (a fault closed or broke
  the connection), ``statuses`` (``{"200": n, ...}``), ``log`` (the last 1000
  render requests: endpoint, url, status, method; status is a fault name such
  as ``"die"`` or ``"cancelled"`` when no HTTP answer was sent), ``fault``.
  Every render request ends as exactly one of completed, cancelled, dropped.
* ``POST /reset``: zero the counters (not the fault).
* ``GET /rss``: ``{"rss_mb", "maxrss", "exits"}``; ``POST /rss`` ``{"mb": N}``
  sets the simulated peak RSS to N MB (``MockSplashNode.set_rss(N)``), so a
  test can push a node over its limit on demand: it exits at the next check.
* ``POST /fault`` ``{"mode": MODE, "count": N or null, ...params}``; with a
  count the fault applies to the next N render requests, then the node is back
  to normal. ``MockSplashNode.set_fault(mode, count=None, **params)`` sends it.

Fault modes (:data:`FAULT_MODES`):

* ``none`` / ``clear``: normal; re-opens the render port after ``refuse``, and
  ends the downtime of a ``restart``, a ``crash`` or a ``--maxrss`` exit.
* ``latency`` (param ``latency`` s): renders take that long.
* ``504``, ``render-error`` (502 RenderError), ``internal-error`` (500),
  ``internal-error-502``, ``proxy-502`` (HTML body, as nginx or HAProxy send),
  ``truncate`` (Content-Length 10000, part of the body, close): the render
  takes its slot and its time, then fails this way. They apply to requests
  whose arguments are valid; a 400 is still a 400.
* ``die`` (connection closed with no answer), ``hang`` (never answered, the
  connection stays open), ``invalid-http`` (garbage instead of HTTP, param
  ``garbage`` to choose it): applied as the render request arrives. ``die``
  without a count also drops the renders in flight.
* ``refuse``: the render port stops listening (ECONNREFUSED) and its
  connections close; ``restart`` (param ``downtime``, default 0.5 s): the same,
  then it listens again and the fault is back to ``none``.
* ``crash`` (params ``url``, ``downtime``): a page that kills the node. A
  render whose page URL holds ``url`` takes its render time, then the node
  cuts every render in flight and its port listens again after ``downtime``
  (default 0.5 s), as under a supervisor, as a new process (as after a
  ``--maxrss`` exit); the fault stays, so the page kills every node that
  renders it (a query of death).

Render faults leave ``/_ping`` answering (a live process with a broken render
pool), unless the mode is ``hang``, ``refuse`` or ``restart``, or the fault has
``ping=True``.
"""

from ._faults import FAULT_MODES
from ._handle import MockSplashNode, MockSplashNodeError, start_nodes, stop_nodes
from ._node import RENDER_ENDPOINTS, MockSplashServer
from ._pages import JPEG_BYTES, PNG_BYTES

__all__ = [
    "FAULT_MODES",
    "JPEG_BYTES",
    "PNG_BYTES",
    "RENDER_ENDPOINTS",
    "MockSplashNode",
    "MockSplashNodeError",
    "MockSplashServer",
    "start_nodes",
    "stop_nodes",
]
