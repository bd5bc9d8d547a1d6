"""Where `compare` and `leaderboard` read runs from: a run folder, a folder of run folders, or a
published dataset on the Hub (`hub:owner/smoltrace-results-…` for a run's rows,
`hub:owner/smoltrace-leaderboard` for leaderboard rows). Run folders are read as typed records by
`RunFolder.contents()` (what each file gave, as dicts: Hub rows are dicts too); Hub datasets are downloaded with huggingface_hub and
their Parquet files read with pyarrow. Sources are data: nothing in them is used as configuration."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import Record
from .run_folder import CHECKPOINT, METADATA, RESULTS, RunFolder

HUB_PREFIX = "hub:"


class SourceError(Exception):
    """A source that cannot be read; the message is one line for the user."""


@dataclass
class RunSource:
    """One run: its rows (one per task execution) and what is known about it."""

    label: str  # how the user named it (folder path or hub:repo)
    rows: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    leaderboard: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def first(self, key: str) -> Any:
        """A run-level value from metadata, the leaderboard row, else the first row that has it."""
        for source in (self.metadata, self.leaderboard):
            if source.get(key) not in (None, ""):
                return source[key]
        return next((r[key] for r in self.rows if r.get(key) not in (None, "")), None)

    @property
    def model(self) -> str:
        return str(self.first("model") or "unknown model")


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in (METADATA, RESULTS, CHECKPOINT))


def read_run_folder(path: Path, label: str | None = None) -> RunSource:
    if not path.is_dir():
        raise SourceError(f"{label or path}: not a folder (give a run folder or hub:owner/dataset)")
    if not is_run_folder(path):
        raise SourceError(f"{label or path}: not a smoltrace run folder (no {METADATA}, {RESULTS} or {CHECKPOINT})")
    data = RunFolder(path).contents()
    if data.problems and not data.rows:
        raise SourceError(f"{label or path}: {data.problems[0]}")
    return RunSource(label or str(path), [_given(r) for r in data.rows], _given(data.metadata), _given(data.leaderboard), path)


def _given(record: Record | None) -> dict[str, Any]:
    """What the file gave (a field it lacks stays absent, not its default)."""
    return record.model_dump(mode="json", exclude_unset=True) if record is not None else {}


def read_hub_rows(repo_id: str) -> list[dict[str, Any]]:
    """The rows of every Parquet file under data/ of a Hub dataset (sorted by file name)."""
    import pyarrow.parquet as pq
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise SourceError(f"hub:{repo_id}: expected hub:owner/dataset")
    try:
        local = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["data/*.parquet"]))
    except RepositoryNotFoundError:
        raise SourceError(f"hub:{repo_id}: dataset not found (or private: set HF_TOKEN)") from None
    except HfHubHTTPError as err:
        raise SourceError(f"hub:{repo_id}: download failed: {str(err).splitlines()[0]}") from None
    except (OSError, ValueError) as err:
        raise SourceError(f"hub:{repo_id}: download failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None
    files = sorted(local.glob("data/*.parquet"))
    if not files:
        raise SourceError(f"hub:{repo_id}: no Parquet files under data/")
    rows: list[dict[str, Any]] = []
    for f in files:
        try:
            rows.extend(dict(r) for r in pq.read_table(f).to_pylist() if isinstance(r, Mapping))
        except Exception as err:  # noqa: BLE001 - pyarrow raises many kinds for a bad file: one line
            raise SourceError(f"hub:{repo_id}: {f.name} is not a readable Parquet file ({type(err).__name__})") from None
    return rows


def read_run(spec: str) -> RunSource:
    """A run folder or `hub:owner/smoltrace-results-…`."""
    if spec.startswith(HUB_PREFIX):
        repo_id = spec[len(HUB_PREFIX) :]
        rows = read_hub_rows(repo_id)
        return RunSource(spec, rows)
    return read_run_folder(Path(spec), spec)
