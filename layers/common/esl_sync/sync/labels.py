"""Which label updates a set of product changes calls for, chunked into label jobs.

A poll first notes the product codes its writes touched (a product's label changed, or a
product left a code); then, with the products as its transaction left them, each touched
code gets what its owner shows (:meth:`LabelPlan.resolve`): the owner's record, or a delete
when no product claims the code any more. One code can be claimed by several products
(a duplicate product code): only the owner (the rule is the ``label_owner`` SQL function) is on
the label, so the label never flips between them, and the conflict is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import batched
from typing import TYPE_CHECKING, NamedTuple

import orjson

from esl_sync.clover.transform import ItemFields
from esl_sync.hipoink.records import HipoinkRecord, label_hash, to_record
from esl_sync.messages import LabelJob
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.records import LabelOwners, ProductChange
from esl_sync.settings import Settings

if TYPE_CHECKING:  # the poll builds a Product only for an unclean item: no pydantic else
    from esl_sync.products import Product

_LOGGED_CONFLICTS = 20  # conflicts named in one log line; the metric counts all


class LabelTarget(NamedTuple):
    """What the label of one product should now show (record None: no label).

    ``refused``: Clover's version was refused, so the label stays as it is. A tuple: the
    poll makes one per item of every page.
    """

    record: HipoinkRecord | None
    label_hash: str | None
    changed_ms: int | None = None  # Clover's modifiedTime of the change, for latency
    refused: bool = False


def label_target(product: Product | ItemFields, settings: Settings) -> LabelTarget:
    """What the product's label should show with these settings (free fields, the text of a
    ``VARIABLE`` price); a refused product's label stays as it is. ``product`` may be the
    fields of an item the poll writes without a model (:mod:`esl_sync.sync.item_rows`)."""
    record = to_record(
        product,
        extra_fields=settings.hipoink_extra_fields,
        variable_price_text=settings.hipoink_variable_price_text,
        # The price's text the transform made once, not the Decimal formatted again: ≈ 0.2 µs
        # less an item (issue 15).
        price_text=product.price_text if type(product) is ItemFields else None,
    )
    # The tuple made directly, not through the class's generated ``__new__``: one target
    # per item of every page, ≈ 0.1 µs less each (issue 15).
    return _new_tuple(
        LabelTarget, (record, record_hash(record), product.source_modified_time, product.refused)
    )


_new_tuple = tuple.__new__


def record_hash(record: HipoinkRecord | None) -> str | None:
    """:func:`~esl_sync.hipoink.records.label_hash` (the digest the ledger holds), in about
    half the time for a record of ASCII text, nearly every label of a first sync.

    orjson writes such a record, keys sorted, byte for byte as the standard library's
    ``json.dumps(record, sort_keys=True, separators=(",", ":"))`` does (the same escapes of
    quotes, backslashes and control characters, ``\\u00XX`` in lower case) except DEL, which
    ``json`` escapes; text beyond ASCII, which ``json`` escapes, shows in orjson's output
    as UTF-8. So output that is ASCII without DEL is hashed as it is; anything else, and a
    record orjson refuses (a lone surrogate), is hashed the standard library's way. Here,
    not in ``hipoink.records``: the sender, which hashes a few records a job, would pay
    orjson's import (≈ 12 ms) in its cold start. ``tests/unit/test_hipoink_records.py``
    checks the two agree."""
    if record is None:
        return None
    try:
        data = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return label_hash(record)
    # DEL looked for as the integer byte: ``b"\x7f" in data`` first tries the needle as an
    # integer, raises and clears a TypeError, then searches: ≈ 0.29 µs against 0.02 (issue 15).
    if data.isascii() and 0x7F not in data:
        return hashlib.sha256(data).hexdigest()[:32]
    return label_hash(record)


_NO_LABEL = LabelTarget(None, None)  # a row written without a target (a removal): one, shared


@dataclass
class LabelPlan:
    """Label upserts and deletes of one poll, keyed by product code."""

    upserts: dict[str, HipoinkRecord] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    changed_ms: dict[str, int] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)
    records: dict[tuple[str, str], HipoinkRecord] = field(default_factory=dict)
    version: int | None = None
    conflicts: dict[str, int] = field(default_factory=dict)  # code → products claiming it
    dropped: set[str] = field(default_factory=set)  # $0.00 labels of older code, taken off

    def add(
        self, changes: Iterable[ProductChange], targets: Mapping[tuple[str, str], LabelTarget]
    ) -> None:
        """Note the codes written rows touched.

        A product whose label hash changed touches its code; a product that no longer
        shows a code (hidden, deleted, code changed) touches that code. A refused product
        touches nothing: its row and its label keep the last version that was accepted;
        unless that version is older code's $0.00 for an item without a price, whose
        label the write dropped (``label_dropped``): its code is touched, so the label goes
        (or another product claiming the code takes it over).
        """
        # Both tuples unpacked at once rather than read by attribute: one change per row a
        # first sync writes, ≈ 0.1 µs less each (issue 15).
        target_of, touch = targets.get, self._touch
        for key, previous_barcode, previous_hash, dropped in changes:
            record, label_hash, changed_ms, refused = target_of(key, _NO_LABEL)
            if refused:
                if dropped and previous_barcode:
                    self.dropped.add(previous_barcode)
                    touch(previous_barcode, changed_ms)
                continue
            new_pc = record["pc"] if record else None
            old_pc = previous_barcode if previous_hash else None
            if old_pc and old_pc != new_pc:
                touch(old_pc, changed_ms)
            if record and new_pc and label_hash != previous_hash:
                touch(new_pc, changed_ms)
                self.records[key] = record

    def _touch(self, pc: str, changed_ms: int | None) -> None:
        self.touched.add(pc)
        if changed_ms is not None:
            self.changed_ms[pc] = changed_ms

    def resolve(
        self, owners: LabelOwners, record_of: Callable[[Product], HipoinkRecord | None]
    ) -> None:
        """Each touched code shows its owner's record, or goes when it has none.

        ``record_of`` builds the record of an owner this poll did not write (a product
        that takes a code over when another leaves it).
        """
        self.version = owners.version
        for pc in sorted(self.touched):
            owner = owners.owners.get(pc)
            record = None
            if owner is not None:
                record = self.records.get(owner.key) or record_of(owner.product)
                if owner.claims > 1:
                    self.conflicts[pc] = owner.claims
            if record is not None:
                self.upserts[pc] = record
            else:
                self.deletes.add(pc)
        if self.conflicts:
            _report_conflicts(self.conflicts, owners)

    def jobs(self, merchant_id: str, store_code: str, batch_size: int) -> list[LabelJob]:
        """Jobs of at most ``batch_size`` codes each.

        A code wanted by some product is never deleted in the same poll (two products
        sharing a barcode, one hidden and one shown, leave the label up). Labels dropped
        from refused items (older code's $0.00) are named in the log, once per poll.
        """
        if self.dropped:
            logger.warning(
                "refused items without a price: the 0.00 labels older code gave them are"
                " taken off (or shown by another product with their code)",
                merchant_id=merchant_id,
                codes=sorted(self.dropped)[:_LOGGED_CONFLICTS],
                count=len(self.dropped),
            )
        upserts = [self.upserts[pc] for pc in sorted(self.upserts)]
        deletes = sorted(self.deletes - self.upserts.keys())
        return [
            LabelJob(
                merchant_id=merchant_id,
                store_code=store_code,
                upserts=list(chunk),
                oldest_change_ms=self._oldest(r["pc"] for r in chunk),
                version=self.version,
            )
            for chunk in batched(upserts, batch_size)
        ] + [
            LabelJob(
                merchant_id=merchant_id,
                store_code=store_code,
                deletes=list(chunk),
                oldest_change_ms=self._oldest(chunk),
                version=self.version,
            )
            for chunk in batched(deletes, batch_size)
        ]

    def _oldest(self, pcs: Iterable[str]) -> int | None:
        return min((self.changed_ms[pc] for pc in pcs if pc in self.changed_ms), default=None)

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deletes


def _report_conflicts(conflicts: Mapping[str, int], owners: LabelOwners) -> None:
    """A code several products claim: named in the log (with the product on the label)
    and counted, each time a poll touches it."""
    named = sorted(conflicts)[:_LOGGED_CONFLICTS]
    merchant_id = owners.owners[named[0]].merchant_id
    logger.warning(
        "product code claimed by more than one product; the label shows the one stored first",
        merchant_id=merchant_id,
        conflicts=len(conflicts),
        codes={pc: owners.owners[pc].key[0] for pc in named},
    )
    metrics.add_metric(name="LabelConflicts", unit=MetricUnit.Count, value=len(conflicts))
