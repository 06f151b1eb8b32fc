"""JSON that every reader takes: RFC 8259 has no NaN or Infinity, which Python's json writes bare and JavaScript's
JSON.parse, jq, Go, Rust and pandas refuse. A loss that overflowed in fp16 is a real value to record, so a non-finite
float is written as null instead of failing the write."""

from __future__ import annotations

import json
import math


def finite(value):
    """`value` with every NaN or infinite float, at any depth of dicts, lists and tuples, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def strict_dumps(document, indent: int | None = None, **kwargs) -> str:
    """`json.dumps` of `document` as strict JSON (non-finite floats as null)."""
    return json.dumps(finite(document), indent=indent, allow_nan=False, **kwargs)
