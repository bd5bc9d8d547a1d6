"""`make reliability`: run every fault, bad-input and security test of issue #7 (the existing ones
and tests/integration|unit/test_reliability_*.py, with the extra kill points and 10x fuzzing), then
the two load scenarios, and write docs/RELIABILITY.md: one row per scenario (how it is injected,
what must happen, what was observed, the tests, pass/fail) and the load figures. Exits 1 when any
scenario failed.

    python -m tests.reliability.run [--load-seconds 60] [--runner-tasks 2000] [--no-load] [--output docs/RELIABILITY.md]

`RELIABILITY_ARGS="--load-seconds 600"` gives the 10-minute exporter figure (also saved under
tests/reliability/results/ and quoted by later runs)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.reliability import load_exporter, load_runner
from tests.reliability.scenarios import SCENARIOS, Scenario

REPO = Path(__file__).resolve().parents[2]


def test_files() -> list[str]:
    files = sorted({t.split("::")[0] for s in SCENARIOS for t in s.tests if not t.startswith("load:")})
    return files


def run_pytest(junit: Path) -> int:
    env = dict(os.environ, SMOLTRACE_RELIABILITY_FULL="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *test_files()]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=REPO, env=env, check=False, timeout=3600).returncode


def outcomes(junit: Path) -> dict[str, tuple[str, float, str]]:
    """node id -> (passed|failed|skipped, seconds, first line of the failure)."""
    out: dict[str, tuple[str, float, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        status, message = "passed", ""
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                status, message = "failed", (el.get("message") or "").splitlines()[0][:160] if el.get("message") else tag
        if case.find("skipped") is not None:
            status, message = "skipped", (case.find("skipped").get("message") or "")[:160]  # type: ignore[union-attr]
        out[node] = (status, float(case.get("time", 0) or 0), message)
    return out


def judge(s: Scenario, results: dict[str, tuple[str, float, str]], load: dict[str, dict[str, Any]]) -> tuple[bool, str, list[str]]:
    ids: list[str] = []
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    notes: list[str] = []
    ok = True
    for test in s.tests:
        if test.startswith("load:"):
            figures = load.get(test[5:])
            ids.append(test)
            if figures is None:
                notes.append(f"{test} not run")
                ok = False
            elif not figures.get("passed"):
                notes.append(f"{test} FAILED: {figures.get('problems')}")
                ok = False
            else:
                counts["passed"] += 1
            continue
        # a test id, its parametrised cases, or (a file) every test in it
        matched = {k: v for k, v in results.items() if k == test or k.startswith((test + "[", test + "::"))}
        if not matched:
            notes.append(f"{test.split('::')[-1]} not run")
            ok = False
        for node, (status, _, message) in matched.items():
            counts[status] += 1
            if status == "failed":
                ok = False
                notes.append(f"{node.split('::')[-1]}: {message}")
        ids.append(test.replace("tests/", "") + (f" x{len(matched)}" if len(matched) > 1 else ""))
    observed = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing ran"
    if notes:
        observed += "; " + "; ".join(notes)
    return ok, observed, ids


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


SECURITY = """\
## Security: trust boundaries (issue 13)

Each finding of the security review was repeated as a test against real components (the CLI, the
embedded and standalone collectors over gRPC/HTTP on 127.0.0.1, a scripted model server) and now
fails to do harm; each of these tests fails on the code before the fix. Observed on the 2-core build
machine (2026-12-04):

| finding | before | now (observed) | tests |
|---|---|---|---|
| file tools default to the current folder (`/results` in the container) | a task made the model read `.env`; `write_file` rewrote another run's `metadata.json` | `--enable-tools read_file` without `--working-directory`: exit 2, 0 model requests, no run folder; a root overlapping the output folder, containing `$HOME`, or overlapping `~/.ssh`, `~/.aws`, `~/.config`, `~/.cache/huggingface`, ... or the token file: exit 2 | `test_security_runner.py`, `unit/test_tool_root.py` (16) |
| results rows, checkpoint and report not redacted; `DB_PASSWORD=...` missed (`\\b` after `DB_`) | `.env` secrets in results.json, checkpoint.jsonl, report.html | one `Redactor` (`smoltrace.redact`) for spans, rows (before the checkpoint), traces, metadata (`config`, `command`), console lines and every log record; 4 canaries (extra_headers `Authorization`, `vertex_credentials.private_key`, `--api-base` userinfo, a `DB_PASSWORD` read through `read_file`): 0 occurrences in 6 artefacts, stdout and a `--debug` log of >1,000 characters; before: the header canary printed on stdout | `test_security_runner.py::test_canaries_...`, `unit/test_redact.py` (15) |
| collector accepts anyone, any `run.id` | spans and GPU metrics for any run reached its report; `GET /runs`, `DELETE` open | embedded collector keeps only its run (3 foreign requests, 2 spans dropped and counted in the test); advertised: only the run's bearer token (runner span exporter + `StartSampling.otlp_headers`), others `UNAUTHENTICATED`; beyond loopback without `--collector-advertise`: exit 2; standalone JSON API: `GET /runs` = `{}` and `DELETE` = 401 without the token (generated 0600 file or `--token-file`) | `test_security_collector.py` |
| collector spill unbounded, read-back loads a run whole | 200 MB in -> 183 MiB of spill files; 891 MiB RSS to read back 300 MB | 96 MB of spans into `--max-memory-mb 4 --max-spill-mb 16`: 15.0 MB on disk, RSS +13.8 MiB during the flood, +37 MiB after reading the run back (streamed from the spill file), 77 requests dropped and counted | `test_security_collector.py::test_a_flood_...` |
| output files forced to 0644 | every file 0644 whatever the umask | under `umask 077`: every file 0600, the run folder 0700 | `test_security_runner.py::test_output_files_respect_the_umask` |
| report CSP allows inline script | `script-src 'unsafe-inline'` | `script-src 'sha256-...'` of the page's one script (checked in chromium: the report's JS runs) | `unit/test_report_csp.py`, `test_report_browser.py` |
| containers | compose `ollama` without the hardening block; collector spill into the `/tmp` tmpfs; `/cache`, `/results` mode 1777 | `ollama` read-only, `cap_drop: [ALL]`, `no-new-privileges`, tmpfs `/tmp`; spill in `/cache/collector-spill`; `/cache`, `/results` 2770 owned by 10001 | `test_security_deploy.py` |

The exporter's control API (per-run secret, limits, `--otlp-allow`) and run folders as data
(`--resume`, `publish`) are covered by their own tests (`test_exporter_*`, resume/publish tests).
"""


FINDINGS = """\
## Findings

Fixed after this suite found them:

- **16 open `WatchRun` streams starved every other RPC of the exporter.** Each stream holds a server
  thread and there were 16; with 16 watchers a 3 s Heartbeat hit `DEADLINE_EXCEEDED` and leases
  expired. Now at most 16 streams (`RESOURCE_EXHAUSTED` beyond) on a 32-thread server, so unary
  RPCs and health checks always have threads (`tests/integration/test_exporter_watch_limit.py`).
- **Deeply nested JSON in a task file exited 1 ("internal error") instead of 2.** The loader now
  reports it as a dataset error (`nested too deeply`), exit 2
  (`test_reliability_inputs.py::test_huge_and_hostile_task_files[deep-nesting]`).

Open, reported:

1. **The exporter answers undecodable request bodies with `INTERNAL`** (imprecise, not a crash).
   grpcio's generated handlers deserialize before our code runs, so random bytes as a request get
   `INTERNAL "Exception deserializing request!"` (and an ERROR log line with a traceback per
   request) rather than `INVALID_ARGUMENT` as the collector's raw-bytes handlers answer. The
   service keeps serving. The fuzz test accepts exactly that INTERNAL and no other.
2. **A secret the user writes into the prompt appears in `--debug` logs.** Credentials passed as
   credentials (HF token file, `api_key` model arg, `OPENAI_API_KEY`) never appear in stdout,
   stderr, `--debug` logs, files or OTLP payloads. But when the same values are also written into
   the prompt (`--prompt-yml` instructions), spans and outputs redact them while litellm's own
   `--debug` request log prints the messages as sent (4 occurrences each in stdout and stderr).
   Without `--debug` nothing leaks. Worth a line in the README's `--debug` help, or a logging
   filter with the run's redactor.
3. **Resume after SIGKILL with `--enable-otel` loses the killed segment's traces** (expected, and
   reported). The embedded collector dies with the process; after `--resume`, `traces.json` holds
   one trace per execution of the resumed segment only, and `metadata.telemetry.rows.rows_without_trace`
   lists exactly the executions finished before the kill, with a warning
   (`N execution(s) have no trace (spans lost)`). Asserted by
   `test_sigkill_at_a_point_then_resume[k2-otel]` and `[k7-otel]`.
4. **Lease length.** The runner asks for a 60 s lease (heartbeat every 20 s); after a runner dies
   its run is sampled for up to 60 s more. The lease test uses the runner's own `GpuSession` with a
   3 s lease to keep the test short; the exporter side is the same code path.
"""


def render(
    rows: list[tuple[Scenario, bool, str, list[str]]],
    load: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    pytest_rc: int,
    wall: float,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    failed = sum(1 for _, ok, _, _ in rows if not ok)
    out = [
        "# smoltrace — reliability and security evidence",
        "",
        "Generated by `make reliability` (`python -m tests.reliability.run`); do not edit by hand.",
        f"Last run: {when}, {os.cpu_count()} CPUs, {wall:.0f} s in all; pytest exit {pytest_rc}; "
        f"**{len(rows) - failed}/{len(rows)} scenarios passed**.",
        "",
        "Every row is an automated test (or a load scenario below) run by that command, with the",
        "extra kill points of the SIGKILL/resume test and 10x the fuzzing examples",
        "(`SMOLTRACE_RELIABILITY_FULL=1`). `make test` runs the same test files with the default",
        '(smaller) settings. "Nothing lost" is checked in each test: every planned execution is in',
        "`results.json` exactly once, local files are whole, and `metadata.json` says what is missing.",
        "",
        "| area | scenario | how it is injected | expected behaviour | observed | tests | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, ok, observed, ids in rows:
        out.append(
            "| "
            + " | ".join(
                md_escape(x)
                for x in (
                    s.area,
                    s.scenario,
                    s.injection,
                    s.expected,
                    observed,
                    "<br>".join(f"`{i}`" for i in ids),
                    "PASS" if ok else "**FAIL**",
                )
            )
            + " |"
        )
    out += ["", "## Load", ""]
    ex = load.get("exporter")
    if ex:
        out += [
            f"**Exporter** — a real `smoltrace-gpu-exporter --backend simulated:{ex['gpus']}` process, {ex['concurrent_runs']} concurrent",
            f"runs at {ex['interval_ms']} ms for {ex['seconds']:.0f} s (runs of 5-15 s churning, heartbeats every 2 s, a WatchRun",
            "stream on 8 of them): " + ("**PASS**" if ex["passed"] else "**FAIL**"),
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {md_escape(str(v))} |" for k, v in ex.items() if k not in ("problems",)],
            "",
        ]
    full = load_exporter.RESULTS / "exporter_load_600s.json"
    if full.exists() and (not ex or ex.get("seconds") != 600):
        f = json.loads(full.read_text("utf-8"))
        out += [
            '**Exporter, the full 10 minutes** (`RELIABILITY_ARGS="--load-seconds 600"`, or',
            "`python -m tests.reliability.load_exporter 600`; figures saved in `tests/reliability/results/exporter_load_600s.json`)"
            + (f" — {f['conditions']}" if f.get("conditions") else "")
            + ": "
            + ("**PASS**" if f["passed"] else "**FAIL**"),
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {md_escape(str(v))} |" for k, v in f.items() if k not in ("problems",)],
            "",
        ]
    rn = load.get("runner")
    if rn:
        out += [
            f"**Runner** — `smoltrace-eval` (subprocess) at {rn['workers']} workers over {rn['tasks']} task executions against the fake",
            f"OpenAI server ({rn['latency_ms']:g} ms latency, 2 model calls per task), {rn['error_rate']:.0%} of requests answered 500 or 429",
            f"(seeded RNG, seed {rn['seed']}): " + ("**PASS**" if rn["passed"] else "**FAIL**"),
            "",
            "| figure | value |",
            "|---|---|",
            *[f"| {k} | {md_escape(str(v))} |" for k, v in rn.items()],
            "",
            "`retries_in_rows` must equal `injected_500 + injected_429` and `attempts_in_rows` the requests the server saw:",
            "every injected error was retried exactly once and counted. The wall time includes process start-up (litellm",
            "imports); on this 2-core machine smolagents' per-step work, not the 5 ms model latency, bounds the active phase.",
            "",
        ]
    if args.no_load:
        out += ["(load scenarios skipped: --no-load)", ""]
    out += [SECURITY, FINDINGS]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.run", description=__doc__.splitlines()[0])
    parser.add_argument("--load-seconds", type=float, default=60.0, help="exporter load duration (600 for the full figure)")
    parser.add_argument("--runner-tasks", type=int, default=2000, help="task executions of the runner load scenario")
    parser.add_argument("--no-load", action="store_true", help="run the tests only")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "RELIABILITY.md")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the document from the last run's saved outcomes (e.g. once a 600 s figure exists)",
    )
    args = parser.parse_args(argv)
    last = load_exporter.RESULTS / "last_run.json"
    if args.render_only:
        saved = json.loads(last.read_text("utf-8"))
        results = {k: tuple(v) for k, v in saved["results"].items()}
        args.no_load = saved["no_load"]
        return _finish(args, results, saved["load"], saved["pytest_rc"], saved["wall_s"])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="smoltrace-reliability-") as tmp:
        junit = Path(tmp) / "junit.xml"
        pytest_rc = run_pytest(junit)
        results = outcomes(junit) if junit.exists() else {}
    load: dict[str, dict[str, Any]] = {}
    if not args.no_load:
        print(f"exporter load: {args.load_seconds:g} s ...", flush=True)
        load["exporter"] = load_exporter.run(args.load_seconds)
        load_exporter.save(load["exporter"])
        print(json.dumps(load["exporter"], indent=2), flush=True)
        print(f"runner load: {args.runner_tasks} executions ...", flush=True)
        load["runner"] = load_runner.run(args.runner_tasks)
        print(json.dumps(load["runner"], indent=2), flush=True)
    wall = time.monotonic() - started
    load_exporter.RESULTS.mkdir(exist_ok=True)
    last.write_text(
        json.dumps({"results": results, "load": load, "pytest_rc": pytest_rc, "wall_s": wall, "no_load": args.no_load}, indent=1), "utf-8"
    )
    return _finish(args, results, load, pytest_rc, wall)


def _finish(args: argparse.Namespace, results: dict[str, Any], load: dict[str, dict[str, Any]], pytest_rc: int, wall: float) -> int:
    rows = []
    for s in SCENARIOS:
        if args.no_load and all(t.startswith("load:") for t in s.tests):
            continue
        if args.no_load:
            s = Scenario(s.area, s.scenario, s.injection, s.expected, tuple(t for t in s.tests if not t.startswith("load:")))
        ok, observed, ids = judge(s, results, load)
        rows.append((s, ok, observed, ids))
    args.output.write_text(render(rows, load, args, pytest_rc, wall), "utf-8")
    failed = [s.scenario for s, ok, _, _ in rows if not ok]
    print(f"wrote {args.output}: {len(rows) - len(failed)}/{len(rows)} scenarios passed", flush=True)
    for name in failed:
        print(f"FAILED: {name}", flush=True)
    return 1 if failed or pytest_rc not in (0,) else 0


if __name__ == "__main__":
    sys.exit(main())
