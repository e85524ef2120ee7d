"""docs/benchmarks.md and its plots, from the raw records of a benchmark run."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

import envs
import overhead
from haproxy import CONFIG_TEMPLATE, SERVER_LINE, haproxy_version
from metrics import detections, latencies_ms, median_figures, per_second, summarize
from runner import ENDPOINT, RENDER_ARGS, URL_TEMPLATE
from scenarios import (
    ADAPTIVE,
    CLUSTER,
    CONTENDER_TITLES,
    CONTENDERS,
    HAPROXY,
    OURS,
    SCENARIOS,
    SCENARIOS_BY_NAME,
    SINGLE,
)

HERE = Path(__file__).resolve().parent
NOTES = HERE / "NOTES.md"
# Focused benchmarks (bench/log_level.py, bench/fleet.py, ...) keep their
# latest results here, one file each, so that `make bench` keeps them.
SECTIONS = HERE / "sections"
COLOURS = {CLUSTER: "#1f77b4", ADAPTIVE: "#2ca02c", HAPROXY: "#d62728", SINGLE: "#7f7f7f"}


# -- machine and command ---------------------------------------------------------


def _first(path: str, prefix: str, sep: str = ":") -> str:
    """The value of the first line of ``path`` that starts with ``prefix``."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix) and sep in line:
                    return line.split(sep, 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"


def machine_info(pythons: dict[str, Path]) -> dict[str, Any]:
    """What the benchmark ran on, for the report."""
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    try:
        commit = subprocess.run(
            ["git", "-C", str(envs.ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(envs.ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    try:
        haproxy = haproxy_version()
    except Exception:
        haproxy = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(mem_kb) / 2**20, 1) if mem_kb.isdigit() else "?",
        "kernel": platform.release(),
        "os": _first("/etc/os-release", "PRETTY_NAME=", "="),
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "cluster_venv": envs.versions(pythons["cluster"]),
        "baseline_venv": envs.versions(pythons["baseline"]),
        "haproxy": haproxy,
        "commit": commit,
    }


def reproduce_command(args: Any) -> str:
    parts = ["python", "bench/run.py"]
    if args.quick:
        parts.append("--quick")
    if args.scenarios:
        parts += ["--scenarios", *args.scenarios]
    if list(args.contenders) != list(CONTENDERS):
        parts += ["--contenders", *args.contenders]
    if args.repeats:
        parts += ["--repeats", str(args.repeats)]
    for item in args.cluster_setting:
        parts += ["--cluster-setting", item]
    return shlex.join(parts)


def one_line(record: dict[str, Any]) -> str:
    """A progress line for one run."""
    f = summarize(record)
    if not f["valid"]:
        return f"NO RESULT (finished={f['finished']}), see {record['run_id']}.log"
    extra = ""
    if f["retries"] is not None:
        extra = f", retries {f['retries']}, redispatches {f['redispatches']}"
    return (
        f"{f['completion_s']:.1f} s, {f['share']:.1%} of capacity, ok {f['ok']}, "
        f"lost {f['lost']} (errors {f['errors']}), p50 {f['p50_ms']:.0f} ms, "
        f"p99 {f['p99_ms']:.0f} ms, CPU {f['cpu_per_1000']:.2f} s/1k{extra}"
    )


# -- loading ---------------------------------------------------------------------


def load(results: Path) -> tuple[dict[str, Any], dict[tuple[str, str], list[dict[str, Any]]]]:
    meta_path = results / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted(results.glob("*.json")):
        if path.name == "meta.json" or path.name.endswith((".config.json", ".result.json")):
            continue
        record = json.loads(path.read_text())
        runs.setdefault((record["scenario"], record["contender"]), []).append(record)
    for records in runs.values():
        records.sort(key=lambda r: r["repeat"])
    return meta, runs


def _median_run(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose completion time is the median one (for the time-series plots)."""
    valid = [(summarize(r), r) for r in records]
    valid = [(f, r) for f, r in valid if f["valid"]]
    if not valid:
        return records[0]
    valid.sort(key=lambda fr: fr[0]["completion_s"])
    return valid[(len(valid) - 1) // 2][1]


# -- formatting ------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".1f", suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{suffix}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _int(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _contenders_in(runs: dict[tuple[str, str], list[Any]], scenario: str) -> list[str]:
    return [c for c in CONTENDERS if (scenario, c) in runs]


def _headline_rows(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    rows = [
        "| scenario | contender | time (s) | share of capacity | pages lost (errors) "
        "| retries / redispatches | Scrapy retries | p50 / p99 latency (ms) "
        "| CPU s / 1k req | peak RSS (MB) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for scenario in SCENARIOS:
        for contender in _contenders_in(runs, scenario.name):
            m = median_figures([summarize(r) for r in runs[(scenario.name, contender)]])
            if not m["valid_runs"]:
                rows.append(
                    f"| {scenario.title} | {CONTENDER_TITLES[contender]} | no result "
                    "| | | | | | | |"
                )
                continue
            if m["retries"] is None:
                retries = "n/a"
            else:
                retries = f"{_int(m['retries'])} / {_int(m['redispatches'])}"
            rows.append(
                f"| {scenario.title} | {CONTENDER_TITLES[contender]} "
                f"| {m['completion_s']:.1f} | {m['share']:.1%} "
                f"| {m['lost_max']} ({m['errors_max']}) | {retries} "
                f"| {_int(m['scrapy_retries'])} "
                f"| {_int(m['p50_ms'])} / {_int(m['p99_ms'])} "
                f"| {m['cpu_per_1000']:.2f} | {m['peak_rss_mb']:.0f} |"
            )
    return rows


def _scenario_section(
    scenario_name: str, runs: dict[tuple[str, str], list[dict[str, Any]]]
) -> list[str]:
    scenario = SCENARIOS_BY_NAME[scenario_name]
    contenders = _contenders_in(runs, scenario_name)
    first = runs[(scenario_name, contenders[0])][0]
    pages = first["pages"]
    lines = [
        f"### {scenario.title} (`{scenario.name}`)",
        "",
        scenario.description
        + f" {pages:,} pages; capacity limit "
        + ", ".join(f"{c}: {scenario.capacity(c):.0f} pages/s" for c in contenders)
        + f"; ideal duration {scenario.ideal_duration(pages):.1f} s.",
        "",
        "| contender | runs | time (s), median [min-max] | share of capacity [min-max] "
        "| steady share | lost (max) | errors (max) | retries | redispatches | Scrapy retries "
        "| DOWN marks | p50 / p99 / max (ms) | CPU s/1k req | HAProxy CPU s/1k req |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes: list[str] = []
    for contender in contenders:
        records = runs[(scenario_name, contender)]
        figures = [summarize(r) for r in records]
        m = median_figures(figures)
        if not m["valid_runs"]:
            lines.append(f"| {CONTENDER_TITLES[contender]} | {m['runs']} | no result |")
            continue
        lines.append(
            f"| {CONTENDER_TITLES[contender]} | {m['valid_runs']} "
            f"| {m['completion_s']:.1f} [{m['completion_s_min']:.1f}-{m['completion_s_max']:.1f}] "
            f"| {m['share']:.1%} [{m['share_min']:.1%}-{m['share_max']:.1%}] "
            f"| {_pct(m['steady_share'])} "
            f"| {m['lost_max']} | {m['errors_max']} | {_int(m['retries'])} "
            f"| {_int(m['redispatches'])} | {_int(m['scrapy_retries'])} | {_int(m['downs'])} "
            f"| {_int(m['p50_ms'])} / {_int(m['p99_ms'])} / {_int(m['max_ms'])} "
            f"| {m['cpu_per_1000']:.2f} "
            f"| {_num(m['haproxy_cpu_per_1000'], '.2f')} |"
        )
        if m["unfinished"]:
            notes.append(
                f"{CONTENDER_TITLES[contender]}: {m['unfinished']} run(s) hit the time limit."
            )
        if m["error_kinds"]:
            kinds = ", ".join(f"{k}: {n}" for k, n in sorted(m["error_kinds"].items()))
            notes.append(f"{CONTENDER_TITLES[contender]}: errbacks over all runs: {kinds}.")
        timeline = _timeline(records)
        if timeline:
            notes.append(f"{CONTENDER_TITLES[contender]}: {timeline}")
        spread = _node_spread(records)
        if spread:
            notes.append(f"{CONTENDER_TITLES[contender]}: {spread}")
    lines.append("")
    lines += [f"- {note}" for note in notes]
    lines.append("")
    return lines


def _timeline(records: list[dict[str, Any]]) -> str:
    """Faults and the balancer's DOWN/UP marks of node-1, in the median run."""
    record = _median_run(records)
    events = [(f["at"], f["label"]) for f in record.get("faults", [])]
    victim_names = ("node-1",)
    for d in detections(record):
        if d["node"] in victim_names or d["node"].endswith(_victim_port(record)):
            events.append((d["t"], f"marked {d['state']}"))
    if not events:
        return ""
    events.sort()
    shown = "; ".join(f"{t:.1f} s {label}" for t, label in events[:12])
    more = f" (+{len(events) - 12} more)" if len(events) > 12 else ""
    return f"median run, node-1 timeline: {shown}{more}."


def _victim_port(record: dict[str, Any]) -> str:
    urls = ((record.get("result") or {}).get("config") or {}).get("splash_urls") or []
    if record["contender"] in OURS and urls:
        return urls[0].rsplit(":", 1)[-1]
    return "\0"


def _node_spread(records: list[dict[str, Any]]) -> str:
    """Renders completed per node in the median run (from the nodes' own counters)."""
    record = _median_run(records)
    stats = record.get("node_stats") or {}
    if not stats or record["contender"] == SINGLE:
        return ""
    parts = [f"{name} {s.get('completed')}" for name, s in sorted(stats.items())]
    cpu = [s["cpu_s"] for s in stats.values() if s.get("cpu_s") is not None]
    busiest = f"; the busiest mock node used {max(cpu):.1f} s of CPU" if cpu else ""
    return (
        "renders completed per node (median run; a restarted node counts from its "
        f"restart): {', '.join(parts)}{busiest}."
    )


# -- plots -----------------------------------------------------------------------


def _plots(runs: dict[tuple[str, str], list[dict[str, Any]]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    # Throughput over time for the fault scenarios, faults and DOWN/UP marks shown;
    # the one-node baseline (slower, and ended by its losses) in a panel of its own.
    for name in ("kill_restart", "frozen", "flapping"):
        contenders = _contenders_in(runs, name)
        if not contenders:
            continue
        panels = [[c for c in contenders if c != SINGLE]]
        if SINGLE in contenders:
            panels.append([SINGLE])
        panels = [p for p in panels if p]
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.6 * len(panels)), squeeze=False)
        scenario = SCENARIOS_BY_NAME[name]
        for ax, panel in zip(axes[:, 0], panels, strict=True):
            _throughput_panel(ax, plt, runs, name, panel)
            if panel == [SINGLE]:
                ax.set_title("scrapy-splash on node-1 alone", fontsize=9)
        axes[0, 0].set_title(
            f"{scenario.title}: pages per second, run {_plot_repeat(runs, name)} (the add-on's "
            "median run; the same fault times for every contender)",
            fontsize=10,
        )
        fig.tight_layout()
        path = out_dir / f"throughput-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)

    # Latency distribution: one panel per scenario, ECDF per contender.
    names = [s.name for s in SCENARIOS if _contenders_in(runs, s.name)]
    if names:
        cols = 2
        rows = (len(names) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(11, 3.2 * rows), squeeze=False)
        for ax, name in zip(axes.flat, names, strict=False):
            for contender in _contenders_in(runs, name):
                values = sorted(
                    v for r in runs[(name, contender)] for v in latencies_ms(r) if v > 0
                )
                if not values:
                    continue
                n = len(values)
                ax.plot(
                    values,
                    [(i + 1) / n for i in range(n)],
                    label=CONTENDER_TITLES[contender],
                    color=COLOURS[contender],
                )
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_title(SCENARIOS_BY_NAME[name].title, fontsize=9)
            ax.set_xlabel("latency per page, ms (log)", fontsize=8)
            ax.set_ylabel("share of pages", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(names) :]:
            ax.set_visible(False)
        fig.suptitle(
            "Latency per page (request reached the downloader -> callback), all runs", fontsize=10
        )
        fig.tight_layout()
        path = out_dir / "latency.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)

    # The large crawl: RSS and CPU over time.
    contenders = _contenders_in(runs, "large")
    if contenders:
        fig, (ax_rss, ax_cpu) = plt.subplots(1, 2, figsize=(11, 4))
        for contender in contenders:
            record = _median_run(runs[("large", contender)])
            result = record.get("result") or {}
            samples = result.get("samples") or []
            start = result.get("started")
            if not samples or start is None:
                continue
            t = [s[0] - start for s in samples]
            ax_rss.plot(
                t,
                [s[2] / 2**20 for s in samples],
                label=CONTENDER_TITLES[contender],
                color=COLOURS[contender],
            )
            cpu = [
                (samples[i][1] - samples[i - 1][1]) / max(samples[i][0] - samples[i - 1][0], 1e-9)
                for i in range(1, len(samples))
            ]
            ax_cpu.plot(t[1:], [c * 100 for c in cpu], color=COLOURS[contender])
        ax_rss.set_title("crawler RSS (MB)", fontsize=9)
        ax_cpu.set_title("crawler CPU (% of one core)", fontsize=9)
        for ax in (ax_rss, ax_cpu):
            ax.set_xlabel("seconds since the first request")
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
        ax_rss.legend(fontsize=8)
        fig.suptitle("Large crawl: memory and CPU of the crawler process over time", fontsize=10)
        fig.tight_layout()
        path = out_dir / "large-resources.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def _plot_repeat(runs: dict[tuple[str, str], list[dict[str, Any]]], name: str) -> int:
    """The repeat the time-series plots show: the add-on's median run (all contenders
    of one repeat had their faults at the same times)."""
    for contender in CONTENDERS:
        if (name, contender) in runs:
            return int(_median_run(runs[(name, contender)])["repeat"])
    return 1


def _throughput_panel(
    ax: Any,
    plt: Any,
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    name: str,
    contenders: list[str],
) -> None:
    """Pages per second of each contender's median run, with the faults and the
    balancer's DOWN (dotted) and UP (dash-dot) marks of node-1."""
    from matplotlib.lines import Line2D

    faults_drawn = False
    capacity = 0.0
    repeat = _plot_repeat(runs, name)
    for contender in contenders:
        record = next(
            (r for r in runs[(name, contender)] if r["repeat"] == repeat),
            _median_run(runs[(name, contender)]),
        )
        capacity = max(capacity, record["capacity"])
        series = per_second(record)
        ax.plot(
            [i + 0.5 for i in range(len(series))],
            series,
            label=CONTENDER_TITLES[contender],
            color=COLOURS[contender],
            drawstyle="steps-mid",
        )
        if not faults_drawn:
            for fault in record.get("faults", []):
                ax.axvline(fault["at"], color="black", linestyle="--", linewidth=1)
                ax.annotate(
                    fault["label"],
                    (fault["at"], 0.02),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    va="bottom",
                    ha="right",
                    fontsize=7,
                )
            faults_drawn = bool(record.get("faults"))
        for d in detections(record):
            if d["node"] == "node-1" or d["node"].endswith(_victim_port(record)):
                ax.axvline(
                    d["t"],
                    color=COLOURS[contender],
                    linestyle="-." if d["state"] == "UP" else ":",
                    linewidth=1.2,
                )
    ax.axhline(capacity, color="green", linewidth=0.8)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="green", linewidth=0.8, label="capacity limit"),
        Line2D([], [], color="black", linestyle="--", linewidth=1, label="fault"),
        Line2D([], [], color="grey", linestyle=":", linewidth=1.2, label="node-1 marked DOWN"),
        Line2D([], [], color="grey", linestyle="-.", linewidth=1.2, label="node-1 marked UP"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2)
    ax.set_xlabel("seconds since the first request", fontsize=8)
    ax.set_ylabel("pages per second", fontsize=8)
    ax.set_ylim(bottom=0, top=capacity * 1.15)


# -- targets ---------------------------------------------------------------------


def _adaptive_rows(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    """Adaptive limits against the static limit (and HAProxy), every scenario both ran."""
    rows = [
        "| scenario | contender | pages/s | vs static | 504s answered by nodes "
        "| p95 latency (ms) | pages lost |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    verdicts = []
    for scenario in SCENARIOS:
        if (scenario.name, ADAPTIVE) not in runs or (scenario.name, CLUSTER) not in runs:
            continue
        medians = {
            c: median_figures([summarize(r) for r in runs[(scenario.name, c)]])
            for c in (CLUSTER, ADAPTIVE, HAPROXY)
            if (scenario.name, c) in runs
        }
        if not all(m["valid_runs"] for m in medians.values()):
            continue
        static = medians[CLUSTER]["throughput"]
        for contender, m in medians.items():
            rows.append(
                f"| {scenario.title} | {CONTENDER_TITLES[contender]} | {m['throughput']:.1f} "
                f"| {m['throughput'] / static:.1%} | {_int(m['answered_504'])} "
                f"| {_int(m['p95_ms'])} | {m['lost_max']} |"
            )
        ratio = medians[ADAPTIVE]["throughput"] / static
        verdicts.append((scenario.title, ratio, medians[ADAPTIVE]["lost_max"]))
    if not verdicts:
        return []
    worse = [f"{t} ({r:.1%})" for t, r, _ in verdicts if r < 1.0]
    lines = [*rows, ""]
    lines.append(
        "Adaptive as a share of the static limit's pages/s (median): "
        + ", ".join(f"{t} {r:.1%}" for t, r, _ in verdicts)
        + (". Below 100 % in: " + ", ".join(worse) + "." if worse else ".")
    )
    return lines


def _targets(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    lines = []
    if (key := ("homogeneous", CLUSTER)) in runs:
        m = median_figures([summarize(r) for r in runs[key]])
        if m["valid_runs"]:
            verdict = "met" if m["share"] >= 0.97 else "NOT met"
            lines.append(
                f"- **>= 97 % of the capacity limit, homogeneous**: {verdict}: median "
                f"{m['share']:.1%} (runs {m['share_min']:.1%}-{m['share_max']:.1%})."
            )
    lost = []
    for scenario in SCENARIOS:
        if (scenario.name, CLUSTER) in runs:
            m = median_figures([summarize(r) for r in runs[(scenario.name, CLUSTER)]])
            lost.append((scenario.title, m.get("lost_total"), m["runs"]))
    if lost:
        bad = [f"{t}: {n} over {r} runs" for t, n, r in lost if n]
        verdict = "met" if not bad else "NOT met (" + "; ".join(bad) + ")"
        lines.append(
            f"- **no page lost by scrapy-splash-cluster, any scenario**: {verdict}: "
            + ", ".join(f"{t} {n}" for t, n, _ in lost)
            + " pages lost over all runs."
        )
    compared = []
    for scenario in SCENARIOS:
        if (scenario.name, CLUSTER) in runs and (scenario.name, HAPROXY) in runs:
            ours = [summarize(r) for r in runs[(scenario.name, CLUSTER)]]
            theirs = [summarize(r) for r in runs[(scenario.name, HAPROXY)]]
            ours_m, theirs_m = median_figures(ours), median_figures(theirs)
            if ours_m["valid_runs"] and theirs_m["valid_runs"]:
                ratio = ours_m["throughput"] / theirs_m["throughput"]
                # Do the two contenders' ranges of pages/s over the runs overlap?
                overlap = max(f["throughput"] for f in ours if f["valid"]) >= min(
                    f["throughput"] for f in theirs if f["valid"]
                )
                compared.append((scenario.title, ratio, overlap))
    if compared:
        short = [
            f"{t} ({r:.1%}, {'within' if o else 'outside'} the run-to-run spread)"
            for t, r, o in compared
            if r < 1.0
        ]
        verdict = "met" if not short else "NOT met in " + ", ".join(short)
        lines.append(
            f"- **at least HAProxy's throughput, every scenario**: {verdict}. Ours as a share "
            "of HAProxy's (median pages/s): "
            + ", ".join(f"{t} {r:.1%}" for t, r, _ in compared)
            + "."
        )
    return lines


# -- the document ----------------------------------------------------------------


def _machine_rows(meta: dict[str, Any]) -> list[str]:
    m = meta.get("machine", {})
    cv, bv = m.get("cluster_venv", {}), m.get("baseline_venv", {})
    return [
        "| | |",
        "|---|---|",
        f"| CPUs (nproc) | {m.get('nproc')} x {m.get('cpu')} |",
        f"| memory | {m.get('memory_gib')} GiB |",
        f"| kernel / OS | Linux {m.get('kernel')} / {m.get('os')} |",
        f"| load average at start | {' '.join(m.get('loadavg', []))} (the machine is shared) |",
        f"| scrapy-splash-cluster | {cv.get('scrapy-splash-cluster')} "
        f"(release build of commit {m.get('commit')}), Python {cv.get('python')}, "
        f"Scrapy {cv.get('scrapy')}, Twisted {cv.get('twisted')} |",
        f"| scrapy-splash | {bv.get('scrapy-splash')}, Python {bv.get('python')}, "
        f"Scrapy {bv.get('scrapy')}, Twisted {bv.get('twisted')} |",
        f"| HAProxy | {m.get('haproxy')} |",
    ]


def _extra_settings(meta: dict[str, Any]) -> str:
    extra = meta.get("cluster_settings") or {}
    if not extra:
        return ""
    shown = ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in extra.items())
    return f"; **this run also set** {shown}"


def write(results: Path, doc: Path) -> None:
    meta, runs = load(results)
    plots_dir = doc.parent / "bench"
    plots = _plots(runs, plots_dir)
    rel = os.path.relpath(plots_dir, doc.parent)
    repeats = max((r["repeat"] for rs in runs.values() for r in rs), default=0)
    durations = meta.get("duration_s")
    lines = [
        "# Benchmarks: scrapy-splash-cluster against scrapy-splash + HAProxy",
        "",
        "<!-- Written by bench/run.py; edit bench/report.py or bench/NOTES.md instead. -->",
        "",
        "The same Scrapy spider crawls the same pages through three setups, on mock Splash "
        "nodes on 127.0.0.1 that render in a fixed time, while the benchmark hurts one node "
        "(kill, freeze, refuse connections). Every figure is the median of "
        f"{repeats} run(s) unless the scenario says otherwise"
        + (f"; the whole suite took {durations / 60:.0f} min." if durations else "."),
        "",
        "## Reproduce",
        "",
        "```sh",
        meta.get("command", "python bench/run.py"),
        "```",
        "",
        "(`make bench` runs the full suite, `make bench-quick` a smaller one.)",
        "",
        "It sets up what it needs (see [bench/README.md](../bench/README.md)): the baseline's "
        "venv in `.bench-venv`, the project's (a release build of the tree) under "
        "`~/.cache/scrapy-splash-cluster`; it needs `haproxy` installed "
        "(`apt-get install haproxy`).",
        "",
        "## Machine",
        "",
        *_machine_rows(meta),
        "",
        "## Contenders",
        "",
        "1. **scrapy-splash-cluster** (this project): the add-on, `SPLASH_URLS` = the nodes, "
        "`SPLASH_CLUSTER_MAXCONN = 5`, every other setting at its default (probes every 2 s, "
        "DOWN after 3 failed probes or 3 node failures in a row or one refused connection, "
        "UP after 2 good probes, 3 retries)" + _extra_settings(meta) + ".",
        "2. **scrapy-splash + HAProxy**: scrapy-splash 0.11.1 on Scrapy 2.13.4 (the last "
        "Scrapy it works with), `SPLASH_URL` = an HAProxy started by the benchmark with the "
        "classic configuration:",
        "",
        "   ```",
        *[
            "   " + line
            for line in CONFIG_TEMPLATE.format(
                socket="<tmp>/stats.sock",
                port="<port>",
                servers=SERVER_LINE.format(name="node-1", port="<port-1>", maxconn=5) + "\n    ...",
            ).splitlines()
        ],
        "   ```",
        "3. **scrapy-splash, one node**: the same venv, `SPLASH_URL` = node-1 (the node the "
        "faults hit), the setup people start from. It runs where one node means something: "
        "in the slow, frozen and flapping scenarios it would only show that node's fault, "
        "and the large crawl would take 5 times longer.",
        "",
        "## Method",
        "",
        f"- **The spider** (`bench/crawl.py`) is written once: it yields one `SplashRequest` "
        f"per page (`{URL_TEMPLATE}`, endpoint `{ENDPOINT}`, args `{json.dumps(RENDER_ARGS)}`) "
        "and imports `SplashRequest` from `scrapy_splash_cluster` or `scrapy_splash` "
        "depending on the contender; `start()` is lazy (Scrapy's documented pattern, see "
        "the findings on memory). Each crawl runs in its own process; "
        "`CONCURRENT_REQUESTS` = `CONCURRENT_REQUESTS_PER_DOMAIN` (30 unless the scenario "
        "says otherwise), other Scrapy settings at their defaults (RetryMiddleware on, "
        "2 retries).",
        "- **The nodes** are this project's mock Splash nodes (`python -m "
        "scrapy_splash_cluster.testing`), 5 slots each, a fixed render time; fresh nodes "
        "(and a fresh HAProxy) for every run. Faults are timed from the crawl's first "
        "request, on a wall-clock schedule that is the same for every contender; run *k* "
        "of *n* moves the whole schedule (k - 0.5) / n x 2 s later, so that over the runs "
        "the faults fall evenly over the 2 s probe cycle (a single run: 1 s, the mean case; "
        "see `fault_phase` in bench/scenarios.py for why).",
        "- **Capacity limit**: sum over the contender's nodes of maxconn / render latency "
        "(3 nodes x 5 / 0.2 s = 75 pages/s; 25 pages/s for one node). **Share of capacity** "
        "= pages answered / completion time / capacity limit; in fault scenarios the limit "
        "is still the healthy cluster's.",
        "- **Completion time**: from the first request reaching the downloader to the last "
        "callback or errback. **Steady share** (scenario tables): the rate between the "
        "1/8th and the 7/8th page answered, as a share of the capacity limit: the crawl "
        "without its start and its end.",
        "- **Pages lost (errors)**: expected pages minus pages whose callback ran, worst "
        "run; in brackets those that ended in the errback (the rest never came back).",
        "- **Retries / redispatches**: the balancer's own counters: "
        "`splash_cluster/retries` and `/redispatches` for the add-on; `wretr` and `wredis` "
        "of HAProxy's backend (stats socket). **Scrapy retries**: `retry/count` "
        "(RetryMiddleware re-sending a request after an error answer or exception).",
        "- **Latency per page**: from the request reaching the downloader "
        "(`request_reached_downloader`; for scrapy-splash, the rewritten request to Splash) "
        "to its callback; it includes waiting for a free node (in the add-on's queue, "
        "HAProxy's queue, or Splash's own), retries and redispatches.",
        "- **CPU s / 1k req**: user + system CPU of the crawler process (`getrusage`, all "
        "threads, so the Rust core's too) from `spider_opened` to the end, per 1,000 pages; "
        "HAProxy's own CPU is shown apart. **Peak RSS**: `ru_maxrss` of the crawler.",
        "",
        "## Headline numbers",
        "",
        *_headline_rows(runs),
        "",
        "## Targets",
        "",
        *_targets(runs),
        "",
    ]
    adaptive = _adaptive_rows(runs)
    if adaptive:
        lines += ["## Adaptive limits against the static limit", "", *adaptive, ""]
    if NOTES.exists():
        lines += [NOTES.read_text().strip(), ""]
    for section in sorted(SECTIONS.glob("*.md")):
        lines += [section.read_text().strip(), ""]
    lines += ["## Scenarios", ""]
    for scenario in SCENARIOS:
        if _contenders_in(runs, scenario.name):
            lines += _scenario_section(scenario.name, runs)
    lines += ["## Plots", ""]
    captions = {
        "throughput-kill_restart.png": "Throughput per second, node-1 killed and restarted",
        "throughput-frozen.png": "Throughput per second, node-1 frozen for 20 s",
        "throughput-flapping.png": "Throughput per second, node-1 flapping",
        "latency.png": "Latency distribution per scenario",
        "large-resources.png": "Large crawl: crawler memory and CPU over time",
    }
    for name in plots:
        lines += [f"![{captions.get(name, name)}]({rel}/{name})", ""]
    total_runs = sum(len(rs) for rs in runs.values())
    lines += [
        "---",
        f"{total_runs} runs; raw records: `{_display(results)}` (not committed).",
        "",
    ]
    # The overhead section is bench/overhead.py's (`make bench-overhead`):
    # kept as it stands, not rewritten by this run.
    kept = overhead.kept_section(doc)
    if kept:
        lines += [kept]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(envs.ROOT))
    except ValueError:
        return str(path)
