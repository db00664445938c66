"""Figures the reliability, security, fuzz and soak tests measure, written as
`test-output/reliability.json` and `test-output/reliability.md` at the end of a pytest session.

Tests only count (`add`), note values (`put`, `keep_max`) and list things (`note`); the markdown
is generated from those figures, never written by hand. `make test` and `make soak` are separate
runs: each replaces only the sections it measured and keeps the other run's sections, so the file
shows the latest figures of both.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = Path(os.environ.get("FDEDGE_TEST_OUTPUT", REPO / "test-output"))

# Section order in the markdown, with a title each; a section is a dict of figures.
TITLES = {
    "crash": "Acknowledged readings survive SIGKILL",
    "crash_soak": "Acknowledged readings survive SIGKILL (soak)",
    "sensor": "Virtual sensor buffer across server kills",
    "faults": "Faults survived",
    "faults_soak": "Faults survived (soak: the real 30 s deadlines)",
    "bad_input": "Bad input refused cleanly",
    "security": "Access and injection",
    "hostile": "Hostile and careless clients",
    "load": "Load held (short soak, make test)",
    "load_soak": "Load held (soak)",
}


class Report:
    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, dict[str, str]] = {}  # section -> test id -> outcome

    def section(self, name: str) -> dict[str, Any]:
        if name not in TITLES:
            raise KeyError(f"unknown report section {name!r}; add it to TITLES")
        return self.sections.setdefault(name, {})

    def add(self, section: str, key: str, n: int | float = 1) -> None:
        s = self.section(section)
        s[key] = s.get(key, 0) + n

    def put(self, section: str, key: str, value: Any) -> None:
        self.section(section)[key] = value

    def keep_max(self, section: str, key: str, value: float) -> None:
        s = self.section(section)
        s[key] = max(s.get(key, value), value)

    def note(self, section: str, key: str, item: Any) -> None:
        s = self.section(section)
        items = s.setdefault(key, [])
        if item not in items:
            items.append(item)

    def outcome(self, section: str, test: str, outcome: str) -> None:
        self.outcomes.setdefault(section, {})[test] = outcome

    # -- output -----------------------------------------------------------------------------------

    def write(self, out_dir: Path = OUT_DIR) -> Path | None:
        if not self.sections and not self.outcomes:
            return None
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "reliability.json"
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = {}
        merged = dict(previous.get("sections", {}))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        touched = set(self.sections) | set(self.outcomes)
        for name in touched:
            tests = self.outcomes.get(name, {})
            merged[name] = {
                "measured": stamp,
                "tests": len(tests),
                "failed": sorted(t for t, o in tests.items() if o != "passed"),
                "figures": self.sections.get(name, {}),
            }
        data = {"generated": stamp, "environment": environment(), "sections": merged}
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        (out_dir / "reliability.md").write_text(markdown(data))
        return path


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "commit": commit}


# -- markdown -------------------------------------------------------------------------------------

def _n(value: Any) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    if isinstance(value, (int, float)):
        return f"{int(value):,}"
    return str(value)


def _count(n: Any, word: str) -> str:
    return f"{_n(n)} {word}{'' if n == 1 else 's'}"


def _list(items: Any) -> str:
    return ", ".join(map(str, items)) if isinstance(items, list) else str(items)


def _crash(f: dict) -> list[str]:
    return [
        f"{_n(f.get('rounds', 0))} SIGKILLs at random moments under {_n(f.get('workers', 0))} concurrent clients "
        f"(sync {_list(f.get('sync_modes', []))}; {_list(f.get('formats', []))}; batch sizes {_list(f.get('batch_sizes', []))})",
        f"{_n(f.get('requests_acked', 0))} requests / {_n(f.get('readings_acked', 0))} readings answered 200: "
        f"**{_n(f.get('readings_lost', 0))} lost, {_n(f.get('readings_duplicated', 0))} duplicated, "
        f"{_n(f.get('batches_half_stored', 0))} batches half-stored**",
        f"{_count(f.get('readings_committed_unacked', 0), 'reading')} committed although the kill cut off the answer "
        f"(stored whole); {_count(f.get('keyed_retries', 0), 'unanswered request')} re-sent with the same Idempotency-Key "
        f"after the restart, {_n(f.get('keyed_retries_replayed', 0))} answered from the stored result",
    ]


def _sensor(f: dict) -> list[str]:
    return [f"`fdedge simulate` streamed {_n(f.get('generated', 0))} readings while the server was SIGKILLed "
            f"{_n(f.get('server_kills', 0))} times (down {_list(f.get('downtimes_s', []))} s): "
            f"{_n(f.get('stored', 0))} stored, **{_n(f.get('lost', 0))} lost, {_n(f.get('duplicated', 0))} duplicated**, "
            f"order kept"]


def _faults(f: dict) -> list[str]:
    lines = [f"{name}: {what}" for name, what in f.get("survived", {}).items()]
    if f.get("skipped"):
        lines.append("skipped here: " + _list(f["skipped"]))
    return lines


def _bad_input(f: dict) -> list[str]:
    lines = [f"{_n(f.get('examples', 0))} generated bad/odd requests (hypothesis: {_list(sorted(f.get('kinds', [])))}): "
             f"**{_n(f.get('server_errors', 0))} answered 5xx**, {_n(f.get('accepted', 0))} accepted, "
             f"{_n(f.get('refused', 0))} refused with a JSON reason; row count grew by exactly the accepted readings"]
    if "schemathesis_operations" in f:
        lines.append(f"schemathesis against /openapi.json: {_n(f.get('schemathesis_operations', 0))} operations, "
                     f"{_n(f.get('schemathesis_cases', 0))} cases, no 5xx, responses conform to the schema")
    return lines


def _security(f: dict) -> list[str]:
    return [
        f"{_n(f.get('routes', 0))} routes enumerated from `app.routes`: {_n(f.get('refusals', 0))} requests without, "
        f"with a wrong or with the wrong kind of token all refused 401; open: {_list(f.get('open_paths', []))}",
        f"tokens compared with `hmac.compare_digest` ({_n(f.get('compare_digest_calls', 0))} calls seen); "
        f"absent from a debug + access log of {_n(f.get('logged_requests', 0))} requests",
        f"{_n(f.get('injection_requests', 0))} injection attempts on every query parameter: no SQL text built from "
        f"input ({_n(f.get('sql_statements_traced', 0))} statements traced); static scan of "
        f"{_n(f.get('execute_calls_scanned', 0))} `execute` calls in edge/",
        f"CSV export neutralises {_list(f.get('formula_prefixes', []))}; {_list(f.get('other_checks', []))}",
    ]


def _load(f: dict) -> list[str]:
    return [
        f"{_n(f.get('seconds', 0))} s at {_n(f.get('rate', 0))} readings/s (single + batches) with "
        f"{_n(f.get('sse_clients', 0))} SSE clients, retention at {_n(f.get('retention_rows', 0))} rows: "
        f"{_n(f.get('readings', 0))} readings, {_n(f.get('errors', 0))} errors",
        f"server RSS {_n(f.get('rss_start_mb', 0))} MB after warm-up -> {_n(f.get('rss_end_mb', 0))} MB at the end "
        f"(peak {_n(f.get('rss_peak_mb', 0))} MB)",
        f"POST /send p99 {f.get('p99_first_ms', 0):.1f} ms in the first window, worst later window "
        f"{f.get('p99_worst_ms', 0):.1f} ms (p50 {f.get('p50_ms', 0):.1f} ms; "
        f"{_n(f.get('windows_judged', 0))} of {_count(f.get('windows', 0), 'window')} of "
        f"{_n(f.get('window_s', 0))} s judged"
        + ("" if f.get("windows_judged") == f.get("windows") else "; the others had other work on the machine") + ")",
        f"rows peaked at {_n(f.get('rows_peak', 0))} for a bound of {_n(f.get('retention_rows', 0))} "
        f"(retention pass every 0.5 s)",
        f"SSE: {_n(f.get('sse_events', 0))} events delivered, **{_n(f.get('sse_missing', 0))} missing, "
        f"{_n(f.get('sse_duplicates', 0))} duplicated**, {_n(f.get('sse_gap_events', 0))} declared gaps",
    ]


def _hostile(f: dict) -> list[str]:
    """Each figure is a sentence its test wrote (one per item of issue 14), in a stable order."""
    return [str(f[key]) for key in sorted(f)]


RENDER = {"hostile": _hostile, "crash": _crash, "crash_soak": _crash, "sensor": _sensor, "faults": _faults, "faults_soak": _faults, "bad_input": _bad_input,
          "security": _security, "load": _load, "load_soak": _load}


def markdown(data: dict) -> str:
    env = data.get("environment", {})
    out = ["### Reliability and security (generated by the test suite)", "",
           f"Measured by `make test` / `make soak` on {env.get('cpus', '?')} CPUs ({env.get('machine', '')}, "
           f"Python {env.get('python', '')}, commit {env.get('commit', '') or 'unknown'}); "
           "regenerated into `test-output/reliability.md` on every run.", ""]
    for name, title in TITLES.items():
        sec = data.get("sections", {}).get(name)
        if not sec:
            continue
        failed = sec.get("failed") or []
        tests = sec.get("tests", 0)
        status = f"**{len(failed)} of {_count(tests, 'test')} failed**" if failed else f"{_count(tests, 'test')} passed"
        out.append(f"**{title}** ({status}, {sec.get('measured', '')})")
        out.append("")
        try:
            lines = RENDER[name](sec.get("figures", {}))
        except Exception as exc:  # noqa: BLE001 - a rendering slip must not hide the figures
            lines = [f"(could not render: {exc}) {json.dumps(sec.get('figures', {}), default=str)}"]
        out += [f"- {line}" for line in lines]
        out.append("")
    return "\n".join(out)
