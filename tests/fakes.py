"""In-memory fakes of the ports (:mod:`esl_sync.ports`), shared by the unit tests.

Each fake subclasses the Protocol it stands for and is ``@final``, so mypy (strict, see
pyproject.toml) checks it against it where it is defined: a method missing or with another
signature breaks the fake at once, not some test at random.
They keep what they are told in plain attributes the tests read and set; where the real
adapter computes something from tables the fake does not have (stale labels, conflicts,
refused items, repair candidates), the test sets the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal, final

from esl_sync.credentials import CloverTokens, SealedTokens, StoredTokens
from esl_sync.hipoink.errors import (
    HipoinkConfigError,
    HipoinkNotFound,
    HipoinkRecordError,
    HipoinkRetryable,
)
from esl_sync.hipoink.records import HipoinkRecord
from esl_sync.merchant_ports import (
    MerchantChanges,
    MerchantEditor,
    MerchantSetting,
)
from esl_sync.messages import LabelJob, LabelMessage, LabelVerify, PollRequest
from esl_sync.observability import logger
from esl_sync.ports import (
    CatalogReader,
    CatalogReaders,
    CodeExchanger,
    LabelLedger,
    LabelQueue,
    LabelSink,
    MerchantDirectory,
    PollQueue,
    Refresher,
    StaleStateError,
    StateStore,
    TokenStore,
    WebhookHints,
)
from esl_sync.records import (
    AckedLabel,
    Drift,
    Fence,
    HeldPage,
    LabelAck,
    LabelConflict,
    LabelFailure,
    Leased,
    Merchant,
    MerchantState,
    RefusedItem,
    RepairSnapshot,
    StaleLabel,
    StoreBlock,
    VerificationCode,
    VerifyResult,
    VerifyTarget,
)
from esl_sync.verify_ports import HeldProducts, VerifyLedger

START = datetime(2025, 1, 1, tzinfo=UTC)


class _OneMerchant:
    """A fake that holds one merchant's data (what every unit test needs): a call for
    another merchant is a test mistake, and says so."""

    merchant_id: str | None = None

    def _check(self, merchant_id: str) -> None:
        if not isinstance(merchant_id, str):
            raise AssertionError(f"a call for merchant {merchant_id!r}")
        if self.merchant_id is None:
            self.merchant_id = merchant_id
        elif merchant_id != self.merchant_id:
            raise AssertionError(f"this fake holds {self.merchant_id}, not {merchant_id}")


@final
class MemoryLedger(_OneMerchant, LabelLedger):
    """``label_state`` of one merchant: acknowledgements by code, failures, the store's
    block (against ``now``, which the test moves), the label clock. ``calls`` lists every
    call by method name. ``store_code``: the merchant's store (None: whichever a call
    names); like the real ledger, acknowledgements and renewals for another store are not
    recorded, and a write naming a code twice is refused whole (Postgres: "ON CONFLICT DO
    UPDATE command cannot affect row a second time")."""

    def __init__(self, snapshot: RepairSnapshot | None = None, *, clock: int = 0) -> None:
        self.acks: dict[str, str | None] = {}
        self.versions: dict[str, int | None] = {}
        self.renewed: list[str] = []
        self.store_code: str | None = None
        self.failures: dict[str, LabelFailure] = {}
        self.refusal: dict[str, LabelAck] = {}  # what ``refusals`` answers
        self.blocks: dict[str, StoreBlock] = {}
        self.now = START
        self.clock = clock
        self.snapshot = snapshot
        self.requeued: list[tuple[list[str], datetime | None]] = []
        self.calls: list[str] = []
        # What the real ledger reads from the product table: the test says.
        self.stale: list[StaleLabel] = []
        self.stale_total = 0
        self.conflicts: list[LabelConflict] = []
        self.refused: list[RefusedItem] = []
        self.wanted: dict[str, str | None] = {}  # code → the hash products want (absent: none)
        self.verify_due = True  # what claim_verify answers (then False: claimed)
        self.verify_claims: list[int] = []  # the interval (hours) of each claim_verify
        self.clock_fences: list[Fence | None] = []  # the fence of each advance_label_clock

    def _call(self, name: str, *merchant_id: str) -> None:
        self.calls.append(name)
        for one in merchant_id:
            self._check(one)

    def acknowledged(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, AckedLabel]:
        self._call("acknowledged", merchant_id)
        return {pc: AckedLabel(self.acks[pc], self.versions[pc]) for pc in pcs if pc in self.acks}

    def acknowledge(self, merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        self._call("acknowledge", merchant_id)
        self._each_once(a.pc for a in acks)
        if not self._store_is_current(store_code):
            return
        self.acks.update({a.pc: a.label_hash for a in acks})
        self.versions.update({a.pc: a.version for a in acks})
        for a in acks:
            self.refusal.pop(a.pc, None)

    def renew(self, merchant_id: str, acks: Sequence[LabelAck], *, store_code: str) -> None:
        self._call("renew", merchant_id)
        if not self._store_is_current(store_code):
            return
        self.renewed.extend(a.pc for a in acks)
        self.versions.update({a.pc: a.version for a in acks})

    def _store_is_current(self, store_code: str) -> bool:
        return self.store_code is None or store_code == self.store_code

    @staticmethod
    def _each_once(pcs: Iterable[str]) -> None:
        listed = list(pcs)
        if len(set(listed)) != len(listed):
            raise ValueError("ON CONFLICT DO UPDATE command cannot affect row a second time")

    def record_failures(
        self, merchant_id: str, failures: Sequence[LabelFailure], *, store_code: str | None = None
    ) -> None:
        self._call("record_failures", merchant_id)
        self._each_once(f.pc for f in failures)
        self.failures.update({f.pc: f for f in failures})
        for f in failures:
            refused = f.refused if f.failure_class == "bad_record" else None
            current = store_code is not None and self._store_is_current(store_code)
            if refused is not None and refused.version is not None and current:
                self.refusal[f.pc] = refused  # another failure keeps it

    def refusals(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, LabelAck]:
        self._call("refusals", merchant_id)
        return {pc: self.refusal[pc] for pc in pcs if pc in self.refusal}

    def stale_labels_total(self) -> int:
        self._call("stale_labels_total")
        return self.stale_total

    def stale_label_details(self, merchant_id: str) -> list[StaleLabel]:
        self._call("stale_label_details", merchant_id)
        return list(self.stale)

    def label_conflicts(self, merchant_id: str) -> list[LabelConflict]:
        self._call("label_conflicts", merchant_id)
        return list(self.conflicts)

    def refused_items(self, merchant_id: str) -> list[RefusedItem]:
        self._call("refused_items", merchant_id)
        return list(self.refused)

    def labels_wanted(self, merchant_id: str, pcs: Iterable[str]) -> dict[str, str | None]:
        self._call("labels_wanted", merchant_id)
        return {pc: self.wanted.get(pc) for pc in pcs}

    def advance_label_clock(self, merchant_id: str, *, fence: Fence | None = None) -> int:
        self._call("advance_label_clock", merchant_id)
        self.clock_fences.append(fence)
        self.clock += 1
        return self.clock

    def repair_candidates(self, merchant_id: str) -> RepairSnapshot:
        self._call("repair_candidates", merchant_id)
        snapshot = self.snapshot or RepairSnapshot(self.now, None, [])
        return replace(snapshot, clock=self.clock)

    def mark_requeued(
        self, merchant_id: str, pcs: Sequence[str], *, clear_failures_before: datetime | None
    ) -> None:
        self._call("mark_requeued", merchant_id)
        self.requeued.append((list(pcs), clear_failures_before))

    def check_block(
        self, merchant_id: str, store_code: str, cooldown_seconds: int
    ) -> StoreBlock | None:
        self._call("check_block", merchant_id)
        block = self.blocks.get(merchant_id)
        if block is None or block.store_code != store_code:
            return None
        if block.retry_after > self.now:
            return block
        retry_after = self.now + timedelta(seconds=cooldown_seconds)
        self.blocks[merchant_id] = replace(block, retry_after=retry_after)
        return replace(block, retry_after=retry_after, retest=True)

    def block_store(
        self, merchant_id: str, store_code: str, reason: str, cooldown_seconds: int
    ) -> None:
        self._call("block_store", merchant_id)
        since = self.blocks[merchant_id].blocked_at if merchant_id in self.blocks else self.now
        self.blocks[merchant_id] = StoreBlock(
            merchant_id, store_code, reason, since, self.now + timedelta(seconds=cooldown_seconds)
        )

    def unblock_store(self, merchant_id: str) -> bool:
        self._call("unblock_store", merchant_id)
        return self.blocks.pop(merchant_id, None) is not None

    def invalidate_acknowledgements(self, merchant_id: str) -> None:
        self._call("invalidate_acknowledgements", merchant_id)
        self.versions = dict.fromkeys(self.versions)

    def store_blocks(self) -> dict[str, StoreBlock]:
        self._call("store_blocks")
        return dict(self.blocks)

    def claim_verify(self, merchant_id: str, interval_hours: int) -> bool:
        self._call("claim_verify", merchant_id)
        self.verify_claims.append(interval_hours)
        due, self.verify_due = self.verify_due, False
        return due


@final
class MemoryVerifyLedger(_OneMerchant, VerifyLedger):
    """``label_state`` as a verify reads and marks it: ``targets`` (None: the store is no
    longer the merchant's ``store_code``), ``marks`` what each ``mark_drifted`` was given;
    a drifted label whose code is in ``changed_since`` was acknowledged anew meanwhile, so
    it is not marked (the real ledger compares the hash and version)."""

    def __init__(
        self, store_code: str, targets: Iterable[VerifyTarget] | None = (), merchant_id: str = "M"
    ) -> None:
        self.merchant_id = merchant_id
        self.store_code = store_code
        self.targets = None if targets is None else list(targets)
        self.changed_since: set[str] = set()
        self.marks: list[list[Drift]] = []
        self.results: list[VerifyResult] = []

    def verify_targets(self, merchant_id: str, store_code: str) -> list[VerifyTarget] | None:
        self._check(merchant_id)
        if self.targets is None or store_code != self.store_code:
            return None
        return list(self.targets)

    def mark_drifted(self, merchant_id: str, store_code: str, drifts: Sequence[Drift]) -> int:
        self._check(merchant_id)
        assert store_code == self.store_code, f"marks in store {store_code}"
        self.marks.append(list(drifts))
        return sum(d.pc not in self.changed_since for d in drifts)

    def record_verify(self, result: VerifyResult) -> None:
        self._check(result.merchant_id)
        self.results.append(result)


@final
class MemoryHeld(HeldProducts):
    """Hipoink's ``product/query`` over one store's products, as
    :func:`esl_sync.hipoink.client.held_page` reads it: pages of the size asked, numbered
    from 1; a product without ``pc`` is another system's (skipped and counted); ``total``
    the count it reports (default: every product; None: none reported). ``answers`` replaces
    the answer for a page number (an exception is raised); ``endless`` answers a full page of
    new codes for every page. ``calls`` lists each (store, page, page size)."""

    def __init__(
        self,
        store_code: str,
        products: Iterable[dict[str, object]] = (),
        *,
        total: int | Literal["all"] | None = "all",
    ) -> None:
        self.store_code = store_code
        self.products = list(products)
        self.total = len(self.products) if total == "all" else total
        self.answers: dict[int, HeldPage | Exception] = {}
        self.endless = False
        self.calls: list[tuple[str, int, int]] = []

    def query(self, store_code: str, page: int, page_size: int) -> HeldPage:
        self.calls.append((store_code, page, page_size))
        assert store_code == self.store_code, f"a query of store {store_code!r}"
        answer = self.answers.get(page)
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        if self.endless:
            return HeldPage([{"pc": f"X{page}-{i}"} for i in range(page_size)], None)
        listed = self.products[(page - 1) * page_size : page * page_size]
        return HeldPage(
            [dict(p) for p in listed if "pc" in p],
            self.total,
            skipped=sum("pc" not in p for p in listed),
        )


@final
class MemorySink(LabelSink):
    """Hipoink's product API: refuses a batch holding a ``bad`` code like the real server,
    answers 503 while ``down`` and to every call after the first ``outage_after``, refuses
    the sign while ``wrong_sign``, and a store other than ``store_code`` (None: any)
    as not found; ``unknown`` codes are not found (alone: deleted; in a batch: the batch is
    refused). ``calls`` lists what was sent."""

    def __init__(self, bad: Iterable[str] = ()) -> None:
        self.bad = set(bad)
        self.down = False
        self.outage_after: int | None = None
        self.wrong_sign = False
        self.store_code: str | None = None
        self.unknown: set[str] = set()
        self.calls: list[tuple[str, list[str]]] = []

    def upsert(self, store_code: str, records: Sequence[HipoinkRecord]) -> None:
        self.calls.append(("upsert", [r["pc"] for r in records]))
        self._answer(store_code)
        bad = [r["pc"] for r in records if r["pc"] in self.bad]
        if bad:
            raise HipoinkRecordError(f"create_multiple: product {bad[0]}: field pp is malformed")

    def delete(self, store_code: str, codes: Sequence[str]) -> int:
        self.calls.append(("delete", list(codes)))
        self._answer(store_code)
        unknown = [pc for pc in codes if pc in self.unknown]
        if unknown and len(codes) > 1:  # like HipoinkClient.delete over a strict server
            raise HipoinkNotFound(f"del_multiple: product {unknown[0]} not found")
        return len(codes) - len(unknown)

    def _answer(self, store_code: str) -> None:
        if self.down or (self.outage_after is not None and len(self.calls) > self.outage_after):
            raise HipoinkRetryable("create_multiple: HTTP 503")
        if self.wrong_sign:
            raise HipoinkConfigError("create_multiple: sign error")
        if self.store_code is not None and store_code != self.store_code:
            raise HipoinkConfigError(f"create_multiple: store {store_code} not found")


@final
class MemoryLabelQueue(LabelQueue):
    """``jobs`` and ``verifies``: what was sent of each kind, in order."""

    def __init__(self) -> None:
        self.jobs: list[LabelJob] = []
        self.verifies: list[LabelVerify] = []

    def send(self, jobs: Sequence[LabelMessage]) -> None:
        self.jobs.extend(j for j in jobs if isinstance(j, LabelJob))
        self.verifies.extend(j for j in jobs if isinstance(j, LabelVerify))


@final
class MemoryPollQueue(PollQueue):
    """``sent``: each request with its delay in seconds."""

    def __init__(self) -> None:
        self.sent: list[tuple[PollRequest, int]] = []

    def send(self, requests: Sequence[PollRequest], delays: Sequence[int] | None = None) -> None:
        self.sent += list(zip(requests, delays or [0] * len(requests), strict=True))


@final
class MemoryDirectory(MerchantDirectory, MerchantEditor):
    def __init__(self, merchants: Iterable[Merchant] = ()) -> None:
        self.merchants = {m.merchant_id: m for m in merchants}
        self.saved: list[Merchant] = []

    def get(self, merchant_id: str) -> Merchant | None:
        return self.merchants.get(merchant_id)

    def all(self, *, active_only: bool = False) -> list[Merchant]:
        return [m for m in self.merchants.values() if m.active or not active_only]

    def save(
        self,
        merchant: Merchant,
        *,
        then: Callable[[], object] | None = None,
        keep: Collection[MerchantSetting] = (),
    ) -> None:
        if then is not None:
            then()  # raises: the row stays as it was
        registered = self.merchants.get(merchant.merchant_id)
        if registered is not None:
            merchant = replace(merchant, **{name: getattr(registered, name) for name in keep})
        self.merchants[merchant.merchant_id] = merchant
        self.saved.append(merchant)

    def change(self, merchant_id: str, changes: MerchantChanges) -> Merchant | None:
        if merchant_id not in self.merchants:
            return None
        self.merchants[merchant_id] = replace(self.merchants[merchant_id], **changes)
        return self.merchants[merchant_id]


@final
class MemoryStates(StateStore):
    """Merchant states with the version guard and the poll lease (``now_ms`` as given).
    A lease taken reads ``sealed`` and ``fence`` with the state; ``take_errors`` are raised
    by ``take_lease`` for their merchant (a poll that fails at its first read, with the
    error whose class decides the poll's fault); ``release_errors`` are raised, in order,
    by the next ``release_lease`` calls; ``releases`` lists each one's owner."""

    def __init__(self, *states: MerchantState) -> None:
        self.states = {s.merchant_id: replace(s) for s in states}
        self.leases: dict[str, tuple[str, int]] = {}
        self.sealed: SealedTokens | None = None
        self.fence: Fence | None = None
        self.take_errors: dict[str, Exception] = {}
        self.release_errors: list[Exception] = []
        self.releases: list[str] = []

    def load(self, merchant_id: str) -> MerchantState:
        stored = self.states.get(merchant_id)
        return replace(stored) if stored is not None else MerchantState(merchant_id=merchant_id)

    def load_many(self, merchant_ids: Sequence[str]) -> dict[str, MerchantState]:
        return {m: self.load(m) for m in merchant_ids}

    def save(self, state: MerchantState, *, release_lease: str | None = None) -> None:
        stored = self.states.get(state.merchant_id)
        if (stored.version if stored else 0) != state.version:
            raise StaleStateError(f"merchant {state.merchant_id}: written since it was read")
        if release_lease is not None:
            if self.leases.get(state.merchant_id, ("", 0))[0] != release_lease:
                raise StaleStateError(f"merchant {state.merchant_id}: the lease was lost")
            del self.leases[state.merchant_id]
        state.version += 1
        self.states[state.merchant_id] = replace(state)

    def take_lease(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> Leased | None:
        if merchant_id in self.take_errors:
            raise self.take_errors[merchant_id]
        held = self.leases.get(merchant_id)
        if held is not None and held[1] > now_ms:
            return None
        self.leases[merchant_id] = (owner, now_ms + duration_ms)
        return Leased(self.load(merchant_id), self.sealed, self.fence)

    def release_lease(self, merchant_id: str, owner: str) -> None:
        self.releases.append(owner)
        if self.release_errors:
            raise self.release_errors.pop(0)
        if self.leases.get(merchant_id, ("", 0))[0] == owner:
            del self.leases[merchant_id]


@final
class MemoryTokens(_OneMerchant, TokenStore):
    """One merchant's tokens with their generation, the ``needs_reauth`` mark and the
    refresh lock; "sealing" is the JSON (the real store encrypts it with KMS)."""

    def __init__(self, stored: StoredTokens | None, *, lock_owner: str | None = None) -> None:
        self.stored = stored
        self.lock_owner = lock_owner
        self.locks_taken = 0
        self.marks: list[int] = []
        self.replace_failures: list[Exception] = []  # raised by the next replace_tokens calls

    def load_tokens(self, merchant_id: str) -> StoredTokens | None:
        self._check(merchant_id)
        return self.stored

    def open_tokens(self, merchant_id: str, sealed: SealedTokens) -> StoredTokens:
        self._check(merchant_id)
        tokens = CloverTokens.parse(sealed.ciphertext, "sealed")
        return StoredTokens(tokens, sealed.generation, sealed.needs_reauth)

    def write_token(self, merchant_id: str, token: str | CloverTokens) -> int:
        tokens = CloverTokens.plain(token) if isinstance(token, str) else token
        return self.write_sealed_tokens(merchant_id, self.seal_tokens(merchant_id, tokens))

    def seal_tokens(self, merchant_id: str, tokens: CloverTokens) -> bytes:
        self._check(merchant_id)
        return tokens.secret_json().encode()

    def write_sealed_tokens(self, merchant_id: str, sealed: bytes) -> int:
        self._check(merchant_id)
        generation = (self.stored.generation if self.stored else 0) + 1
        self.stored = StoredTokens(CloverTokens.parse(sealed, "sealed"), generation)
        return generation

    def replace_tokens(
        self, merchant_id: str, tokens: CloverTokens, *, generation: int
    ) -> int | None:
        self._check(merchant_id)
        if self.replace_failures:
            raise self.replace_failures.pop(0)
        if self.stored is None or self.stored.generation != generation:
            return None
        self.stored = StoredTokens(tokens, generation + 1)
        return generation + 1

    def mark_needs_reauth(self, merchant_id: str, *, generation: int) -> bool:
        self._check(merchant_id)
        if self.stored is None or self.stored.generation != generation:
            return False
        self.marks.append(generation)
        self.stored = StoredTokens(self.stored.tokens, generation, needs_reauth=True)
        return True

    def acquire_refresh_lock(
        self, merchant_id: str, owner: str, *, now_ms: int, duration_ms: int
    ) -> bool:
        self._check(merchant_id)
        if self.lock_owner is not None:
            return False
        self.lock_owner = owner
        self.locks_taken += 1
        return True

    def release_refresh_lock(self, merchant_id: str, owner: str) -> None:
        if self.lock_owner == owner:
            self.lock_owner = None


@final
class UnreachableClover(CatalogReaders):
    """The process's Clover client when Clover fails a poll's first request with ``error``
    (a ``CloverError``); ``time_left`` notes, for each poll that asked, the time its
    requests were given to spend then (None: no limit)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.time_left: list[int | None] = []

    def merchant(
        self,
        merchant_id: str,
        token: str,
        base_url: str,
        time_left_ms: Callable[[], int] | None = None,
    ) -> CatalogReader:
        self.time_left.append(None if time_left_ms is None else time_left_ms())
        raise self.error


@final
class StaticRefresher(Refresher):
    """The OAuth refresh, answering ``answer`` (or raising it) and counting its calls."""

    def __init__(self, answer: CloverTokens | Exception) -> None:
        self.answer = answer
        self.calls = 0

    def refresh(self, base_url: str, merchant_id: str, refresh_token: str) -> CloverTokens:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@final
class MemoryHints(WebhookHints):
    """What the webhook writes, with the bounds it passes (the real store enforces them)."""

    def __init__(self) -> None:
        self.codes: list[tuple[VerificationCode, int]] = []
        self.claims: list[tuple[str, int, int]] = []
        self.releases: list[tuple[str, int]] = []
        self.deletes: list[tuple[str, list[str], int]] = []
        self.uninstalls: list[tuple[str, int]] = []
        self.window_free = True
        self.room = True

    def record_verification_code(self, received: VerificationCode, *, keep: int) -> None:
        self.codes.append((received, keep))

    def verification_codes(self) -> list[VerificationCode]:
        return [code for code, _ in reversed(self.codes)]

    def claim_webhook_poll(self, merchant_id: str, *, now_ms: int, window_ms: int) -> bool:
        self.claims.append((merchant_id, now_ms, window_ms))
        return self.window_free

    def release_webhook_poll(self, merchant_id: str, *, until_ms: int) -> None:
        self.releases.append((merchant_id, until_ms))

    def add_pending_deletes(self, merchant_id: str, item_ids: Iterable[str], *, limit: int) -> bool:
        self.deletes.append((merchant_id, list(item_ids), limit))
        return self.room

    def record_uninstall(self, merchant_id: str, *, ts_ms: int) -> None:
        self.uninstalls.append((merchant_id, ts_ms))


@final
class MemoryLog(logging.Handler):
    """The service's log lines (Powertools' logger), each as its message and its fields."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @classmethod
    @contextmanager
    def attached(cls) -> Iterator[MemoryLog]:
        log = cls()
        underlying = logging.getLogger(logger.name)  # Powertools' logger logs through it
        underlying.addHandler(log)
        try:
            yield log
        finally:
            underlying.removeHandler(log)

    def lines(self, message: str) -> list[dict[str, object]]:
        """The fields of each line with this message (with ``level``)."""
        plain = {*vars(logging.makeLogRecord({})), "message", "asctime"}
        return [
            {k: v for k, v in vars(r).items() if k not in plain} | {"level": r.levelname}
            for r in self.records
            if r.getMessage() == message
        ]

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


INSTALL_PAIR = CloverTokens.from_object(
    {
        "access_token": "access-SECRET",
        "access_token_expiration": 1_795_869_000,
        "refresh_token": "refresh-SECRET",
        "refresh_token_expiration": 1_798_459_200,
    }
)
"""The v2 pair a fake OAuth exchange answers with (its secrets marked, for leak checks)."""


@final
class MemoryExchanger(CodeExchanger):
    """Clover's code exchange: ``answer`` (a pair, or the error to raise) for every code;
    ``calls`` holds each exchange's (base URL, merchant id, code, client secret)."""

    def __init__(self, answer: CloverTokens | Exception = INSTALL_PAIR) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str, str]] = []

    def exchange_code(
        self, base_url: str, merchant_id: str, code: str, client_secret: str
    ) -> CloverTokens:
        self.calls.append((base_url, merchant_id, code, client_secret))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer
