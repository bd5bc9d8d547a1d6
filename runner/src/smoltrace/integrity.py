"""Integrity of a run: validated before its final files are written and before it is published.

Checks (each finding names the executions, traces or spans concerned):
- `row_count`: one row per planned execution, no uid twice;
- `trace_per_row`: when the run was traced, every row has exactly one trace — or a reason
  (its segment was killed, so its spans were lost: a warning, recorded, not an error);
- `root_span`: exactly one root span per trace; `orphan_span`: no span whose parent is missing;
- `tokens`: a row's token totals equal its trace's model-span totals;
- `energy_sum`: per-task energy sums to the run's GPU energy.
`publish` refuses a run with an error finding (exit 2) unless `--force`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from .records import Finding, GpuSummary, Integrity, ResultRow, RunMetadata, TraceDoc
from .run_folder import RunFolder, iso, utc_now

CHECKS = ("row_count", "trace_per_row", "root_span", "orphan_span", "tokens", "energy_sum")
PARTIAL_STATUSES = ("partial",)
MAX_ITEMS = 20


def _finding(check: str, severity: str, message: str, items: Sequence[str]) -> Finding:
    return Finding.model_validate({"check": check, "severity": severity, "message": message, "items": list(items)[:MAX_ITEMS]})


def check_run(
    rows: Sequence[ResultRow],
    traces: Sequence[TraceDoc],
    meta: RunMetadata,
    gpu: GpuSummary | None,
    *,
    traced: bool,
    lost_with_killed_segment: Sequence[str] = (),
) -> Integrity:
    findings: list[Finding] = []
    uids = [r.test_case_uid for r in rows]
    twice = sorted(uid for uid, n in Counter(uids).items() if n > 1)
    if twice:
        findings.append(_finding("row_count", "error", f"{len(twice)} execution(s) have more than one row", twice))
    if meta.num_planned is not None and len(set(uids)) != meta.num_planned:
        severity = "warning" if meta.status in PARTIAL_STATUSES else "error"
        findings.append(
            _finding(
                "row_count", severity, f"{len(set(uids))} row(s) for {meta.num_planned} planned execution(s) (status {meta.status})", []
            )
        )

    by_uid: dict[str, list[TraceDoc]] = {}
    for doc in traces:
        for uid in doc.test_case_uids:
            by_uid.setdefault(uid, []).append(doc)
    if traced:
        lost = set(lost_with_killed_segment)
        missing = [u for u in uids if not by_uid.get(u) and u not in lost]
        if missing:
            findings.append(_finding("trace_per_row", "error", f"{len(missing)} execution(s) have no trace", missing))
        excused = [u for u in uids if not by_uid.get(u) and u in lost]
        if excused:
            findings.append(
                _finding("trace_per_row", "warning", f"{len(excused)} execution(s) lost their spans with a killed segment", excused)
            )
    several = [u for u in uids if len(by_uid.get(u, [])) > 1]
    if several:
        findings.append(_finding("trace_per_row", "error", f"{len(several)} execution(s) have more than one trace", several))

    bad_roots, orphans = [], []
    for doc in traces:
        ids = {str(s.get("span_id")) for s in doc.spans}
        roots = [s for s in doc.spans if not s.get("parent_span_id")]
        if len(roots) != 1:
            bad_roots.append(f"{doc.trace_id} ({len(roots)} roots)")
        orphans += [
            f"{doc.trace_id}/{s.get('span_id')}" for s in doc.spans if s.get("parent_span_id") and str(s.get("parent_span_id")) not in ids
        ]
    if bad_roots:
        findings.append(_finding("root_span", "error", f"{len(bad_roots)} trace(s) do not have exactly one root span", bad_roots))
    if orphans:
        findings.append(_finding("orphan_span", "error", f"{len(orphans)} span(s) have a parent missing from their trace", orphans))

    mismatched = []
    for row in rows:
        docs = by_uid.get(row.test_case_uid, [])
        if len(docs) == 1 and docs[0].model_calls:
            doc = docs[0]
            if (row.prompt_tokens, row.completion_tokens, row.total_tokens) != (doc.prompt_tokens, doc.completion_tokens, doc.total_tokens):
                mismatched.append(f"{row.test_case_uid} (row {row.total_tokens}, spans {doc.total_tokens})")
    if mismatched:
        findings.append(_finding("tokens", "error", f"{len(mismatched)} row(s) disagree with their spans on tokens", mismatched))

    with_energy = [r for r in rows if r.energy_j is not None]
    if gpu is not None and gpu.gpu_available and with_energy:
        total = sum(r.energy_j or 0.0 for r in with_energy)
        if not math.isclose(total, gpu.energy_joules, rel_tol=1e-3, abs_tol=1e-3):
            findings.append(
                _finding(
                    "energy_sum", "error", f"per-task energy sums to {total:.3f} J, the run's GPU energy is {gpu.energy_joules:.3f} J", []
                )
            )
    return Integrity(ok=not any(f.severity == "error" for f in findings), checked_at=iso(utc_now()), checks=list(CHECKS), findings=findings)


def check_folder(folder: RunFolder) -> Integrity:
    """Validate a finished run folder from its files (what `publish` would send)."""
    meta = folder.read_metadata()
    rows = folder.read_results()
    lost = list((meta.telemetry.get("rows") or {}).get("lost_with_killed_segment") or [])
    traced = bool(meta.telemetry.get("tracing")) or bool(meta.otel.get("enabled"))
    return check_run(rows, folder.read_traces(), meta, meta.gpu_summary, traced=traced, lost_with_killed_segment=lost)
