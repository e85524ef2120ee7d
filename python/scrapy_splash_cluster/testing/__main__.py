"""Command line: run one mock Splash node until SIGTERM or SIGINT.

``python -m scrapy_splash_cluster.testing --port 8050 [--host 127.0.0.1]
[--control-port 0] [--slots 20] [--max-timeout 90] [--latency 0.0] [--name NAME]
[--render-mode static|fetch] [--capacity N] [--maxrss MB] [--rss-per-render MB]
[--base-rss MB] [--maxrss-check S] [--restart-after S]``

When both ports listen it prints exactly one line to stdout and flushes it::

    MOCK-SPLASH READY name=<name> port=<port> control_port=<cport> pid=<pid>

so a parent process (see :class:`MockSplashNode`) knows the ephemeral ports
chosen for ``--port 0`` without polling. Nothing else is written to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from ._node import RENDER_MODES, MockSplashServer

READY_PREFIX = "MOCK-SPLASH READY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scrapy_splash_cluster.testing",
        description="A mock Splash node: Splash's HTTP API, deterministic content, "
        "fault injection on a control port.",
    )
    parser.add_argument(
        "--port", type=int, default=8050, help="render port; 0 = ephemeral (default 8050)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address of both ports (default 127.0.0.1)"
    )
    parser.add_argument(
        "--control-port", type=int, default=0, help="control port; 0 = ephemeral (default)"
    )
    parser.add_argument(
        "--slots", type=int, default=20, help="renders at once, as Splash's --slots (default 20)"
    )
    parser.add_argument(
        "--max-timeout", type=float, default=90.0, help="largest `timeout` argument (default 90)"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds each render takes (default 0)"
    )
    parser.add_argument(
        "--name", default=None, help="node name, sent in X-Mock-Splash-Node (default node-PORT)"
    )
    parser.add_argument(
        "--render-mode",
        choices=RENDER_MODES,
        default="static",
        help="static: answer fixed content (default); fetch: load the url from a loopback "
        "site and emulate its page script (see the _node and _fetch module docstrings)",
    )
    parser.add_argument(
        "--capacity",
        type=int,
        default=None,
        help="renders at full speed; beyond, all renders share the node and slow down in "
        "proportion, as on a CPU-bound Splash (default: unlimited)",
    )
    parser.add_argument(
        "--maxrss",
        type=float,
        default=None,
        help="exit as Splash's --maxrss does when the simulated peak RSS is over this many MB "
        "at a check (default: no limit)",
    )
    parser.add_argument(
        "--rss-per-render",
        type=float,
        default=0.0,
        help="MB the simulated peak RSS grows per render (default 0)",
    )
    parser.add_argument(
        "--base-rss",
        type=float,
        default=100.0,
        help="simulated peak RSS at start, MB (default 100)",
    )
    parser.add_argument(
        "--maxrss-check",
        type=float,
        default=60.0,
        help="seconds between --maxrss checks, the first after start (default 60, as Splash)",
    )
    parser.add_argument(
        "--restart-after",
        type=float,
        default=None,
        help="seconds until a node that exited on --maxrss listens again, as under a "
        "supervisor (default: it stays down)",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit when this process is no longer our parent "
        "(no orphaned nodes after a crashed test run)",
    )
    parser.add_argument(
        "--bind-retry",
        type=float,
        default=0.5,
        help="seconds to retry a busy fixed port, for restarts (default 0.5)",
    )
    return parser


async def _serve(args: argparse.Namespace) -> None:
    server = MockSplashServer(
        name=args.name or f"node-{args.port}",
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        slots=args.slots,
        max_timeout=args.max_timeout,
        latency=args.latency,
        bind_retry=args.bind_retry,
        render_mode=args.render_mode,
        capacity=args.capacity,
        maxrss=args.maxrss,
        rss_per_render=args.rss_per_render,
        base_rss=args.base_rss,
        maxrss_check=args.maxrss_check,
        restart_after=args.restart_after,
    )
    await server.start()
    if args.name is None and args.port == 0:
        server.name = f"node-{server.port}"
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ports = f"port={server.port} control_port={server.control_port}"
    print(f"{READY_PREFIX} name={server.name} {ports} pid={os.getpid()}", flush=True)
    watcher = loop.create_task(_watch_parent(args.parent_pid, stop)) if args.parent_pid else None
    try:
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
        await server.close()


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(0.5)
    stop.set()


def main(argv: list[str] | None = None) -> int:
    """Run a node; returns the exit status (1 when it cannot listen)."""
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except (OSError, ValueError) as exc:
        print(f"mock-splash: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
