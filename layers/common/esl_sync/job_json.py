"""A label job's JSON written by orjson where that is byte for byte what ``json`` writes.

A first sync queues every label of the store: ``json.dumps`` (and the lone-surrogate scan
after it) took ≈ 0.7 µs a record of a job, orjson takes ≈ 0.1 and the check below ≈ 0.13
(issue 15). For text, integers within 64 bits, None and plain lists and dicts, orjson's
compact output is ``json.dumps(ensure_ascii=False, separators=(",", ":"))``'s (the same
escapes, ``\\u00XX`` in lower case, text beyond ASCII as it is, dict order); it refuses a
lone surrogate and an integer past 64 bits. A float it may spell otherwise (and writes NaN
as ``null``, which ``json`` refuses), so a job whose records hold anything but text
(a foreign message read back) is left to ``json``. ``tests/unit/test_messages.py`` checks
the two agree. orjson is imported at the first job: the webhook and the dispatcher, which
write no jobs, never load it.
"""

from __future__ import annotations

from itertools import chain
from typing import Any


def text_records_json(values: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
    """orjson's text of ``values`` (a job's fields: text, 64-bit integers, None, and its
    ``records``), when each record is a plain dict of text and orjson writes it; else None
    (``json`` writes it, or refuses it by name)."""
    try:  # joined in C: TypeError for a value that is not text (or a record not a dict)
        "".join(chain.from_iterable(map(dict.values, records)))
    except TypeError:
        return None
    if not set(map(type, records)) <= {dict}:
        return None
    import orjson

    try:
        return orjson.dumps(values).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, an integer past 64 bits
        return None
