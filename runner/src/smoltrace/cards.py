"""Dataset cards (README.md) for the published datasets.

Each card says what the dataset holds, lists the schema that is really in the Parquet file (read
from the Arrow table being published, so it cannot drift) with each column's meaning, unit and
null rule from the run records, shows how to load it, and records the run's model, provider,
task dataset, revision and versions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from . import __version__
from .outputs import GPU_COLUMN_RULES
from .records import LeaderboardRow, MetricRow, Record, ResultRow, TraceDoc, field_docs

# the record each dataset's rows come from
RECORDS: dict[str, type[Record]] = {"results": ResultRow, "traces": TraceDoc, "metrics": MetricRow, "leaderboard": LeaderboardRow}

DESCRIPTIONS = {
    "results": "One row per task execution of a smoltrace evaluation run: the task, what the agent did "
    "(tools used, steps, answer), whether it succeeded and why not, tokens, cost, duration, and the GPU energy "
    "and CO2 the task used. `trace_id`/`span_id` link each row to its trace in the traces dataset.",
    "traces": "One row per OpenTelemetry trace of a smoltrace evaluation run (one trace per task execution). "
    "`spans` holds every span as TraceMind UI reads it: `attributes` (and the attributes of events, links and the "
    "resource) are structs with one field per attribute key seen in the run (null where a span lacks it), "
    "`status` is `{code, description}`, `kind` the OpenTelemetry span kind. Ids are W3C hex.",
    "metrics": "GPU metrics of a smoltrace evaluation run, one row per GPU per sample: utilisation, memory, "
    "temperature, power, and the cumulative energy, CO2 and electricity cost since the run started. When the run "
    "measured no GPU (API models, machines without a GPU) it holds a single row whose GPU columns are null.",
    "leaderboard": "One row per smoltrace evaluation run (append-only: each run adds its own Parquet file under "
    "`data/`, so concurrent runs never overwrite each other). Rows carry `schema_version`. GPU columns, over the "
    "run's GPUs: " + "; ".join(f"`{name}` {rule}" for name, rule in GPU_COLUMN_RULES.items()) + ". The per-GPU "
    "values are in the run's metrics dataset.",
}


def _type(kind: pa.DataType, name: str = "") -> str:
    if name == "attributes" and pa.types.is_struct(kind):
        return f"struct of {kind.num_fields} attribute keys"
    if pa.types.is_list(kind):
        value = kind.value_type
        if pa.types.is_struct(value):
            return "list of struct(" + ", ".join(f"{f.name}: {_type(f.type, f.name)}" for f in value) + ")"
        return f"list of {_type(value)}"
    if pa.types.is_struct(kind):
        return "struct(" + ", ".join(f"{f.name}: {_type(f.type, f.name)}" for f in kind) + ")"
    return {"int64": "int64", "double": "float64", "bool": "bool", "string": "string"}.get(str(kind), str(kind))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def schema_table(table: pa.Table, kind: str | None = None) -> str:
    """The columns really in the Parquet file, with what each means, its unit and when it is
    null — from the run record the rows come from (`records.py`)."""
    docs = field_docs(RECORDS[kind]) if kind in RECORDS else {}
    lines = ["| column | type | unit | meaning | null when |", "|---|---|---|---|---|"]
    for field in table.schema:
        meaning, unit, null = docs.get(field.name, ("", "", ""))
        lines.append(f"| `{field.name}` | {_type(field.type)} | {_cell(unit)} | {_cell(meaning)} | {_cell(null)} |")
    return "\n".join(lines)


def render_card(kind: str, table: pa.Table, metadata: Mapping[str, Any], names: Mapping[str, str]) -> str:
    repo = names[kind]
    versions = metadata.get("versions") or {}
    run_id = metadata.get("run_id", "")
    files = "data/*.parquet"
    front = "\n".join(
        [
            "---",
            "license: apache-2.0",
            "tags:",
            "- smoltrace",
            "- smolagents",
            "- evaluation",
            "- agents",
            f"pretty_name: smoltrace {kind}" + ("" if kind == "leaderboard" else f" {run_id}"),
            "configs:",
            "- config_name: default",
            "  data_files:",
            "  - split: train",
            f"    path: {files}",
            "---",
        ]
    )
    run_lines = (
        [
            "## Run",
            "",
            "| | |",
            "|---|---|",
            f"| run id | `{run_id}` |",
            f"| model | `{metadata.get('model', '')}` |",
            f"| provider | `{metadata.get('provider', '')}` |",
            f"| agent type | `{metadata.get('agent_type', '')}` |",
            f"| task dataset | `{metadata.get('dataset_used', '')}` |",
            f"| dataset revision | `{metadata.get('dataset_revision') or '-'}` |",
            f"| tasks SHA-256 | `{metadata.get('dataset_sha256', '')}` |",
            f"| started (UTC) | {metadata.get('started_at', '')} |",
            f"| smoltrace | {versions.get('smoltrace') or __version__} |",
            f"| smolagents | {versions.get('smolagents') or '-'} |",
            f"| transformers | {versions.get('transformers') or '-'} |",
            f"| litellm | {versions.get('litellm') or '-'} |",
            "",
            f"Related datasets: results `{names['results']}`, traces `{names['traces'] or '(none: the run was not traced)'}`, "
            f"metrics `{names['metrics']}`, leaderboard `{names['leaderboard']}`.",
        ]
        if kind != "leaderboard"
        else []
    )
    body = [
        f"# {repo}",
        "",
        DESCRIPTIONS[kind],
        "",
        f"Rows in this file: {table.num_rows}." if kind != "leaderboard" else "",
        "",
        "## Load it",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo}", split="train")',
        "```",
        "",
        "## Schema",
        "",
        schema_table(table, kind),
        "",
        *run_lines,
        "",
        f"Generated by [smoltrace](https://pypi.org/project/smoltrace/) {__version__}.",
        "",
    ]
    return front + "\n\n" + "\n".join(body)
