"""What the bench reports: CPU by stage, ratios, the cost model, the table and the JSON document.

``stage_seconds`` attributes cProfile self time to pipeline stages (``STAGES``)
by module; ``ratios`` compares each configuration with its reference
pipeline (``REFERENCE_OF``); ``cost_model`` fits set-up and running cost per
call over call lengths.  ``format_table`` prints a run's document and
``write_results`` writes it as ``calls_per_core.json``, ``.txt`` and ``.png``
(``plot``), with ``machine_info`` saying where it ran.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

REFERENCE_OF = {"ws20": "reference", "wav": "reference_wav"}
SIZING_SECONDS = 180.0     # a contact-centre call: about three minutes of talk


# Per-stage attribution of cProfile self time: module (file stem, or package
# directory for third-party code) -> stage.  Functions that are in none of these
# (builtins, numpy, most of the standard library) are charged to their callers.
STAGES = ("capture", "decode", "sip_sdp", "rtp_jitter", "codec", "wav_output", "websocket", "other")
_MODULE_STAGE = {      # rtp2ws's subpackage (or subpackage/module) -> stage
    "capture": "capture", "net": "decode",
    "signalling": "sip_sdp", "signalling/correlator": "rtp_jitter",
    "media": "rtp_jitter", "pipeline": "rtp_jitter", "fastpath": "rtp_jitter",
    "codec": "codec",
    "sinks/wav": "wav_output", "wave": "wav_output",
    "sinks/streams": "websocket", "ws": "websocket",
    "run": "other", "bench": "other", "reference_pipeline": "other",
}
_PACKAGE_STAGE = {"websockets": "websocket", "asyncio": "websocket", "uvloop": "websocket",
                  "dpkt": None, "json": "websocket"}
_DPKT_STAGE = {"sip": "sip_sdp", "http": "sip_sdp", "rtp": "rtp_jitter", "ethernet": "decode", "ip": "decode",
               "udp": "decode", "dpkt": "decode", "ip6": "decode", "compat": "decode"}
_BUILTIN_STAGE = (("audioop", "codec"), ("pcap", "capture"), ("_fastpath", "capture"), ("uvloop", "websocket"),
                  ("_native", "codec"), ("_asyncio", "websocket"), ("websockets", "websocket"),
                  ("select.epoll", "websocket"))


def _stage_of(key) -> str | None:
    filename, _, name = key
    if filename == "~":
        for needle, stage in _BUILTIN_STAGE:
            if needle in name:
                return stage
        return None
    p = Path(filename)
    parts = p.parts
    stem = p.stem
    if "rtp2ws" in parts[-3:-1]:
        if stem == "harness" and name == "_run_ws":
            return "websocket"          # drives the event loop: uvloop's own work shows up here
        sub = parts[-2]
        return _MODULE_STAGE.get(f"{sub}/{stem}", _MODULE_STAGE.get(sub, "other"))
    if "dpkt" in parts:
        return _DPKT_STAGE.get(stem, "decode")
    for pkg, pkg_stage in _PACKAGE_STAGE.items():
        if pkg in parts and pkg_stage:
            return pkg_stage
    if stem in ("reference_pipeline", "wave"):
        return _MODULE_STAGE[stem]
    return None


def stage_seconds(stats) -> dict:
    """CPU seconds per stage from a ``pstats.Stats``: a function's self time goes to
    its module's stage, or is split among its callers' stages (by the self time
    spent under each caller) when its module is no stage of its own."""
    raw = stats.stats
    memo: dict = {}

    def shares(key, depth=0) -> dict:
        if key in memo:
            return memo[key]
        stage = _stage_of(key)
        if stage is not None:
            memo[key] = {stage: 1.0}
            return memo[key]
        memo[key] = {"other": 1.0}          # cycle guard
        entry = raw.get(key)
        callers = entry[4] if entry else {}
        if not callers or depth > 40:
            return memo[key]
        total = sum(max(v[2], 0.0) for v in callers.values())
        out: dict = {}
        for ck, v in callers.items():
            w = (max(v[2], 0.0) / total) if total > 0 else 1.0 / len(callers)
            for st, f in shares(ck, depth + 1).items():
                out[st] = out.get(st, 0.0) + w * f
        memo[key] = out or {"other": 1.0}
        return memo[key]

    result = {s: 0.0 for s in STAGES}
    for key, (_cc, _nc, tt, _ct, _callers) in raw.items():
        if tt <= 0:
            continue
        for st, f in shares(key).items():
            result[st] = result.get(st, 0.0) + tt * f
    return result


def top_functions(stats, n: int = 12) -> list:
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (filename, line, name), (_cc, nc, tt, ct, _c) in rows:
        where = name if filename == "~" else f"{Path(filename).parent.name}/{Path(filename).name}:{line}({name})"
        out.append({"function": where, "calls": nc, "self_s": round(tt, 4), "cumulative_s": round(ct, 4)})
    return out


def stage_shares(res: dict, calls: int, seconds: float) -> dict:
    """A profiled run's entry in the document's ``stages``: each stage's share of its CPU."""
    secs = res.get("stage_seconds") or {}
    total = sum(secs.values()) or 1.0
    return {
        "calls": calls, "seconds": seconds, "profiled_cpu_s": total,
        "shares": {k: v / total for k, v in secs.items()},
        "top_functions": res.get("top_functions", []),
    }


def _find(runs: list, config: str, calls: int, seconds: float | None = None) -> dict | None:
    """The run of ``config`` at ``calls`` (and ``seconds``; None: the longest calls)."""
    found = [r for r in runs if r["config"] == config and r["calls"] == calls
             and (seconds is None or r["seconds"] == seconds)]
    return max(found, key=lambda r: r["seconds"]) if found else None


def ratios(runs: list, calls: int, seconds: float) -> list[dict]:
    """Calls per core of each configuration over its reference pipeline's (``REFERENCE_OF``)
    at ``calls`` and ``seconds``, where both ran."""
    out = []
    for mine, ref in REFERENCE_OF.items():
        a = _find(runs, mine, calls, seconds)
        b = _find(runs, ref, calls, seconds)
        if a and b and a["calls_per_core"] and b["calls_per_core"]:
            out.append({"calls": calls, "seconds": seconds, "config": mine, "reference": ref,
                        "ratio": a["calls_per_core"] / b["calls_per_core"]})
    return out


def summary(runs: list, configs, calls: int) -> dict:
    """Calls per core of each configuration at ``calls`` (with the longest calls there)."""
    return {c: found["calls_per_core"] for c in configs if (found := _find(runs, c, calls))}


def cost_model(runs: list) -> list[dict]:
    """Where one configuration ran at one N with calls of two or more lengths L, its CPU
    is fitted (least squares) as N x (setup + L x per_second): what a call costs to set
    up and tear down (SIP, stream handshakes, files), and what each second of it costs
    once running.  1 / per_second is what a core carries at steady state, and
    ``at_sizing`` the calls per core for calls of ``SIZING_SECONDS``."""
    groups: dict = {}
    for r in runs:
        if r.get("cpu_s"):
            groups.setdefault((r["config"], r["calls"]), []).append((r["seconds"], r["cpu_s"] / r["calls"]))
    out = []
    for (config, n), pts in groups.items():
        if len({L for L, _ in pts}) < 2:
            continue
        xs = np.array([L for L, _ in pts])
        ys = np.array([c for _, c in pts])
        per_second, setup = np.polyfit(xs, ys, 1)
        if per_second <= 0:
            continue
        out.append({"config": config, "calls": n, "lengths": sorted({float(L) for L in xs}),
                    "setup_ms": float(setup) * 1e3, "per_call_second_us": float(per_second) * 1e6,
                    "steady_calls_per_core": float(1.0 / per_second),
                    "sizing_seconds": SIZING_SECONDS,
                    "at_sizing": float(SIZING_SECONDS / (max(setup, 0.0) + SIZING_SECONDS * per_second))})
    return out


def format_table(doc: dict) -> str:
    lines = []
    m = doc["machine"]
    lines.append(f"rtp2ws bench ({m.get('commit') or 'unknown commit'}): {m['cpu']}, {m['cores']} cores, "
                 f"Python {m['python']}, "
                 f"native {'on' if m['native'] else 'off'}, sink: {doc['settings']['sink']}")
    lines.append("")
    hdr = (f"{'config':<14}{'calls':>7}{'call s':>8}{'CPU s':>9}{'calls/core':>12}{'us/pkt':>9}"
           f"{'x realtime':>11}{'peak RSS MB':>13}{'KB/call':>9}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in doc["runs"]:
        mem = r.get("mem_per_call_kb")
        lines.append(f"{r['config']:<14}{r['calls']:>7}{r['seconds']:>8g}{r['cpu_s']:>9.2f}"
                     f"{r['calls_per_core']:>12.0f}{r['us_per_packet']:>9.1f}{r['realtime_factor']:>11.1f}"
                     f"{r['peak_rss_bytes'] / 2**20:>13.0f}{(f'{mem:.0f}' if mem is not None else '-'):>9}")
    commits = sorted({r.get("commit") or "?" for r in doc["runs"]})
    if len(commits) > 1:
        lines.append(f"WARNING: the source changed during the run; runs used commits {', '.join(commits)}")
    if doc["ratios"]:
        lines.append("")
        for x in doc["ratios"]:
            lines.append(f"N={x['calls']}, {x.get('seconds', 0):g} s calls: {x['config']} / {x['reference']} = "
                         f"{x['ratio']:.2f}x")
    if doc.get("cost_model"):
        lines.append("")
        lines.append("cost per call, fitted over call lengths (CPU = N x (set-up + seconds x per second)):")
        hdr2 = (f"{'config':<14}{'calls':>7}{'lengths s':>14}{'set-up ms':>11}{'us/call-s':>11}"
                f"{'steady calls/core':>19}{f'at {SIZING_SECONDS:g} s calls':>17}")
        lines.append(hdr2)
        for m in doc["cost_model"]:
            lines.append(f"{m['config']:<14}{m['calls']:>7}{','.join(f'{L:g}' for L in m['lengths']):>14}"
                         f"{m['setup_ms']:>11.2f}{m['per_call_second_us']:>11.1f}"
                         f"{m['steady_calls_per_core']:>19.0f}{m['at_sizing']:>17.0f}")
    if doc["stages"]:
        lines.append("")
        names = [s for s in STAGES if any(v["shares"].get(s, 0) > 0.0005 for v in doc["stages"].values())]
        lines.append("CPU by stage (cProfile self time, %):")
        lines.append(f"{'config':<14}" + "".join(f"{s:>12}" for s in names))
        for config, v in doc["stages"].items():
            lines.append(f"{config:<14}" + "".join(f"{100 * v['shares'].get(s, 0):>12.1f}" for s in names))
    lat = doc.get("latency")
    if lat:
        lines.append("")
        if lat.get("frames"):
            rt = lat.get("realtime_calls_per_core")
            lines.append(f"latency capture -> socket ({lat.get('config', 'ws20')}, --speed realtime, "
                         f"--flush-ms {lat.get('flush_ms')}, "
                         f"{lat['calls']} calls x {lat['seconds']:g} s, {lat['core_load'] * 100:.0f}% of a core, "
                         + (f"{rt:.0f} realtime calls per core" if rt else "fell behind the capture clock")
                         + (f"; {lat['probed_calls_per_core']:.0f} with the latency probes):"
                            if lat.get("probed_calls_per_core") else "):"))
            lines.append(f"  all frames:        p50 {lat['p50_ms']} ms, p90 {lat['p90_ms']} ms, "
                         f"p99 {lat['p99_ms']} ms, "
                         f"max {lat['max_ms']} ms ({lat['frames']} frames)")
            st = lat.get("steady") or {}
            if st.get("frames"):
                lines.append(f"  every call set up: p50 {st['p50_ms']} ms, p90 {st['p90_ms']} ms, "
                             f"p99 {st['p99_ms']} ms, max {st['max_ms']} ms ({st['frames']} frames)")
            if lat.get("mem_per_call_kb") is not None:
                lines.append(f"memory per active call at realtime: {lat['mem_per_call_kb']:.0f} KB")
        else:
            lines.append("latency: no frames measured")
        lines += _realtime_lines(lat)
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _realtime_lines(lat: dict) -> list[str]:
    """The latency run's realtime calls per core beside the reference's (``lat["reference"]``)."""
    runs = [lat] + ([lat["reference"]] if lat.get("reference") else [])
    out = ["", f"realtime calls per core ({lat['calls']} calls x {lat['seconds']:g} s, the same capture paced on "
               f"its clock, each into a discard sink of its own; CPU of the decoding process only):"]
    for r in runs:
        behind = f"ended {_ms(r.get('behind_s'))} behind the capture clock (at most {_ms(r.get('max_behind_s'))})"
        if r.get("realtime_calls_per_core"):
            text = f"{r['realtime_calls_per_core']:>8.0f}  {r['cpu_s']:7.2f} s CPU  {behind}"
        else:
            text = (f"   fell behind: {behind}, {r['wall_s']:.1f} s of wall time; no figure "
                    f"({r['cpu_s']:.2f} s CPU)")
        sink = r.get("sink_us_per_frame")
        if sink is not None:
            text += f"; sink {r['sink_cpu_s']:.2f} s CPU, {sink:.1f} us a frame"
        out.append(f"  {r['config']:<12}{text}")
    if lat.get("reference"):
        ratio = lat.get("ratio")
        out.append(f"  {lat['config']} / reference at realtime = "
                   + (f"{ratio:.2f}x" if ratio else "no ratio (a run fell behind the capture clock)"))
    return out


def write_results(doc: dict, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": str(out_dir / "calls_per_core.json"), "png": str(out_dir / "calls_per_core.png"),
             "table": str(out_dir / "calls_per_core.txt")}
    table = format_table(doc)
    Path(paths["table"]).write_text(table + "\n")
    Path(paths["json"]).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    plot(doc, paths["png"])
    return paths


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    series = []                       # (config, call length): one line each when lengths were given
    fixed = bool(doc["settings"].get("seconds"))
    for r in doc["runs"]:
        key = (r["config"], r["seconds"] if fixed else None)
        if key not in series:
            series.append(key)
    for config, seconds in series:
        pts = sorted((r["calls"], r["calls_per_core"]) for r in doc["runs"]
                     if r["config"] == config and (seconds is None or r["seconds"] == seconds))
        xs, ys = zip(*pts, strict=True)
        style = "--" if config.startswith("reference") else "-"
        label = config if seconds is None or len({s for _, s in series}) == 1 else f"{config}, {seconds:g} s"
        ax.plot(xs, ys, style, marker="o", label=label)
    ax.set_xscale("log")
    lengths: dict = {}
    for r in doc["runs"]:
        lengths.setdefault(r["calls"], set()).add(r["seconds"])
    ax.set_xticks(sorted(lengths))
    ax.set_xticklabels([f"{n}\n{next(iter(ls)):g} s" if len(ls) == 1 else f"{n}"     # else: in the legend
                        for n, ls in sorted(lengths.items())], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("concurrent calls (N) and audio per call")
    ax.set_ylabel("calls per core (call seconds / CPU second)")
    m = doc["machine"]
    ax.set_title(f"rtp2ws calls per core, --speed max ({m.get('commit') or 'unknown commit'})\n"
                 f"{m['cpu'][:60]}, {m['cores']} cores", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def git_commit() -> str | None:
    """The source checkout's commit (``+dirty`` with uncommitted changes to tracked files)."""
    try:
        root = Path(__file__).resolve().parents[2]
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from ..speedups import load_native

    commit = git_commit()
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit,
            "platform": platform.platform(), "native": load_native() is not None,
            "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None}

