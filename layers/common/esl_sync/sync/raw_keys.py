"""Keys of raw items: how a poll knows, before the transform, that an item is stored as is.

An item's product row (every stored field, and the label it shows) is a function of the
raw item Clover sent, of the settings that map it (the product code fields, the Hipoink
free fields, the text of a variable price) and of the code that maps it. So the row's
``content_hash`` is the key of exactly those: a digest of the raw item's JSON (its one
serialization, :func:`esl_sync.storable.json_text`) keyed by the mapping's seed (the
settings and the source of the modules that map, read once per process), followed by the
label's hash. A poll that re-reads an item (the overlap window, a sweep) whose stored hash
starts with the same key skips it before the transform: nothing about it can differ.
Exact, not probable: a new deploy of the mapping, a changed setting, an item Clover sends
otherwise (one byte, or its fields in another order) gives another key and a transform;
a row the sweep or a webhook removed (``removed:…``) never matches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from functools import cache
from pathlib import Path

from esl_sync.settings import Settings

MAPPING_MODULES = (
    "esl_sync.clover.item_types",
    "esl_sync.clover.items",
    "esl_sync.clover.transform",
    "esl_sync.storable",
    "esl_sync.products",
    "esl_sync.hipoink.records",
    "esl_sync.sync.labels",
    "esl_sync.sync.item_rows",
    __name__,
)
"""The modules whose code decides what a raw item becomes (read from their files: a poll
of clean items loads no model)."""


def mapping_seed(settings: Settings) -> bytes:
    """The key of the digests: the mapping code and the settings it reads."""
    return _seed(
        settings.clover_product_code_fields,
        settings.hipoink_extra_fields,
        settings.hipoink_variable_price_text,
    )


@cache
def _seed(*settings: object) -> bytes:
    digest = hashlib.blake2b(repr(settings).encode(), digest_size=32)
    for name in MAPPING_MODULES:
        digest.update(Path(source).read_bytes() if (source := _source(name)) else name.encode())
    return digest.digest()


def _source(name: str) -> str | None:
    """The file of a mapping module, found without importing it: the models
    (``esl_sync.products``, ``esl_sync.clover.items``) are loaded only for an item that is
    not clean, and importing them here would load pydantic on every poll (issue 15)."""
    module = sys.modules.get(name)
    if module is not None:
        return module.__file__
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else None


def raw_key(seed: bytes, text: str) -> str:
    """The key of one raw item's JSON text under a mapping's seed (any text: a lone
    surrogate Clover sent is keyed as it came)."""
    digest = _keyed(seed).copy()  # the key's block already hashed: once per seed
    digest.update(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


@cache
def _keyed(seed: bytes) -> hashlib.blake2b:
    """BLAKE2b keyed by ``seed``, nothing hashed yet: a copy of it hashes as
    ``blake2b(data, digest_size=16, key=seed)`` does, without padding and compressing the
    key again for every item (≈ 0.4 µs of ≈ 1)."""
    return hashlib.blake2b(digest_size=16, key=seed)


def unchanged(stored_hash: str | None, key: str) -> bool:
    """Whether a stored row's ``content_hash`` was made from this very item and mapping."""
    return stored_hash is not None and stored_hash.startswith(key + ":")
