"""Per-run storage of what the collector received, bounded in memory, spilling to disk.

Payloads are kept as the serialized OTLP requests they arrived as (one run's resources each):
no re-encoding on the hot path, and spilling is a plain append. Past `max_memory_bytes` the run
holding the most memory is moved to a spill file (length-prefixed records) in `spill_dir`; the
spill files together stay under `max_spill_bytes`: once memory and spill are both full, new
payloads are dropped and counted (`dropped_requests`, `dropped_bytes`). Reading a run back
(`iter_payloads`) streams one record at a time: a flooded run is never loaded whole.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("traces", "metrics")
DEFAULT_MAX_SPILL_BYTES = 1024 * 1024 * 1024
_LEN = struct.Struct(">I")


@dataclass(slots=True)
class RunBucket:
    memory: dict[str, list[bytes]] = field(default_factory=lambda: {k: [] for k in KINDS})
    memory_bytes: int = 0
    spill_files: dict[str, Path] = field(default_factory=dict)
    spilled_bytes: int = 0
    spans: int = 0
    data_points: int = 0
    requests: int = 0
    dropped_requests: int = 0


@dataclass(slots=True)
class StoreStats:
    requests: int = 0
    spans: int = 0
    data_points: int = 0
    memory_bytes: int = 0
    spilled_bytes: int = 0
    spills: int = 0
    dropped_requests: int = 0
    dropped_bytes: int = 0


class RunStore:
    def __init__(
        self, max_memory_bytes: int = 256 * 1024 * 1024, spill_dir: Path | None = None, max_spill_bytes: int = DEFAULT_MAX_SPILL_BYTES
    ) -> None:
        self.max_memory_bytes = max_memory_bytes
        self.max_spill_bytes = max_spill_bytes
        self._spill_dir = spill_dir
        self._owned_spill_dir: tempfile.TemporaryDirectory[str] | None = None
        self._runs: dict[str, RunBucket] = defaultdict(RunBucket)
        self._lock = threading.Lock()
        self.stats = StoreStats()

    def _dir(self) -> Path:
        if self._spill_dir is None:
            self._owned_spill_dir = tempfile.TemporaryDirectory(prefix="smoltrace-collector-")
            self._spill_dir = Path(self._owned_spill_dir.name)
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        return self._spill_dir

    def add(self, kind: str, run_id: str, payload: bytes, spans: int = 0, data_points: int = 0) -> bool:
        """Keep the payload; False (and counted) when memory and the spill bound are both full."""
        size = len(payload)
        with self._lock:
            bucket = self._runs[run_id]
            bucket.memory[kind].append(payload)
            bucket.memory_bytes += size
            self.stats.memory_bytes += size
            while self.stats.memory_bytes > self.max_memory_bytes:
                victim = max(self._runs.values(), key=lambda b: b.memory_bytes)
                if victim.memory_bytes == 0 or self.stats.spilled_bytes + victim.memory_bytes > self.max_spill_bytes:
                    break
                self._spill(victim)
            if self.stats.memory_bytes > self.max_memory_bytes and bucket.memory[kind] and bucket.memory[kind][-1] is payload:
                bucket.memory[kind].pop()  # memory and spill full: the newcomer is dropped, what is kept stays
                bucket.memory_bytes -= size
                self.stats.memory_bytes -= size
                bucket.dropped_requests += 1
                self.stats.dropped_requests += 1
                self.stats.dropped_bytes += size
                return False
            bucket.spans += spans
            bucket.data_points += data_points
            bucket.requests += 1
            self.stats.requests += 1
            self.stats.spans += spans
            self.stats.data_points += data_points
            return True

    def _spill(self, bucket: RunBucket) -> None:
        directory = self._dir()
        for kind in KINDS:
            payloads = bucket.memory[kind]
            if not payloads:
                continue
            path = bucket.spill_files.get(kind)
            if path is None:
                fd, name = tempfile.mkstemp(prefix=f"{kind}-", suffix=".otlp", dir=directory)
                os.close(fd)
                path = bucket.spill_files[kind] = Path(name)
            with open(path, "ab") as handle:
                for payload in payloads:
                    handle.write(_LEN.pack(len(payload)))
                    handle.write(payload)
            size = sum(len(p) for p in payloads)
            bucket.spilled_bytes += size
            self.stats.spilled_bytes += size
            payloads.clear()
        self.stats.memory_bytes -= bucket.memory_bytes
        bucket.memory_bytes = 0
        self.stats.spills += 1

    def runs(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                run_id: {
                    "requests": b.requests,
                    "spans": b.spans,
                    "data_points": b.data_points,
                    "memory_bytes": b.memory_bytes,
                    "spilled_bytes": b.spilled_bytes,
                    "dropped_requests": b.dropped_requests,
                }
                for run_id, b in self._runs.items()
            }

    def payloads(self, run_id: str, kind: str) -> list[bytes]:
        """Everything stored for the run and kind, spilled records first (arrival order)."""
        return list(self.iter_payloads(run_id, kind))

    def iter_payloads(self, run_id: str, kind: str) -> Iterator[bytes]:
        """`payloads` one record at a time: the spill file is read as it is consumed."""
        with self._lock:
            bucket = self._runs.get(run_id)
            if bucket is None:
                return
            in_memory = list(bucket.memory[kind])
            path = bucket.spill_files.get(kind)
            spilled = path.stat().st_size if path is not None and path.exists() else 0
        if path is not None and spilled:
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
            except OSError:
                handle = None
            if handle is not None:
                with handle:
                    offset = 0
                    while offset + _LEN.size <= spilled:
                        header = handle.read(_LEN.size)
                        if len(header) < _LEN.size:
                            break
                        (size,) = _LEN.unpack(header)
                        offset += _LEN.size
                        if offset + size > spilled:
                            break  # a torn last record
                        record = handle.read(size)
                        if len(record) < size:
                            break
                        offset += size
                        yield record
        yield from in_memory

    def drop(self, run_id: str) -> None:
        with self._lock:
            bucket = self._runs.pop(run_id, None)
            if bucket is None:
                return
            self.stats.memory_bytes -= bucket.memory_bytes
            self.stats.spilled_bytes -= bucket.spilled_bytes  # its files go: the spill bound frees up
        for path in bucket.spill_files.values():
            try:
                path.unlink()
            except OSError:
                pass

    def close(self) -> None:
        if self._owned_spill_dir is not None:
            self._owned_spill_dir.cleanup()
            self._owned_spill_dir = None
