"""Atomic file writes: a temp file in the same folder, fsync, rename. A crash never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask: from /proc (Linux) without touching it, else set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str, mode: int = 0o666) -> None:
    """`mode` is filtered by the umask like any created file (0644 under 022, 0600 under 077)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode & ~current_umask())  # mkstemp makes 0600 whatever the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def json_text(data: Any) -> str:
    """JSON as the run's files hold it: a list one item per line (traces, rows: megabytes, written
    by the C encoder, which `indent` would replace with the pure-Python one, ~10x slower), anything
    else indented."""
    if isinstance(data, list | tuple):
        return json_list_text(json.dumps(item, ensure_ascii=False, default=str) for item in data)
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


def json_list_text(items: Iterable[str]) -> str:
    """The list layout of `json_text` around items already encoded (records encode themselves)."""
    body = ",\n".join(items)
    return "[\n" + body + "\n]\n" if body else "[]\n"


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json_text(data))
