"""The Arrow shape of trace documents (the Hub traces dataset), the way SMOLTRACE publishes them
and TraceMind UI reads them.

TraceMind loads the traces dataset with `load_dataset(...).to_pandas()` and reads each span as a
dict: `span["attributes"]` must be a dict (it uses token, cost, model and OpenInference-kind keys
only when `isinstance(attributes, dict)`), `span["status"]["code"]` colours errors, `kind`,
`start_time`/`end_time` (ns) and `duration_ms` draw the waterfall, `span_id`/`parent_span_id` the
thought graph. So span attributes (and event, link and resource attributes) are Arrow structs:
Arrow unifies the keys of every span of the run into one struct (a key a span lacks is null), and
`normalise` gives every key one type: numbers stay numbers (ints that meet floats become floats),
booleans stay booleans, lists stay lists, and a key whose values disagree becomes text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

STATUS_TYPE = pa.struct([("code", pa.string()), ("description", pa.string())])
_EMPTY = pa.struct([("_empty", pa.null())])  # Parquet cannot store a struct without fields


def _scalar_type(value: Any) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64() if -(2**63) <= value < 2**63 else pa.string()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def _unify(types: set[pa.DataType]) -> pa.DataType:
    if not types:
        return pa.string()
    if len(types) == 1:
        return next(iter(types))
    if types <= {pa.int64(), pa.float64()}:
        return pa.float64()
    return pa.string()


def value_type(values: Iterable[Any]) -> pa.DataType:
    """One Arrow type for every (non-null) value a key takes across the run."""
    scalars: set[pa.DataType] = set()
    items: set[pa.DataType] = set()
    lists = other = False
    for value in values:
        if value is None:
            continue
        if isinstance(value, list | tuple):
            lists = True
            items |= {_scalar_type(v) if not isinstance(v, list | tuple | dict) else pa.string() for v in value if v is not None}
        elif isinstance(value, dict):
            other = True
        else:
            scalars.add(_scalar_type(value))
    if lists and not scalars and not other:
        return pa.list_(_unify(items))
    if other or lists:
        return pa.string()
    return _unify(scalars)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def coerce(value: Any, kind: pa.DataType) -> Any:
    """A value as `kind` (from `value_type`, so the conversion never loses a number)."""
    if value is None:
        return None
    if pa.types.is_list(kind):
        return [coerce(v, kind.value_type) for v in value]
    if pa.types.is_string(kind):
        return _text(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


def struct_type(maps: Sequence[Mapping[str, Any] | None]) -> pa.DataType:
    """The struct of every key of these attribute maps, each key with one type."""
    values: dict[str, list[Any]] = {}
    for attrs in maps:
        for key, value in (attrs or {}).items():
            values.setdefault(key, []).append(value)
    if not values:
        return _EMPTY
    return pa.struct([(key, value_type(vals)) for key, vals in sorted(values.items())])


def struct_value(attrs: Mapping[str, Any] | None, kind: pa.DataType) -> dict[str, Any]:
    attrs = attrs or {}
    return {f.name: coerce(attrs.get(f.name), f.type) for f in kind}


def span_type(spans: Sequence[Mapping[str, Any]]) -> pa.DataType:
    """The span struct for this run's spans (attribute structs unified over all of them)."""
    events = [e for s in spans for e in s.get("events") or []]
    links = [link for s in spans for link in s.get("links") or []]
    event_type = pa.struct(
        [("name", pa.string()), ("timestamp", pa.int64()), ("attributes", struct_type([e.get("attributes") for e in events]))]
    )
    link_type = pa.struct(
        [("trace_id", pa.string()), ("span_id", pa.string()), ("attributes", struct_type([link.get("attributes") for link in links]))]
    )
    resource_type = pa.struct([("attributes", struct_type([(s.get("resource") or {}).get("attributes") for s in spans]))])
    return pa.struct(
        [
            ("trace_id", pa.string()),
            ("span_id", pa.string()),
            ("parent_span_id", pa.string()),
            ("name", pa.string()),
            ("kind", pa.string()),
            ("start_time", pa.int64()),
            ("end_time", pa.int64()),
            ("start_time_iso", pa.string()),
            ("duration_ms", pa.float64()),
            ("status", STATUS_TYPE),
            ("scope", pa.string()),
            ("attributes", struct_type([s.get("attributes") for s in spans])),
            ("events", pa.list_(event_type)),
            ("links", pa.list_(link_type)),
            ("resource", resource_type),
        ]
    )


def span_value(span: Mapping[str, Any], kind: pa.StructType) -> dict[str, Any]:
    event_type = kind.field("events").type.value_type
    link_type = kind.field("links").type.value_type
    resource_attrs = kind.field("resource").type.field("attributes").type
    status = span.get("status") or {}
    return {
        "trace_id": span.get("trace_id"),
        "span_id": span.get("span_id"),
        "parent_span_id": span.get("parent_span_id"),
        "name": span.get("name"),
        "kind": span.get("kind"),
        "start_time": span.get("start_time"),
        "end_time": span.get("end_time"),
        "start_time_iso": span.get("start_time_iso"),
        "duration_ms": None if span.get("duration_ms") is None else float(span["duration_ms"]),
        "status": {"code": status.get("code") or "UNSET", "description": status.get("description") or None},
        "scope": span.get("scope"),
        "attributes": struct_value(span.get("attributes"), kind.field("attributes").type),
        "events": [
            {
                "name": e.get("name"),
                "timestamp": e.get("timestamp"),
                "attributes": struct_value(e.get("attributes"), event_type.field("attributes").type),
            }
            for e in span.get("events") or []
        ],
        "links": [
            {
                "trace_id": link.get("trace_id"),
                "span_id": link.get("span_id"),
                "attributes": struct_value(link.get("attributes"), link_type.field("attributes").type),
            }
            for link in span.get("links") or []
        ],
        "resource": {"attributes": struct_value((span.get("resource") or {}).get("attributes"), resource_attrs)},
    }
