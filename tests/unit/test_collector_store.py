"""The collector's per-run store: bounded memory, spilling to disk, nothing lost or reordered."""

from __future__ import annotations

import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from smoltrace.collector.store import KINDS, RunStore


def payload(run: str, kind: str, i: int, size: int) -> bytes:
    head = f"{run}/{kind}/{i}/".encode()
    return head + b"x" * max(0, size - len(head))


def test_spilling_past_the_limit_keeps_every_payload_in_order(tmp_path: Path) -> None:
    store = RunStore(max_memory_bytes=2_000, spill_dir=tmp_path)
    added: dict[tuple[str, str], list[bytes]] = {}
    for i in range(60):
        run = ("run-a", "run-b", "run-c")[i % 3]
        kind = KINDS[i % 2]
        p = payload(run, kind, i, 100 + 7 * i)
        store.add(kind, run, p, spans=1 if kind == "traces" else 0, data_points=2 if kind == "metrics" else 0)
        added.setdefault((run, kind), []).append(p)
        assert store.stats.memory_bytes <= store.max_memory_bytes
    assert store.stats.spills > 0 and store.stats.spilled_bytes > 0
    assert list(tmp_path.glob("*.otlp")), "spill files go to spill_dir"
    for (run, kind), expected in added.items():
        assert store.payloads(run, kind) == expected
    runs = store.runs()
    assert sum(r["requests"] for r in runs.values()) == 60
    assert sum(r["spans"] for r in runs.values()) == 30 and sum(r["data_points"] for r in runs.values()) == 60
    assert sum(r["spilled_bytes"] + r["memory_bytes"] for r in runs.values()) == sum(len(p) for ps in added.values() for p in ps)


def test_a_single_payload_larger_than_the_limit_is_spilled_and_kept(tmp_path: Path) -> None:
    store = RunStore(max_memory_bytes=10, spill_dir=tmp_path)
    big = b"\x00\x01" * 5_000
    store.add("traces", "r", big)
    store.add("traces", "r", b"small")
    assert store.payloads("r", "traces") == [big, b"small"]
    assert store.runs()["r"]["spilled_bytes"] >= len(big)


def test_the_run_holding_most_memory_is_spilled_first(tmp_path: Path) -> None:
    store = RunStore(max_memory_bytes=1_000, spill_dir=tmp_path)
    store.add("traces", "small", b"s" * 100)
    store.add("traces", "big", b"b" * 800)
    store.add("traces", "big", b"b" * 200)  # 1100 > 1000: "big" goes to disk
    runs = store.runs()
    assert runs["big"]["memory_bytes"] == 0 and runs["big"]["spilled_bytes"] == 1_000
    assert runs["small"]["memory_bytes"] == 100 and runs["small"]["spilled_bytes"] == 0


def test_drop_forgets_the_run_and_deletes_its_spill_files(tmp_path: Path) -> None:
    store = RunStore(max_memory_bytes=100, spill_dir=tmp_path)
    for i in range(5):
        store.add("metrics", "gone", payload("gone", "metrics", i, 80))
    store.add("metrics", "kept", b"k")
    assert list(tmp_path.glob("*.otlp"))
    store.drop("gone")
    assert "gone" not in store.runs() and store.payloads("gone", "metrics") == []
    assert not [p for p in tmp_path.glob("*.otlp") if b"gone/" in p.read_bytes()]
    assert store.payloads("kept", "metrics") == [b"k"]
    store.drop("never-existed")  # no error


def test_an_owned_spill_directory_is_removed_on_close() -> None:
    store = RunStore(max_memory_bytes=10)
    store.add("traces", "r", b"y" * 100)
    spill_dir = store._spill_dir
    assert spill_dir is not None and spill_dir.is_dir()
    store.close()
    assert not spill_dir.exists()


def test_concurrent_adds_lose_nothing(tmp_path: Path) -> None:
    store = RunStore(max_memory_bytes=4_000, spill_dir=tmp_path)

    def writer(run: str) -> None:
        for i in range(200):
            store.add("traces", run, payload(run, "traces", i, 50 + i % 30))

    threads = [threading.Thread(target=writer, args=(f"run-{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(4):
        run = f"run-{n}"
        assert store.payloads(run, "traces") == [payload(run, "traces", i, 50 + i % 30) for i in range(200)]


operations = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(KINDS), st.integers(0, 600)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(operations, st.integers(1, 3_000))
def test_property_payloads_come_back_in_arrival_order(tmp_path_factory, ops, limit: int) -> None:
    store = RunStore(max_memory_bytes=limit, spill_dir=tmp_path_factory.mktemp("spill"))
    expected: dict[tuple[str, str], list[bytes]] = {}
    for i, (run, kind, size) in enumerate(ops):
        p = payload(run, kind, i, size)
        store.add(kind, run, p)
        expected.setdefault((run, kind), []).append(p)
        assert store.stats.memory_bytes <= limit or store.stats.memory_bytes == 0
    for (run, kind), ps in expected.items():
        assert store.payloads(run, kind) == ps
