"""Number, time and text formatting for the HTML pages (plain strings; the templates escape them)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

TEXT_CAP = 400
TIMES = "\u00d7"


def cut(text: Any, limit: int = TEXT_CAP) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def num(value: Any) -> float | None:
    """A finite float, or None (bools, strings that are not numbers, NaN and inf are None)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a mapping, else an empty one (for reading untrusted JSON)."""
    return value if isinstance(value, Mapping) else {}


def get_path(mapping: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def fmt_sig(value: float, digits: int = 3) -> str:
    """`digits` significant digits, thousands separators, never scientific notation."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = min(max(digits - 1 - magnitude, 0), 8)
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def fmt_int(value: Any) -> str:
    n = num(value)
    return "—" if n is None else f"{round(n):,}"


def fmt_pct(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}%" if abs(value - round(value)) < 1e-9 else f"{value:.1f}%"


def fmt_ms(value: Any) -> str:
    ms = num(value)
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{fmt_sig(ms, 3)} ms"
    s = ms / 1000
    if s < 60:
        return f"{fmt_sig(s, 3)} s"
    if s < 3600 - 0.5:
        whole = round(s)
        return f"{whole // 60} min {whole % 60:02d} s"
    minutes = round(s / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


NOT_MEASURED = "n/a"  # energy and CO2 nothing measured (API models, no GPU): unknown, not 0


def fmt_energy(value: Any) -> str:
    j = num(value)
    if j is None:
        return NOT_MEASURED
    if abs(j) < 1000:
        return f"{fmt_sig(j, 4)} J"
    if abs(j) < 1e6:
        return f"{fmt_sig(j / 1e3, 4)} kJ"
    return f"{fmt_sig(j / 1e6, 4)} MJ"


def fmt_wh(value: Any) -> str:
    j = num(value)
    if j is None:
        return "—"
    wh = j / 3600
    return f"{fmt_sig(wh / 1000, 3)} kWh" if wh >= 1000 else f"{fmt_sig(wh, 3)} Wh"


def fmt_co2(value: Any) -> str:
    g = num(value)
    if g is None:
        return NOT_MEASURED
    return f"{fmt_sig(g / 1000, 3)} kg" if abs(g) >= 1000 else f"{fmt_sig(g, 3)} g"


def fmt_usd(value: Any) -> str:
    usd = num(value)
    if usd is None:
        return "—"
    if usd == 0:
        return "$0.00"
    if abs(usd) >= 0.01:
        return f"${usd:,.2f}"
    return f"${fmt_sig(usd, 2)}"


def fmt_mib(value: Any) -> str:
    mib = num(value)
    if mib is None:
        return "—"
    return f"{fmt_sig(mib / 1024, 3)} GiB" if mib >= 1024 else f"{fmt_sig(mib, 3)} MiB"


def parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def fmt_when(text: Any) -> str:
    dt = parse_iso(text)
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else (str(text) if text else "—")
