"""Benchmark scrapy-splash-cluster against scrapy-splash + HAProxy and one Splash node.

    python bench/run.py [--quick] [--scenarios NAME ...] [--contenders NAME ...]
                        [--repeats 3] [--results DIR] [--report-only DIR]

One command: it makes the two venvs it needs under ~/.cache/scrapy-splash-cluster
(the baseline's Scrapy 2.13.4 + scrapy-splash 0.11.1; Scrapy 2.19 + a release
build of this tree + matplotlib), checks that haproxy is installed, runs every
scenario for every contender ``--repeats`` times on mock Splash nodes on
127.0.0.1, and writes docs/benchmarks.md and the plots in docs/bench/. The raw
records of each run stay in bench/results/<timestamp>/ (``--report-only DIR``
rebuilds the report from them). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import envs  # noqa: E402
from scenarios import (  # noqa: E402
    CONTENDERS,
    HAPROXY,
    SCENARIOS,
    SCENARIOS_BY_NAME,
    fault_phase,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Benchmark scrapy-splash-cluster against scrapy-splash + HAProxy "
        "and scrapy-splash on one node, on mock Splash nodes; writes docs/benchmarks.md.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller crawls, one repeat: a smoke run of a few minutes",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=[s.name for s in SCENARIOS],
        default=None,
        metavar="NAME",
        help="scenarios to run (default all): " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument(
        "--contenders",
        nargs="+",
        choices=CONTENDERS,
        default=list(CONTENDERS),
        metavar="NAME",
        help="contenders to run (default all): " + ", ".join(CONTENDERS),
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of each scenario (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="directory for the raw records (default bench/results/<timestamp>)",
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        default=None,
        metavar="DIR",
        help="run nothing: rebuild the report from the records in DIR",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        default=envs.ROOT / "docs" / "benchmarks.md",
        help="the report to write (default docs/benchmarks.md; plots go to docs/bench/)",
    )
    parser.add_argument(
        "--cluster-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra Scrapy setting for scrapy-splash-cluster's crawls (repeatable; the "
        "value is read as JSON when it parses, else as a string), e.g. "
        "SPLASH_CLUSTER_HEALTH_INTERVAL=0.5; the report lists them",
    )
    parser.add_argument(
        "--no-build",
        action="store_true",
        help="do not rebuild the release wheel of the tree if one is installed already",
    )
    return parser


def _setup(args: argparse.Namespace) -> dict[str, Path]:
    """The venvs and the haproxy check; re-executes in the project's bench venv."""
    if HAPROXY in args.contenders and args.report_only is None:
        from haproxy import HAProxyMissing, haproxy_binary

        try:
            haproxy_binary()
        except HAProxyMissing as exc:
            sys.exit(f"bench: {exc}")
    if not envs.in_cluster_venv():
        python = envs.ensure_cluster_venv(build=not args.no_build and args.report_only is None)
        argv = [str(python), str(Path(__file__).resolve()), *sys.argv[1:], "--no-build"]
        os.execv(str(python), argv)
    if args.report_only is not None:
        return {}
    return {"cluster": Path(sys.executable), "baseline": envs.ensure_baseline_venv()}


def _cluster_settings(parser: argparse.ArgumentParser, items: list[str]) -> tuple:
    settings = []
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            parser.error(f"--cluster-setting expects NAME=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        settings.append((name, value))
    return tuple(settings)


def _plan(args: argparse.Namespace, cluster_settings: tuple) -> list:
    from runner import RunSpec

    names = args.scenarios or [s.name for s in SCENARIOS]
    repeats = args.repeats or (1 if args.quick else 3)
    specs = []
    for repeat in range(1, repeats + 1):
        for name in names:
            scenario = SCENARIOS_BY_NAME[name]
            runs = min(repeats, scenario.max_repeats or repeats)
            if repeat > runs:
                continue
            pages = scenario.quick_pages if args.quick else scenario.pages
            phase = fault_phase(repeat, runs)
            for contender in args.contenders:
                if contender in scenario.contenders:
                    specs.append(
                        RunSpec(scenario, contender, repeat, pages, phase, cluster_settings)
                    )
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    cluster_settings = _cluster_settings(parser, args.cluster_setting)
    pythons = _setup(args)

    import report
    from runner import run_once

    if args.report_only is not None:
        results = args.report_only
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        results = args.results or HERE / "results" / stamp
        results.mkdir(parents=True, exist_ok=True)
        specs = _plan(args, cluster_settings)
        meta = {
            "argv": sys.argv[1:],
            "command": report.reproduce_command(args),
            "quick": args.quick,
            "cluster_settings": dict(cluster_settings),
            "started": stamp,
            "machine": report.machine_info(pythons),
        }
        (results / "meta.json").write_text(json.dumps(meta, indent=2))
        began = time.monotonic()
        for i, spec in enumerate(specs, 1):
            print(
                f"[bench] {i}/{len(specs)} {spec.run_id}: {spec.pages} pages ...",
                file=sys.stderr,
                flush=True,
            )
            record = run_once(spec, pythons, results)
            print(f"[bench]     {report.one_line(record)}", file=sys.stderr, flush=True)
        meta["duration_s"] = round(time.monotonic() - began, 1)
        (results / "meta.json").write_text(json.dumps(meta, indent=2))
    report.write(results, args.doc)
    print(f"[bench] wrote {args.doc} (raw records in {results})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
