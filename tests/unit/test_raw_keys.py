"""Keys of raw items: an item re-read unchanged, under the same mapping, is known before
the transform; anything that could change its row gives another key."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import esl_sync.clover.transform
import esl_sync.sync.labels  # noqa: F401 - a mapping module, loaded by the poll
from esl_sync.settings import Settings
from esl_sync.sync import raw_keys
from esl_sync.sync.raw_keys import mapping_seed, raw_key, unchanged

ITEM = '{"id":"I1","name":"Cola","price":199}'


def test_the_same_settings_give_the_same_seed_and_each_mapped_setting_another() -> None:
    base = mapping_seed(Settings())
    assert mapping_seed(Settings()) == base
    assert len(base) == 32
    others = [
        Settings(clover_product_code_fields=("code",)),
        Settings(hipoink_extra_fields=(("f1", "price_type"),)),
        Settings(hipoink_variable_price_text="ask"),
    ]
    seeds = {mapping_seed(s) for s in others}
    assert base not in seeds
    assert len(seeds) == 3
    assert mapping_seed(Settings(hipoink_batch_size=10)) == base  # not a mapped setting


def test_the_seed_changes_with_the_source_of_a_mapping_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new deploy of the mapping code re-transforms every item once."""
    source = tmp_path / "mapping.py"
    source.write_text("A = 1\n")
    module = types.ModuleType("esl_sync_test_mapping")
    module.__file__ = str(source)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(raw_keys, "MAPPING_MODULES", (module.__name__,))
    raw_keys._seed.cache_clear()
    try:
        before = mapping_seed(Settings())
        source.write_text("A = 2\n")
        assert mapping_seed(Settings()) == before  # read once per process
        raw_keys._seed.cache_clear()
        assert mapping_seed(Settings()) != before
        module.__file__ = None
        raw_keys._seed.cache_clear()
        assert mapping_seed(Settings()) != before  # a module without a file: its name
    finally:
        raw_keys._seed.cache_clear()


def test_a_mapping_module_not_loaded_is_read_from_its_file_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The models are loaded only for an item that is not clean: the seed must not import
    them (issue 15), yet changes with their source like any mapping module's."""
    (tmp_path / "esl_sync_test_unloaded.py").write_text("A = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        raw_keys, "MAPPING_MODULES", ("esl_sync_test_unloaded", "esl_sync_test_nowhere")
    )
    raw_keys._seed.cache_clear()
    try:
        before = mapping_seed(Settings())
        assert "esl_sync_test_unloaded" not in sys.modules
        (tmp_path / "esl_sync_test_unloaded.py").write_text("A = 2\n")
        raw_keys._seed.cache_clear()
        assert mapping_seed(Settings()) != before
        monkeypatch.setattr(raw_keys, "MAPPING_MODULES", ("esl_sync_test_nowhere",))
        raw_keys._seed.cache_clear()
        nowhere = mapping_seed(Settings())  # a module without a file: its name
        monkeypatch.setattr(raw_keys, "MAPPING_MODULES", ("esl_sync_test_elsewhere",))
        raw_keys._seed.cache_clear()
        assert mapping_seed(Settings()) != nowhere
    finally:
        raw_keys._seed.cache_clear()


def test_the_mapping_modules_are_those_that_shape_a_row_and_its_label() -> None:
    assert set(raw_keys.MAPPING_MODULES) >= {
        "esl_sync.clover.item_types",
        "esl_sync.clover.items",
        "esl_sync.clover.transform",
        "esl_sync.products",
        "esl_sync.hipoink.records",
        "esl_sync.sync.labels",
        "esl_sync.sync.raw_keys",
    }


def test_a_key_is_fixed_for_a_seed_and_text_and_differs_otherwise() -> None:
    seed, other_seed = b"s" * 32, b"t" * 32
    key = raw_key(seed, ITEM)
    assert key == raw_key(seed, ITEM)
    assert len(key) == 32
    assert int(key, 16) >= 0
    assert raw_key(other_seed, ITEM) != key
    assert raw_key(seed, ITEM.replace("199", "198")) != key
    assert raw_key(seed, '{"name":"Cola","id":"I1","price":199}') != key  # another order


def test_a_key_is_the_keyed_blake2b_of_the_text_whatever_came_before() -> None:
    """Stored content hashes hold ``blake2b(text, digest_size=16, key=seed)``: the copied
    keyed state gives exactly that, for any seed, interleaved, a state never reused."""
    import hashlib

    raw_keys._keyed.cache_clear()  # a state made before (another test's) must not hide how
    texts = [ITEM, "", "x" * 10_000, '{"name":"\u00e9\ud800"}']
    for seed in (b"s" * 32, b"t" * 32, b"", b"k" * 64, b"s" * 32):
        for text in texts + texts:
            data = text.encode("utf-8", "surrogatepass")
            assert (
                raw_key(seed, text) == hashlib.blake2b(data, digest_size=16, key=seed).hexdigest()
            )


def test_text_with_a_lone_surrogate_is_keyed_as_it_came() -> None:
    seed = b"s" * 32
    assert raw_key(seed, '{"name":"\ud800"}') != raw_key(seed, '{"name":"\ud801"}')
    assert raw_key(seed, '{"name":"\ud800"}') == raw_key(seed, '{"name":"\ud800"}')


def test_a_row_is_unchanged_only_when_its_hash_starts_with_this_key() -> None:
    key = raw_key(b"s" * 32, ITEM)
    assert unchanged(f"{key}:labelhash", key)
    assert unchanged(f"{key}:", key)
    assert not unchanged(None, key)
    assert not unchanged(key, key)  # no label part: another scheme's hash
    assert not unchanged(f"{key}0:labelhash", key)  # a longer key is another key
    assert not unchanged(f"x{key}:labelhash", key)
    assert not unchanged(f"{raw_key(b't' * 32, ITEM)}:labelhash", key)
