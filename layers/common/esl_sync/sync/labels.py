"""Which label updates a set of product changes calls for, chunked into label jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from esl_sync.hipoink.records import HipoinkRecord, label_hash, to_record
from esl_sync.messages import LabelJob
from esl_sync.products import Product
from esl_sync.settings import Settings
from esl_sync.store.interfaces import ProductChange


@dataclass(frozen=True)
class LabelTarget:
    """What the label of one product should now show (record None: no label).

    ``refused``: Clover's version was refused, so the label stays as it is.
    """

    record: HipoinkRecord | None
    label_hash: str | None
    changed_ms: int | None = None  # Clover's modifiedTime of the change, for latency
    refused: bool = False


def label_target(product: Product, settings: Settings) -> LabelTarget:
    """What the product's label should show with these settings (free fields, the text of a
    ``VARIABLE`` price); a refused product's label stays as it is."""
    record = to_record(
        product,
        extra_fields=settings.hipoink_extra_fields,
        variable_price_text=settings.hipoink_variable_price_text,
    )
    changed_ms = product.source_modified_time
    return LabelTarget(record, label_hash(record), changed_ms, refused=product.refused)


@dataclass
class LabelPlan:
    """Label upserts and deletes of one poll, keyed by product code."""

    upserts: dict[str, HipoinkRecord] = field(default_factory=dict)
    deletes: set[str] = field(default_factory=set)
    changed_ms: dict[str, int] = field(default_factory=dict)

    def add(
        self, changes: Iterable[ProductChange], targets: Mapping[tuple[str, str], LabelTarget]
    ) -> None:
        """Turn written rows into label work.

        A product whose label hash changed gets an upsert; a code that a product no longer
        shows (hidden, deleted, barcode changed) gets a delete. A refused product changes
        nothing: its label keeps showing the last version that was accepted.
        """
        for change in changes:
            target = targets.get(change.key, LabelTarget(None, None))
            if target.refused:
                continue
            new_pc = target.record["pc"] if target.record else None
            old_pc = change.previous_barcode if change.previous_label_hash else None
            if old_pc and old_pc != new_pc:
                self.deletes.add(old_pc)
                self._changed(old_pc, target.changed_ms)
            if target.record and new_pc and target.label_hash != change.previous_label_hash:
                self.upserts[new_pc] = target.record
                self._changed(new_pc, target.changed_ms)

    def _changed(self, pc: str, changed_ms: int | None) -> None:
        if changed_ms is not None:
            self.changed_ms[pc] = changed_ms

    def jobs(self, merchant_id: str, store_code: str, batch_size: int) -> list[LabelJob]:
        """Jobs of at most ``batch_size`` codes each.

        A code wanted by some product is never deleted in the same poll (two products
        sharing a barcode, one hidden and one shown, leave the label up).
        """
        upserts = [self.upserts[pc] for pc in sorted(self.upserts)]
        deletes = sorted(self.deletes - self.upserts.keys())
        return [
            LabelJob(
                merchant_id=merchant_id,
                store_code=store_code,
                upserts=chunk,
                oldest_change_ms=self._oldest(r["pc"] for r in chunk),
            )
            for chunk in _chunks(upserts, batch_size)
        ] + [
            LabelJob(
                merchant_id=merchant_id,
                store_code=store_code,
                deletes=chunk,
                oldest_change_ms=self._oldest(chunk),
            )
            for chunk in _chunks(deletes, batch_size)
        ]

    def _oldest(self, pcs: Iterable[str]) -> int | None:
        return min((self.changed_ms[pc] for pc in pcs if pc in self.changed_ms), default=None)

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deletes


def _chunks[T](items: list[T], size: int) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
