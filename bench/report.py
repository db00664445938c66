"""Targets, the printed table, the markdown table for the README, and the JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ratio

MB = 1_000_000

# (name, path into the results, comparison, target, unit shown)
TARGETS: list[tuple[str, tuple[str, ...], str, float, str]] = [
    ("single-reading req/s, FD-Edge (sync full) / bare Starlette", ("http", "single", "edge-full", "ratio_to_bare"),
     ">=", 0.60, "ratio"),
    ("batch ingest readings/s (sync full, 1,000 per request)", ("http", "batch", "edge-full", "readings_per_s"),
     ">=", 50_000, "readings/s"),
    ("server RSS after the stored readings", ("resources", "rss_after_bytes"), "<", 100 * MB, "bytes"),
    ("server RSS after the stored readings in batches of 1..300 rows", ("resources", "rss_after_varied_batches_bytes"),
     "<", 100 * MB, "bytes"),
    ("process start to /readyz 200", ("resources", "startup_s"), "<", 1.5, "s"),
    ("ingest slowdown with 100 SSE clients of the dashboard's event shape (arrays)", ("sse", "slowdown"), "<", 0.10,
     "fraction"),
    ("ingest slowdown with the uplink on (a real Mosquitto), single or batch", ("uplink", "slowdown"), "<", 0.10,
     "fraction"),
    ("server RSS after the stored readings, uplink on", ("uplink", "rss_after_bytes"), "<", 100 * MB, "bytes"),
    ("server RSS after the stored readings, every plant feature on", ("uplink", "every_feature", "rss_after_bytes"),
     "<", 100 * MB, "bytes"),
]


def dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, path, op, target, unit in TARGETS:
        value = dig(results, path)
        met = None if value is None else (value >= target if op == ">=" else value < target)
        out.append({"name": name, "path": ".".join(path), "value": value, "op": op, "target": target,
                    "unit": unit, "met": met})
    return out


# --------------------------------------------------------------------------- formatting

def num(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def mb(value: Any) -> str:
    return "n/a" if value is None else f"{value / MB:,.1f} MB"


def pct(value: Any) -> str:
    return "n/a" if value is None else f"{value * 100:+.1f} %"


def x(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.2f}x"


def verdict(results: dict[str, Any], path: tuple[str, ...]) -> str:
    for t in results.get("targets", []):
        if t["path"] == ".".join(path):
            symbol = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            op = "≥" if t["op"] == ">=" else "<"
            target = t["target"]
            shown = {"bytes": mb(target), "ratio": f"{target:.2f}", "readings/s": f"{target:,.0f}",
                     "s": f"{target} s", "fraction": f"{target * 100:.0f} %"}[t["unit"]]
            return f"{op} {shown}: {symbol}"
    return ""


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(section, measurement, FD-Edge, yardstick, ratio, target) for every figure."""
    out: list[tuple[str, str, str, str, str, str]] = []
    for name in ("inference", "http", "resources", "sse", "uplink"):
        if isinstance(results.get(name), dict) and "error" in results[name]:
            out.append((name, "FAILED: " + results[name]["error"].splitlines()[0][:100], "", "", "", ""))

    def ok(name: str) -> dict[str, Any] | None:
        return results.get(name) if isinstance(results.get(name), dict) and "error" not in results[name] else None

    inf = ok("inference")
    if inf:
        skipped = inf.get("keras_skipped")
        keras_note = f"Keras: {skipped}" if skipped else ""
        out += [
            ("inference", "µs/reading, batch 1 (ORT vs Keras predict)", num(inf["onnx_batch1_us"], 1),
             num(inf["keras_predict_batch1_us"], 0), x(inf.get("speedup_vs_keras_predict")), keras_note),
            ("inference", "µs/reading, batch 1 (ORT vs Keras model(x))", num(inf["onnx_batch1_us"], 1),
             num(inf["keras_call_batch1_us"], 0), x(inf.get("speedup_vs_keras_call")), ""),
            ("inference", "µs/reading, batch 256 (ORT, 1 thread)", num(inf["onnx_batch256_us"], 2), "", "", ""),
            ("inference", "µs/reading, batch 1, scaling + ORT (runtime path)", num(inf["pipeline_batch1_us"], 1),
             "", "", ""),
        ]
    http = ok("http")
    if http:
        bare = http["single"]["bare"]
        for sync in ("full", "normal"):
            e = http["single"][f"edge-{sync}"]
            out.append(("http", f"single POST /send req/s, sync {sync} (vs bare)", num(e["rps"]), num(bare["rps"]),
                        num(e["ratio_to_bare"], 2),
                        verdict(results, ("http", "single", f"edge-{sync}", "ratio_to_bare"))))
        floor = http["single"].get("bare-durable")
        if floor:
            out.append(("http", "  bare made durable: + append + group fdatasync (vs bare); FD-Edge full / it",
                         num(floor["rps"]), num(bare["rps"]), num(floor["ratio_to_bare"], 2),
                         f"FD-Edge full keeps {num(http['single']['edge-full'].get('ratio_to_durable'), 2)} of it"))
        for sync in ("full", "normal"):
            e = http["single"][f"edge-{sync}"]
            out.append(("http", f"  p50 / p99 ms at -c{http['wrk']['connections']}, sync {sync}",
                        f"{num(e['p50_ms'], 1)} / {num(e['p99_ms'], 1)}",
                        f"{num(bare['p50_ms'], 1)} / {num(bare['p99_ms'], 1)}", "", ""))
        for sync in ("full", "normal"):
            e = http["single"][f"edge-{sync}"]
            out.append(("http", f"  server CPU µs/request, sync {sync} (ratio: bare / FD-Edge)",
                        num(e["server_cpu_us_per_request"]), num(bare["server_cpu_us_per_request"]),
                        num(e.get("cpu_ratio_to_bare"), 2), ""))
        crowd = http.get("single_crowd")
        if crowd:
            n = http["wrk"]["crowd_connections"]
            for sync in ("full", "normal"):
                e = crowd[f"edge-{sync}"]
                out.append(("http", f"single POST /send req/s at -c{n}, sync {sync} (vs bare)", num(e["rps"]),
                            num(crowd["bare"]["rps"]), num(e["ratio_to_bare"], 2), ""))
            floor = crowd.get("bare-durable")
            if floor:
                out.append(("http", f"  bare made durable at -c{n} (vs bare); FD-Edge full / it", num(floor["rps"]),
                            num(crowd["bare"]["rps"]), num(floor["ratio_to_bare"], 2),
                            f"FD-Edge full keeps {num(crowd['edge-full'].get('ratio_to_durable'), 2)} of it"))
        fr = http["fixed_rate"]
        for sync in ("full", "normal"):
            e = fr[f"edge-{sync}"]
            out.append(("http", f"p50 / p99 ms at a fixed {fr['rate']:,} req/s, sync {sync}",
                        f"{num(e['p50_ms'], 1)} / {num(e['p99_ms'], 1)}",
                        f"{num(fr['bare']['p50_ms'], 1)} / {num(fr['bare']['p99_ms'], 1)}", "", ""))
        for sync in ("full", "normal"):
            e = fr[f"edge-{sync}"]
            out.append(("http", f"  p99 ms at {fr['rate']:,} req/s, best round, sync {sync}",
                        num(e.get("best_p99_ms"), 1), num(fr["bare"].get("best_p99_ms"), 1), "", ""))
        b = fr["bare"]
        out.append(("http", "  generator (bare runs): CPU, lowest rate, send lag p99 median/best",
                    f"{num((b['generator_cpu_fraction'] or 0) * 100)} % of a core, {num(b.get('min_achieved_rps'))}/s, "
                    f"{num(b['send_lag_p99_ms'], 1)}/{num(b.get('best_send_lag_p99_ms'), 1)} ms", "", "", ""))
        for sync in ("full", "normal"):
            b = http["batch"][f"edge-{sync}"]
            out.append(("http", f"batch ingest readings/s, sync {sync}", num(b["readings_per_s"]), "", "",
                        verdict(results, ("http", "batch", f"edge-{sync}", "readings_per_s"))))
    res = ok("resources")
    if res:
        out += [
            ("resources", f"RSS after {res['stored_readings']:,} stored readings", mb(res["rss_after_bytes"]), "", "",
             verdict(results, ("resources", "rss_after_bytes"))),
            ("resources", "RSS after as many in batches of 1..300 rows", mb(res.get("rss_after_varied_batches_bytes")),
             "", "", verdict(results, ("resources", "rss_after_varied_batches_bytes"))),
            ("resources", "RSS idle / peak", f"{mb(res['rss_idle_bytes'])} / {mb(res['rss_peak_bytes'])}", "", "", ""),
            ("resources", "start to /readyz 200 (empty / with data)",
             f"{num(res['startup_s'], 2)} s / {num(res['restart_with_data_s'], 2)} s", "", "",
             verdict(results, ("resources", "startup_s"))),
            ("resources", "disk bytes per stored reading (db + wal)", num(res["bytes_per_reading"]), "", "", ""),
        ]
    sse = ok("sse")
    if sse:
        # The target is judged on the dashboard's shape (`with`); the default shape has rows of its own.
        dashboard = sse.get("shape", "objects")  # results from before the shapes measured plain /events
        shapes = [("", dashboard, "dashboard's shape" if dashboard == "arrays" else "shape"),
                  ("_objects", "objects", "default shape")]
        for suffix, shape, what in shapes:
            w = sse.get(f"with{suffix}")
            if not isinstance(w, dict):
                continue
            target = verdict(results, ("sse", "slowdown")) if not suffix else "no target (the dashboard uses arrays)"
            out.append(("sse", f"single req/s with {sse['clients']} SSE clients, {what} {shape} (vs none)",
                        num(w["rps"]), num(sse["without"]["rps"]), num(sse.get(f"ratio{suffix}"), 2), target))
            out.append(("sse", f"  slowdown, {shape}; readings delivered to the slowest client",
                        pct(sse.get(f"slowdown{suffix}")), "", num((w.get("delivered_fraction") or 0) * 100, 1, " %"),
                        f"readers used {num((w.get('reader_cpu_fraction') or 0) * 100)} % of a core"))
            out.append(("sse", f"  server CPU µs/request, {shape} (vs none); bytes per reading per client",
                        f"{num(w.get('server_cpu_us_per_request'))}; {num(w.get('bytes_per_client_per_reading'))} B",
                        num(sse["without"].get("server_cpu_us_per_request")), "", ""))
        floor = sse.get("with_floor")
        if isinstance(floor, dict):
            out.append(("sse", f"  floor: the same frames to {sse['clients']} readers from a bare socket pusher "
                               "(vs none)",
                        num(floor["rps"]), num(sse["without"]["rps"]), num(sse.get("ratio_floor"), 2),
                        "what moving the bytes costs here"))
            out.append(("sse", "  floor: slowdown; readings delivered to the slowest reader",
                        pct(sse.get("slowdown_floor")), "", num((floor.get("delivered_fraction") or 0) * 100, 1, " %"),
                        f"readers used {num((floor.get('reader_cpu_fraction') or 0) * 100)} % of a core"))
            with_, without = sse.get("with") or {}, sse["without"].get("server_cpu_us_per_request")
            added = (with_["server_cpu_us_per_request"] - without
                     if with_.get("server_cpu_us_per_request") is not None and without is not None else None)
            out.append(("sse", f"  sending CPU µs per reading to {sse['clients']} readers: FD-Edge's added "
                               "(vs the pusher's)",
                        num(added), num(floor.get("sender_cpu_us_per_reading")), "", ""))
    up = ok("uplink")
    if up:
        on, off = "edge-uplink-on", "edge-uplink-off"
        out += [
            ("uplink", "single POST /send req/s, uplink on (vs off)", num(up["single"][on]["rps"]),
             num(up["single"][off]["rps"]), num(up["single_ratio"], 2), verdict(results, ("uplink", "slowdown"))),
            ("uplink", "batch ingest readings/s, uplink on (vs off)", num(up["batch"][on]["readings_per_s"]),
             num(up["batch"][off]["readings_per_s"]), num(up["batch_ratio"], 2), ""),
            ("uplink", "single req/s with the uplink's broker stopped (vs off)",
             num(up["broker_down_single"][on]["rps"]), num(up["broker_down_single"][off]["rps"]),
             num(up["broker_down_single_ratio"], 2), f"caught up {num(up['recovered_after_outage_s'], 1)} s after"),
            ("uplink", f"RSS after {up['stored_readings']:,} stored readings, uplink on (vs off)",
             mb(up["rss_after_bytes"]), mb(up.get("rss_after_bytes_uplink_off")),
             num(ratio(up["rss_after_bytes"], up.get("rss_after_bytes_uplink_off")), 2),
             verdict(results, ("uplink", "rss_after_bytes"))),
            ("uplink", "readings arrived at the subscriber / stored; caught up after ingest",
             f"{num(up['arrived_readings'])} / {num(up['stored_readings'])}", "", "",
             f"{num(up['caught_up_after_ingest_s'], 1)} s"),
        ]
        every = up.get("every_feature") or {}
        if every.get("rss_after_bytes"):
            out.append(("uplink", f"RSS after {every['stored_readings']:,} stored readings, every plant feature on "
                        "(MQTT in, uplink, Modbus, Socket.IO, gauges; vs uplink off)",
                        mb(every["rss_after_bytes"]), mb(up.get("rss_after_bytes_uplink_off")),
                        num(ratio(every["rss_after_bytes"], up.get("rss_after_bytes_uplink_off")), 2),
                        verdict(results, ("uplink", "every_feature", "rss_after_bytes"))))
    return out


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = m.get("versions", {})
    load = m.get("loadavg_start")
    share = m.get("cpu_share") or {}
    noise = f"; CPU steal during the run {share['steal'] * 100:.1f} %" if "steal" in share else ""
    return (f"{m['cpu']} ({m['arch']}), {m['cores_usable']} of {m['cores']} cores usable, Python {m['python']}, "
            f"onnxruntime {v.get('onnxruntime', '?')}, uvicorn {v.get('uvicorn', '?')}, starlette "
            f"{v.get('starlette', '?')}; data on {m.get('data_filesystem') or '?'}; load average at start "
            f"{' '.join(f'{x:.2f}' for x in load) if load else '?'}{noise}")


HEAD = ("section", "measurement", "FD-Edge", "yardstick", "ratio", "target")


def table(results: dict[str, Any]) -> str:
    body = rows(results)
    widths = [max(len(r[i]) for r in [HEAD, *body]) for i in range(len(HEAD))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if 2 <= i <= 4 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    out = [f"FD-Edge benchmark{' (quick)' if results['quick'] else ''}, {results['created']}",
           f"machine: {machine_line(results)}", "", line(HEAD), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in body]
    out.append("")
    for t in results.get("targets", []):
        state = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        out.append(f"target {state:>12}: {t['name']}")
    out += ab_lines(results)
    out += growth_lines(results)
    out.append(f"\n{results['duration_s']:.0f} s in all; ratios are medians of {rounds_text(results)} "
               "interleaved rounds on this machine, the absolute figures are only for this machine.")
    return "\n".join(out)


AB_LABELS = {"single.rps": "single POST /send req/s, sync full", "single_crowd.rps": "  the same, 64 connections",
             "fixed_rate.p99_ms": "p99 ms at the fixed rate (lower is better)",
             "batch.readings_per_s": "batch ingest readings/s"}


def ab_lines(results: dict[str, Any]) -> list[str]:
    """The A/B block: this checkout / the --vs one, measured side by side in the same rounds."""
    ab = (results.get("http") or {}).get("ab")
    vs = results.get("vs")
    if not ab or not vs:
        return []
    out = ["", f"A/B vs {vs['dir']} ({vs['commit']}): this / that, interleaved in the same rounds; a ratio "
               "within ±10 % or whose per-round ratios straddle 1.0 is noise"]
    for key, label in AB_LABELS.items():
        row = ab[key]
        rounds = ", ".join(num(r, 2) for r in row["per_round"])
        out.append(f"  {label}: {num(row['head'], 1)} vs {num(row['vs'], 1)} = {num(row['ratio'], 2)} "
                   f"(rounds {rounds})")
    rss = ab["rss_after_bytes"]
    out.append(f"  server RSS after the HTTP section: {mb(rss['head'])} vs {mb(rss['vs'])}")
    return out


GROWTH = (("machines_s", "/api/machines"), ("fleet_s", "/api/fleet"),
          ("fleet_spark30_s", "/api/fleet?spark=30 (sparklines)"), ("latest_s", "/api/latest, one machine"),
          ("series_one_machine_15min_s", "/api/series, one machine, 15 min"),
          ("series_one_machine_7d_s", "/api/series, one machine, 7 days"),
          ("series_all_90d_s", "/api/series, all machines, 90 days"),
          ("count_30d_s", "/api/count, 30 days"), ("count_30d_threshold_s", "/api/count, 30 days, threshold"),
          ("restart_s", "restart to /readyz 200"))


def growth_lines(results: dict[str, Any]) -> list[str]:
    """The scale section as a markdown table: ms per size, and the ratio largest / smallest."""
    scale = results.get("scale")
    if not scale or "by_size" not in scale:
        return []
    sizes = sorted(scale["by_size"], key=int)
    big, small = scale["by_size"][sizes[-1]], scale["by_size"][sizes[0]]
    out = ["", f"Growth (scale section; {scale['machines']} machines, a reading each every {scale['every_s']:g} s, "
               "built through the batch API; medians in ms):", "",
           "| cost | " + " | ".join(f"{int(n):,}" for n in sizes) + f" | {int(sizes[-1]):,} / {int(sizes[0]):,} |",
           "| --- |" + " ---: |" * (len(sizes) + 1)]
    for key, label in GROWTH:
        cells = [num((scale["by_size"][n].get(key) or 0) * 1000, 1) for n in sizes]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {x(ratio(big.get(key), small.get(key)))} |")
    rt = {k: v for k, v in big.items() if k.startswith(("retention", "ingest_p99", "db_bytes", "export"))}
    if rt.get("retention_pass_s") is not None:
        out.append("")
        out.append(f"Retention pass deleting {rt['retention_deleted']:,} of {int(sizes[-1]):,}: "
                   f"{rt['retention_pass_s']:.1f} s; single-reading ingest p99 "
                   f"{num(rt['ingest_p99_during_retention_ms'], 1)} ms during it vs "
                   f"{num(rt['ingest_p99_quiet_ms'], 1)} ms quiet ({x(rt['retention_p99_ratio'])}); "
                   f"file {mb(rt['db_bytes_before_retention'])} -> {mb(rt['db_bytes_after_retention'])}.")
    export = big.get("export_30d")
    if export:
        out.append(f"30-day CSV export: {export['rows']:,} rows in {export['seconds']:.1f} s "
                   f"({num(export['rows_per_s'])} rows/s).")
    return out


def rounds_text(results: dict[str, Any]) -> str:
    """'3' or '3 (SSE: 5)': the SSE section takes more rounds than the others."""
    n = results["plan"]["rounds"]
    sse = (results.get("sse") or {}).get("rounds")
    return f"{n} (SSE: {sse})" if sse and sse != n else str(n)


def markdown(results: dict[str, Any]) -> str:
    out = [
        f"Measured by `make bench` (`python -m bench`{' --quick' if results['quick'] else ''}) in one run on "
        f"{machine_line(results)}. The yardstick is a bare Starlette endpoint that only parses the same JSON body "
        "(`bench/bare_app.py`, same uvicorn settings); wrk with one thread and "
        f"{results['plan']['connections']} connections; medians of {rounds_text(results)} interleaved rounds. "
        "Only the ratios carry over to other machines.",
        "",
        "| measurement | FD-Edge | yardstick | ratio | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for _section, label, edge, yard, rat, target in rows(results):
        out.append("| " + " | ".join([label.strip(), edge, yard, rat, target]) + " |")
    out += ab_lines(results)
    out += growth_lines(results)
    return "\n".join(out) + "\n"


def write(results: dict[str, Any], directory: Path, stem: str, log: Callable[[str], None] = print) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".json", json.dumps(results, indent=2, sort_keys=False) + "\n"), (".md", markdown(results))):
        path = directory / f"{stem}{suffix}"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        written.append(path)
    return written
