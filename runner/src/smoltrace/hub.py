"""Publishing a run folder to the Hugging Face Hub: 4 datasets, Parquet + a dataset card each.

- `{user}/smoltrace-results-{ts}`, `-traces-{ts}`, `-metrics-{ts}` (ts = the run's UTC start,
  `YYYYmmdd_HHMMSS`) and `{user}/smoltrace-leaderboard`; private by default (`--public` to
  change), the leaderboard too when it is created.
- A run's datasets are its own: each holds `smoltrace_run.json` (the run id). When the names are
  taken by another run (two runs started in the same second), the run uses
  `...-{ts}-{8 hex of its run id}`; creating a dataset that exists for another run is a
  conflict, never an overwrite. The names chosen are kept in `publish.json` and reused.
- Only complete runs are published: a shard never is (`merge` publishes the merged run), and a
  run failing its integrity checks is refused (`PublishRefused`, exit 2) unless `--force`.
- The Arrow schemas come from the run records (`records.py`).
- One commit per dataset: `data/train-00000-of-00001.parquet`, `README.md` and the marker together.
- The leaderboard is append-only: each run adds `data/<run_id>.parquet` (one row, fixed versioned
  schema), so concurrent runs never overwrite each other; publishing the same run again rewrites
  the same files (no duplicate rows anywhere).
- Calls are retried with exponential backoff and jitter on 429 (honouring Retry-After) and 5xx.
- Everything is read from the local files, which are always written first: a failed publish
  loses nothing, and `smoltrace-eval publish RUN_DIR` does it later.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .cards import render_card
from .records import LeaderboardRow, MetricRow, ResultRow, RunMetadata, TraceDoc
from .records import arrow_schema as arrow_schema
from .run_folder import HUB_NAMES, PUBLISH, RunFolder, RunFolderError
from .trace_schema import span_type, span_value

log = logging.getLogger(__name__)

T = TypeVar("T")
DATA_FILE = "data/train-00000-of-00001.parquet"
LEADERBOARD = "smoltrace-leaderboard"


class PublishError(Exception):
    """Publishing failed; the local run folder is intact."""


# -- schemas ----------------------------------------------------------------------------------
RESULTS_SCHEMA = arrow_schema(ResultRow)
TRACES_SCHEMA = arrow_schema(TraceDoc, extra=[pa.field("spans", pa.list_(span_type([])))])  # attribute structs: see traces_schema
METRICS_SCHEMA = arrow_schema(MetricRow)
LEADERBOARD_SCHEMA = arrow_schema(LeaderboardRow)


def _coerce(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    if pa.types.is_boolean(kind):
        return bool(value)
    if pa.types.is_list(kind):
        return [_coerce(v, kind.value_type) for v in value]
    return value


def to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows → a table with exactly this schema (missing columns null, extra columns dropped)."""
    columns = {f.name: [_coerce(r.get(f.name), f.type) for r in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def traces_schema(traces: Sequence[Mapping[str, Any]]) -> pa.Schema:
    """TRACES_SCHEMA with the span struct of these traces (attribute keys unified over the run)."""
    spans = span_type([s for doc in traces for s in doc.get("spans") or []])
    return TRACES_SCHEMA.set(TRACES_SCHEMA.get_field_index("spans"), pa.field("spans", pa.list_(spans)))


def traces_table(traces: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The traces dataset: one row per trace document, spans as TraceMind reads them."""
    schema = traces_schema(traces)
    spans = schema.field("spans").type.value_type
    rows = []
    for doc in traces:
        row = {k: doc.get(k) for k in TRACES_SCHEMA.names if k != "spans"}
        row["spans"] = [span_value(s, spans) for s in doc.get("spans") or []]
        rows.append(row)
    return to_table(rows, schema)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


# -- names ------------------------------------------------------------------------------------
def run_timestamp(metadata: Mapping[str, Any]) -> str:
    started = str(metadata.get("started_at") or "")
    try:
        moment = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def run_suffix(run_id: str) -> str:
    """A short, stable suffix from the run id (8 hex of its SHA-256)."""
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:8]


def dataset_names(user: str, timestamp: str, suffix: str = "") -> dict[str, str]:
    """SMOLTRACE's names: `{user}/smoltrace-{results,traces,metrics}-<UTC start>[-<suffix>]`."""
    tail = f"{timestamp}-{suffix}" if suffix else timestamp
    return {
        "results": f"{user}/smoltrace-results-{tail}",
        "traces": f"{user}/smoltrace-traces-{tail}",
        "metrics": f"{user}/smoltrace-metrics-{tail}",
        "leaderboard": f"{user}/{LEADERBOARD}",
    }


# -- retries ----------------------------------------------------------------------------------
def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(err: BaseException) -> float | None:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, min(float(value), 60.0)) if value else None
    except ValueError:
        return None


def describe_failure(err: BaseException) -> tuple[str, bool]:
    """One line for a failed Hub call (any exception, its causes included) and whether the token
    itself was refused (401): unreachable, 403, 404, 409, 5xx each say what happened."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    status = next((s for s in (_status(e) for e in chain) if isinstance(s, int)), None)
    first = (str(chain[-1]).strip().splitlines() or [type(chain[-1]).__name__])[0][:200]
    if status == 401:
        return "the Hub refused the token (HTTP 401): set HF_TOKEN or --hf-token-file to a valid write token", True
    if status == 403:
        return f"the Hub refused the write (HTTP 403: {first}); check the token's write access to the namespace", False
    if status == 404:
        return f"the Hub answered 404 Not Found ({first})", False
    if status == 409:
        return f"the Hub reported a conflict (HTTP 409: {first})", False
    if status is not None and status >= 500:
        return f"the Hub failed (HTTP {status}) after the retries", False
    if status is not None:
        return f"the Hub answered HTTP {status} ({first})", False
    names = {type(e).__name__ for e in chain}
    if names & {"ConnectError", "ConnectTimeout", "ConnectionError", "ConnectionRefusedError", "gaierror", "OfflineModeIsEnabled"}:
        return f"the Hub is unreachable ({type(chain[-1]).__name__}: {first})", False
    if names & {"ReadTimeout", "Timeout", "TimeoutException", "TimeoutError"}:
        return "the Hub did not answer in time", False
    return f"{type(err).__name__}: {first}", False


@dataclass(slots=True)
class HubRetry:
    max_retries: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as err:
                status = _status(err)
                offline = type(err).__name__ == "OfflineModeIsEnabled"  # HF_HUB_OFFLINE: retrying cannot help
                retryable = not offline and (
                    status == 429 or (status is not None and status >= 500) or isinstance(err, ConnectionError | TimeoutError)
                )
                if not retryable or attempt > self.max_retries:
                    raise
                delay = _retry_after(err)
                if delay is None:
                    delay = self.rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))
                log.warning(
                    "Hub %s failed (%s), retry %d/%d in %.1f s", what, status or type(err).__name__, attempt, self.max_retries, delay
                )
                self.sleep(delay)


# -- publishing -------------------------------------------------------------------------------
MARKER = "smoltrace_run.json"  # in each run dataset: which run owns it


class PublishRefused(PublishError):
    """The run must not be published as it is (a shard, or integrity errors); exit 2."""

    def __init__(self, message: str, findings: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.findings = list(findings)


@dataclass(slots=True)
class PublishReport:
    user: str
    datasets: dict[str, str]
    commits: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    private: bool = True
    published_at: str = ""
    run_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "user": self.user,
            "datasets": self.datasets,
            "commits": self.commits,
            "rows": self.rows,
            "private": self.private,
            "published_at": self.published_at,
        }


class HubPublisher:
    def __init__(self, token: str, private: bool = True, endpoint: str | None = None, retry: HubRetry | None = None) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token, library_name="smoltrace", library_version=__version__)
        self.private = private
        self.retry = retry or HubRetry()

    def whoami(self) -> str:
        info = self.retry.call("whoami", self.api.whoami)
        name = info.get("name") if isinstance(info, dict) else None
        if not name:
            raise PublishError("the Hub token does not identify a user")
        return str(name)

    def _commit(self, repo_id: str, files: Mapping[str, bytes], message: str, *, create: bool = False) -> str:
        from huggingface_hub import CommitOperationAdd

        if create:
            self.retry.call(
                f"create_repo {repo_id}", lambda: self.api.create_repo(repo_id, repo_type="dataset", private=self.private, exist_ok=True)
            )
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        info = self.retry.call(
            f"commit to {repo_id}",
            lambda: self.api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="dataset"),
        )
        return str(getattr(info, "oid", "") or "")

    # -- names: a run's datasets are its own ---------------------------------------------------
    def _owner(self, repo_id: str) -> str | None:
        """The run id recorded in an existing dataset (None: no marker, e.g. being created)."""
        import tempfile

        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

        with tempfile.TemporaryDirectory(prefix="smoltrace-hub-") as tmp:
            try:
                path = self.retry.call(
                    f"read {repo_id}/{MARKER}",
                    lambda: self.api.hf_hub_download(repo_id, MARKER, repo_type="dataset", cache_dir=tmp),
                )
                owner = json.loads(Path(path).read_text("utf-8")).get("run_id")
            except (EntryNotFoundError, RepositoryNotFoundError, ValueError, OSError):
                return None
        return str(owner) if owner else None

    def _claim(self, repo_id: str, run_id: str) -> bool:
        """Create the dataset for this run; True if it is (now, or already) this run's."""
        from huggingface_hub.errors import HfHubHTTPError

        try:
            self.retry.call(
                f"create_repo {repo_id}", lambda: self.api.create_repo(repo_id, repo_type="dataset", private=self.private, exist_ok=False)
            )
            return True
        except HfHubHTTPError as err:
            if _status(err) != 409:
                raise
        return self._owner(repo_id) == run_id  # an existing dataset is reused only by the run that made it

    def choose_names(self, folder: RunFolder, user: str, metadata: RunMetadata, kinds: Sequence[str]) -> dict[str, str]:
        """`{user}/smoltrace-{kind}-<UTC start>`, or with a short run-id suffix when those names
        belong to another run; names once chosen (publish.json) are reused, so re-publishing the
        same run is idempotent. Creating an existing dataset of another run is never an overwrite."""
        run_id = metadata.run_id
        stored = _stored_names(folder, user, run_id)
        if stored is not None:
            return stored
        timestamp = run_timestamp(metadata.model_dump())
        for names in (dataset_names(user, timestamp), dataset_names(user, timestamp, run_suffix(run_id))):
            if all(self._claim(names[kind], run_id) for kind in kinds):
                _save_names(folder, user, run_id, names)
                return names
        raise PublishError(
            f"the datasets {dataset_names(user, timestamp)['results']} and its run-id variant already belong to other runs; "
            "nothing was overwritten"
        )

    def publish(self, run_dir: Path, user: str | None = None, *, force: bool = False) -> PublishReport:
        """Publish a finished run folder; raises PublishError (the folder's data is untouched either way)
        or PublishRefused (a shard, or a run that fails its integrity checks, unless `force`)."""
        from huggingface_hub.errors import HfHubHTTPError

        from .integrity import check_folder

        try:
            folder = RunFolder.open(run_dir, finished=True)
            metadata = folder.read_metadata()
            results = folder.read_results()
            traces = folder.read_traces()
            metric_rows: list[dict[str, Any]] = [r.to_json() for r in folder.read_metric_rows()]
            board = folder.read_leaderboard()
            integrity = check_folder(folder)
        except RunFolderError as err:
            raise PublishError(str(err)) from err
        if metadata.shard is not None:
            raise PublishRefused(
                f"{run_dir} is shard {metadata.shard.get('index')}/{metadata.shard.get('count')} of run {metadata.run_id}: "
                "a shard is never published; merge the shards (smoltrace-eval merge OUT SHARD...) and publish the merged run"
            )
        if not integrity.ok and not force:
            raise PublishRefused(
                f"{run_dir} fails its integrity checks ({len(integrity.errors)} error(s)); fix the run or publish with --force",
                [f"{f.check}: {f.message}" + (f" ({', '.join(f.items[:5])})" if f.items else "") for f in integrity.errors],
            )
        if not results:
            raise PublishError(f"{run_dir} has no results to publish")
        if board is None:
            raise PublishError(f"{run_dir} has no leaderboard_row.json")
        run_id = metadata.run_id
        try:
            user = user or self.whoami()
            kinds = ["results", "metrics"] + (["traces"] if traces else [])
            names = dict(self.choose_names(folder, user, metadata, kinds))
            report = PublishReport(user=user, datasets=names, private=self.private, run_id=run_id)
            # datasets cannot load a Parquet file of 0 rows: a run without traces publishes no traces
            # dataset (the leaderboard says so), and one without GPU samples publishes a single row
            # whose GPU columns are null (SMOLTRACE users expect a metrics dataset for every run).
            if not traces:
                names["traces"] = ""
            if not metric_rows:
                metric_rows = [{"run_id": run_id, "service_name": "smoltrace-eval", "timestamp": metadata.started_at}]
            board = board.with_(
                submitted_by=user,
                results_dataset=names["results"],
                traces_dataset=names["traces"] or None,
                metrics_dataset=names["metrics"],
            )
            meta_dict = metadata.to_json()
            tables = {"results": to_table([r.to_json() for r in results], RESULTS_SCHEMA), "metrics": to_table(metric_rows, METRICS_SCHEMA)}
            if traces:
                tables["traces"] = traces_table([t.to_json() for t in traces])
            marker = json.dumps({"run_id": run_id, "schema_version": metadata.schema_version}).encode("utf-8")
            for kind, table in tables.items():
                card = render_card(kind, table, meta_dict, names)
                files = {DATA_FILE: parquet_bytes(table), "README.md": card.encode("utf-8"), MARKER: marker}
                report.commits[kind] = self._commit(names[kind], files, f"smoltrace {kind} for run {run_id} ({metadata.model})")
                report.rows[kind] = table.num_rows
            board_table = to_table([board.to_json()], LEADERBOARD_SCHEMA)
            files = {f"data/{_safe(run_id)}.parquet": parquet_bytes(board_table)}
            if not self._has_card(names["leaderboard"]):
                files["README.md"] = render_card("leaderboard", board_table, meta_dict, names).encode("utf-8")
            report.commits["leaderboard"] = self._commit(
                names["leaderboard"], files, f"smoltrace leaderboard row for run {run_id} ({metadata.model})", create=True
            )
            report.rows["leaderboard"] = 1
        except HfHubHTTPError as err:
            raise PublishError(f"the Hub answered {_status(err) or ''} {str(err).splitlines()[0]}".strip()) from err
        except (OSError, ValueError) as err:
            raise PublishError(f"publishing failed: {type(err).__name__}: {err}") from err
        report.published_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return report

    def _has_card(self, repo_id: str) -> bool:
        try:
            return bool(self.api.file_exists(repo_id, "README.md", repo_type="dataset"))
        except Exception:  # noqa: BLE001 - a missing repo, or no answer: write the card
            return False


def _stored_names(folder: RunFolder, user: str, run_id: str) -> dict[str, str] | None:
    """The names this run published under (publish.json) or claimed (hub_datasets.json)."""
    for name in (PUBLISH, HUB_NAMES):
        try:
            stored = folder.read_json(name)
        except RunFolderError:
            continue
        if not isinstance(stored, dict) or stored.get("user") != user or stored.get("run_id") != run_id:
            continue
        names = stored.get("datasets")
        if not isinstance(names, dict) or not all(
            isinstance(names.get(k), str) and names.get(k) for k in ("results", "metrics", "leaderboard")
        ):
            continue
        out = {str(k): str(v) for k, v in names.items()}
        if not out.get("traces"):
            out["traces"] = out["results"].replace("smoltrace-results-", "smoltrace-traces-", 1)
        return out
    return None


def _save_names(folder: RunFolder, user: str, run_id: str, names: Mapping[str, str]) -> None:
    """Remember the chosen names before anything is committed (a retry reuses them)."""
    try:
        folder.write_json(HUB_NAMES, {"run_id": run_id, "user": user, "datasets": dict(names)})
    except OSError:
        log.debug("could not record the chosen dataset names in %s", folder.path, exc_info=True)


def _safe(run_id: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id) or "run"
