"""The operator's commands: each checks its arguments (done by the parser), asks
:mod:`esl_sync.runtime` for the stores it needs and makes one call into
:mod:`esl_sync.admin` (or the schema), then prints what happened.

Imports are made inside the commands: ``esl-sync --help`` and a bad argument load nothing
but the parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from esl_sync import inputs
from esl_sync.clover.regions import LOOPBACK_HOSTS
from esl_sync.credentials import CloverTokens
from esl_sync_ops.terminal import print_rows, printable, utc_text

if TYPE_CHECKING:
    from esl_sync import admin, restore
    from esl_sync.merchant_ports import FenceCount, VersionsRaised
    from esl_sync.records import Merchant

POLL_NOT_QUEUED = 3
"""Exit status of ``merchants add``, ``enable`` and ``set-store`` when the merchant was saved
but its poll could not be queued (no ``POLL_QUEUE_URL``, SQS refusing): the schedule still
polls it."""

DEFAULT = "default"
"""The value of ``--clover-base-url`` and ``--poll-interval-seconds`` that clears a
merchant's own setting: it then follows the stack's."""

# Stack output → the setting it provides (see template.yaml, Outputs).
STACK_OUTPUTS = {
    "PollQueueUrl": "POLL_QUEUE_URL",
    "LabelQueueUrl": "LABEL_QUEUE_URL",
    "StateTableName": "STATE_TABLE_NAME",
    "StateKeyArn": "STATE_KEY_ID",
    "DatabaseUrlSecretArn": "DATABASE_URL_SECRET_ARN",
}


def _local_aws(args: argparse.Namespace) -> bool:
    """Whether AWS itself is on loopback (the local stack points ``AWS_ENDPOINT_URL`` at
    moto there): only then may a merchant's Clover URL be a loopback simulator."""
    url = os.environ.get("AWS_ENDPOINT_URL")
    try:
        return not args.stack and bool(url) and urlsplit(url).hostname in LOOPBACK_HOSTS
    except ValueError:
        return False


def use_stack(name: str) -> None:
    """Fill the environment from a stack's outputs; what is set explicitly wins."""
    from esl_sync import runtime
    from esl_sync.store.stack import stack_outputs

    outputs = stack_outputs(name)
    for output, variable in STACK_OUTPUTS.items():
        if output in outputs:
            os.environ.setdefault(variable, outputs[output])
    runtime.reset()


def poll(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    queue = runtime.poll_queue()  # a missing POLL_QUEUE_URL is named before a read
    merchant = admin.known_merchant(runtime.merchants(), args.merchant_id)
    _say_polled(merchant, admin.poll_now(queue, merchant))
    return 0


def resync(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime
    from esl_sync.settings import settings

    outcome = admin.resync(
        runtime.merchants(),
        runtime.state_store(),
        runtime.label_ledger(),
        runtime.poll_queue(),
        runtime.label_queue(),
        settings(),
        args.merchant_id,
    )
    if outcome is None:
        print(
            f"no resync: {args.merchant_id} is not polled: disabled (merchants enable) or"
            " awaiting its store code (merchants set-store)"
        )
        return 0
    print(
        f"{args.merchant_id}: cursor reset, {outcome.upserts} label(s) and {outcome.deletes}"
        " delete(s) queued, full re-read queued"
    )
    return 0


def migrate(_args: argparse.Namespace) -> int:
    from esl_sync import runtime
    from esl_sync.store.schema import apply_migrations

    applied = apply_migrations(runtime.database_url())
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def merchants_add(args: argparse.Namespace) -> int:
    """Every input is checked first; then the token is encrypted, then written with the
    row (:func:`esl_sync.admin.add_merchant`): a refusal anywhere leaves nothing written.

    A merchant already there (new tokens after a re-auth) keeps the Clover host and poll
    interval the options leave out (as they are when it is written: one statement), and is
    enabled."""
    from esl_sync import admin, runtime
    from esl_sync.merchant_ports import MerchantSetting
    from esl_sync.records import Merchant

    clover_base_url = _clover_base_url(args)
    token = _token_from_stdin(args)
    merchant = Merchant(
        merchant_id=args.merchant_id,
        store_code=args.store_code,
        clover_base_url=_chosen(clover_base_url),
        poll_interval_seconds=_chosen(args.poll_interval_seconds),
    )
    keep: list[MerchantSetting] = []
    if clover_base_url is None:
        keep.append("clover_base_url")
    if args.poll_interval_seconds is None:
        keep.append("poll_interval_seconds")
    directory = runtime.merchants()
    replaced = admin.add_merchant(directory, runtime.state_store(), merchant, token, keep=keep)
    kind = " with its token pair" if args.token_pair_stdin else " with its token" if token else ""
    print(f"merchant {merchant.merchant_id} saved{kind}")
    status = _poll_now(merchant, "saved")
    _relabel_if_moved(merchant.merchant_id, replaced)
    return status


def _poll_now(merchant: Merchant, done: str) -> int:
    """Queue the merchant's poll now and say so: 0, or :data:`POLL_NOT_QUEUED` with one
    line on stderr (the merchant stays ``done``; the schedule polls it)."""
    from esl_sync import admin, runtime

    try:
        queued = admin.poll_now(runtime.poll_queue(), merchant)
    except Exception as error:  # the queue's settings or SQS: the merchant is saved already
        # The error's text cut on its own, so that a long one never cuts what to expect.
        why = printable(f"{type(error).__name__}: {error}", limit=200)
        print(
            f"esl-sync: merchant {merchant.merchant_id} {done}, but its poll was not queued"
            f" ({why}): the schedule polls it within CLOVER_SYNC_INTERVAL_SECONDS",
            file=sys.stderr,
        )
        return POLL_NOT_QUEUED
    _say_polled(merchant, queued)
    return 0


def _say_polled(merchant: Merchant, queued: bool) -> None:
    """Whether the merchant's poll was queued; if not, why (the poller would skip it)."""
    if queued:
        print(f"poll of {merchant.merchant_id} queued")
    elif merchant.active:
        print(f"no poll queued: {merchant.merchant_id} awaits its store code (merchants set-store)")
    else:
        print(f"no poll queued: {merchant.merchant_id} is disabled (merchants enable)")


def merchants_set(args: argparse.Namespace) -> int:
    """Only what is named changes (its store, tokens and being enabled stay as they are);
    ``default`` returns a setting to the stack's."""
    from esl_sync import admin, runtime

    if args.clover_base_url is None and args.poll_interval_seconds is None:
        raise inputs.InvalidInput(
            "merchants set: nothing to change: give --clover-base-url or --poll-interval-seconds"
            f" (a value, or {DEFAULT})"
        )
    clover_base_url = _clover_base_url(args)
    merchant = admin.set_poll_options(
        runtime.merchants(),
        args.merchant_id,
        clover_base_url=admin.KEEP if clover_base_url is None else _chosen(clover_base_url),
        poll_interval_seconds=(
            admin.KEEP
            if args.poll_interval_seconds is None
            else _chosen(args.poll_interval_seconds)
        ),
    )
    host = merchant.clover_base_url or "the stack's (CLOVER_API_BASE_URL)"
    interval = (
        f"{merchant.poll_interval_seconds} s"
        if merchant.poll_interval_seconds
        else "the stack's (CLOVER_SYNC_INTERVAL_SECONDS)"
    )
    print(f"merchant {merchant.merchant_id}: Clover host {host}, poll interval {interval}")
    return 0


def _clover_base_url(args: argparse.Namespace) -> str | None:
    """``--clover-base-url`` checked and normalized, :data:`DEFAULT`, or None (not given)."""
    given: str | None = args.clover_base_url
    if given is None or given == DEFAULT:
        return given
    try:
        return inputs.clover_base_url(given, allow_loopback=_local_aws(args))
    except inputs.InvalidInput as error:
        raise inputs.InvalidInput(f"{error}, or {DEFAULT}") from None


def _chosen[T](given: T | None) -> T | None:
    """An option's value to write: :data:`DEFAULT`, none (the stack's setting); else the
    value given (None: not given, which the caller keeps as it is)."""
    return None if given == DEFAULT else given


def _token_from_stdin(args: argparse.Namespace) -> str | CloverTokens | None:
    """The token an operator pipes in (never an argument: shell history keeps those)."""
    if args.token_pair_stdin:
        return inputs.token_pair(_stdin_bytes())
    if args.token_stdin:
        return inputs.plain_token(_stdin_bytes())
    return None


def _stdin_bytes() -> bytes:
    """Standard input as bytes, read no further than the checker's limit (+1, to tell)."""
    limit = inputs.MAX_STDIN_BYTES + 1
    binary = getattr(sys.stdin, "buffer", None)
    if binary is not None:
        data: bytes = binary.read(limit)
        return data
    return sys.stdin.read(limit).encode("utf-8", "surrogatepass")  # a text stream (tests)


def merchants_set_store(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    written = admin.set_store(runtime.merchants(), args.merchant_id, args.store)
    if not written.registered:
        print(
            f"merchant {args.merchant_id} has not installed the app yet: store {args.store} is"
            " kept for its install"
        )
        return 0
    print(f"merchant {args.merchant_id}: store {args.store}")
    merchant = runtime.merchants().get(args.merchant_id)
    # As `merchants add`: the poll first (a refused one is exit 3, not an error), then the
    # relabel of a moved store, so neither one's failure keeps the other from being done.
    status = _poll_now(merchant, f"given store {args.store}") if merchant else 0
    _relabel_if_moved(args.merchant_id, written.replaced)
    return status


def _relabel_if_moved(merchant_id: str, previous_store: str | None) -> None:
    """A labelling merchant given another store: say where its labels go now."""
    from esl_sync import admin, runtime
    from esl_sync.settings import settings

    moved = admin.relabel_if_moved(
        runtime.merchants(),
        runtime.label_ledger(),
        runtime.label_queue(),
        settings(),
        merchant_id,
        previous_store,
    )
    if moved is not None:
        print(
            f"moved from store {previous_store}: {moved.upserts} label(s) queued for the new"
            f" store; the labels at {previous_store} stay (remove them in Hipoink if that store"
            " is not this merchant's)"
        )


def merchants_list(args: argparse.Namespace) -> int:
    from esl_sync import runtime

    rows = [vars(m) for m in runtime.merchants().all()]
    print_rows(rows, args.json)
    return 0


def merchants_toggle(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    merchant = admin.set_active(runtime.merchants(), args.merchant_id, args.active)
    print(f"merchant {merchant.merchant_id} {'enabled' if args.active else 'disabled'}")
    return _poll_now(merchant, "enabled") if args.active else 0


def status(args: argparse.Namespace) -> int:
    from esl_sync import runtime
    from esl_sync.admin import merchant_status
    from esl_sync.settings import settings

    if args.labels:
        return _stale_labels(args.labels, args.json)
    rows = merchant_status(
        runtime.merchants(),
        runtime.state_store(),
        runtime.label_ledger(),
        settings().clover_sync_interval_seconds,
    )
    now = datetime.now(UTC)
    active = [r for r in rows if r["active"]]
    print(
        f"{len(rows)} merchant(s), {len(active)} active:"
        f" {sum(r['fresh'] is False for r in active)} not fresh,"
        f" {sum(r['auth'] == 'needs_reauth' for r in active)} need re-auth,"
        f" {sum(bool(r['stale_labels']) for r in active)} with stale labels,"
        f" {sum(bool(r['refused_items']) for r in active)} with refused items,"
        f" {sum(bool(r['label_conflicts']) for r in active)} with product code conflicts,"
        f" {sum(bool(r['store_blocked']) for r in active)} blocked by Hipoink,"
        f" {sum(r['awaiting_store_code'] for r in active)} awaiting a store code,"
        f" {sum(r['last_verify'].startswith('refused') for r in active)} whose last label"
        " verify was refused"
        f" — as of {utc_text(now)}",
        file=sys.stderr if args.json else sys.stdout,
    )
    codes = runtime.state_store().verification_codes()
    for number, received in enumerate(codes):
        print(
            f"{'last' if number == 0 else '   earlier'} Clover webhook verification code:"
            f" {printable(received.code)} (received {utc_text(received.received_at)}"
            f" from {printable(received.source_ip or 'an unknown address')})",
            file=sys.stderr if args.json else sys.stdout,
        )
    print_rows(rows, args.json)
    return 0


def _stale_labels(merchant_id: str, as_json: bool) -> int:
    from esl_sync import admin, runtime

    labels = admin.stale_labels(runtime.merchants(), runtime.label_ledger(), merchant_id)
    conflicts = admin.label_conflicts(runtime.merchants(), runtime.label_ledger(), merchant_id)
    print(
        f"{merchant_id}: {len(labels)} stale label(s),"
        f" {len({c.pc for c in conflicts})} product code(s) claimed by more than one product",
        file=sys.stderr if as_json else sys.stdout,
    )
    rows = [
        {
            "pc": label.pc,
            "action": label.action,
            "name": label.name,
            "since": label.since,
            "failure": (
                f"{label.failure_class}: {label.failure_message}" if label.failure_class else None
            ),
            "failed_at": label.failed_at,
        }
        for label in labels
    ] + [
        {
            "pc": conflict.pc,
            "action": "conflict",
            "name": conflict.name,
            "since": None,
            "failure": (
                f"code claimed by {conflict.claims} products (item {conflict.source_id}"
                + (
                    " is on the label: stored first)"
                    if conflict.shown
                    else f" is not shown; item {conflict.shown_source_id} is on the label)"
                )
            ),
            "failed_at": None,
        }
        for conflict in conflicts
    ]
    refused = admin.refused_items(runtime.merchants(), runtime.label_ledger(), merchant_id)
    if as_json:  # one list, the same keys: a refused item is a label that is not current
        rows += [
            {"pc": r.pc, "action": "refused", "name": r.name, "since": r.since}
            | {"failure": r.problem, "failed_at": None}
            for r in refused
        ]
        print_rows(rows, as_json)
        return 0
    if rows:
        print_rows(rows, as_json)
    print(
        f"{merchant_id}: {len(refused)} refused item(s) (each label keeps its last accepted"
        " version until the item is fixed in Clover)"
    )
    if refused:
        print_rows(
            [
                {"item_id": r.item_id, "pc": r.pc, "name": r.name, "since": r.since}
                | {"label": "kept" if r.label_kept else "none", "problem": r.problem}
                for r in refused
            ],
            as_json,
        )
    return 0


def stores_unblock(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    if admin.unblock_store(runtime.merchants(), runtime.label_ledger(), args.merchant_id):
        print(
            f"store of {args.merchant_id} unblocked; its stale labels are re-sent by the next"
            f" heal (now: esl-sync heal {args.merchant_id} --older-than 0)"
        )
    else:
        print(f"store of {args.merchant_id} was not blocked")
    return 0


def heal(args: argparse.Namespace) -> int:
    """One line per merchant healed, each printed as it is done; for every active merchant
    (no MID), a count last. A merchant whose pass failed is named in its line, the rest
    still healed, and the exit status is 1."""
    from esl_sync import admin, runtime
    from esl_sync.settings import settings

    stale_for = None if args.older_than is None else timedelta(seconds=args.older_than)
    outcomes = admin.heal(
        runtime.merchants(),
        runtime.label_ledger(),
        runtime.label_queue(),
        settings(),
        args.merchant_id,
        stale_for,
    )
    healed = refused = 0
    for outcome in outcomes:
        if isinstance(outcome, admin.HealRefused):
            refused += 1
            print(
                f"{outcome.merchant_id}: NOT healed ({printable(outcome.refused)}): its labels"
                " may be partly queued; run the command again",
                flush=True,
            )
            continue
        healed += 1
        print(
            f"{outcome.merchant_id}: queued {outcome.upserts} upsert(s) and"
            f" {outcome.deletes} delete(s) in {outcome.jobs} label job(s)",
            flush=True,
        )
    if args.merchant_id is None:
        print(f"heal: {healed} merchant(s) healed" + (f", {refused} refused" if refused else ""))
    return _refused_tail("heal", refused, "healed")


def labels_verify(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    request = admin.verify_labels(runtime.merchants(), runtime.label_queue(), args.merchant_id)
    print(
        f"verify of {args.merchant_id}'s labels against store {request.store_code} queued;"
        ' the sender logs what it finds ("labels verified against Hipoink")'
    )
    return 0


def redrive(args: argparse.Namespace) -> int:
    """How many messages moved; stopped by a failure, how many moved before it."""
    from esl_sync import admin, runtime

    dead_letters, moved = runtime.dead_letter_queue(args.queue), 0
    said = f"from the {args.queue} dead-letter queue back to its queue"
    try:
        for batch in admin.redrive(dead_letters):
            moved += batch
    except Exception as error:  # the queue's, not one message's: the next batch meets it too
        why = printable(f"{type(error).__name__}: {error}", limit=200)
        print(
            f"esl-sync: redrive: moved {moved} message(s) {said}, then stopped ({why}): the"
            " rest are still dead-lettered; run the command again",
            file=sys.stderr,
        )
        return 1
    print(f"moved {moved} message(s) {said}")
    return 0


def sweep_allow_deletions(args: argparse.Namespace) -> int:
    from esl_sync import runtime
    from esl_sync.allow_deletions import allow_deletions

    merchant = allow_deletions(
        runtime.merchants(), runtime.state_store(), args.merchant_id, datetime.now(UTC)
    )
    print(
        f"{merchant.merchant_id}: its next sweep may remove more than"
        " CLOVER_MAX_DELETE_FRACTION, once; each item only after Clover confirms it deleted"
    )
    return _poll_now(merchant, "may delete past the fraction at its next sweep")


def sweep_withdraw_deletions(args: argparse.Namespace) -> int:
    from esl_sync import runtime
    from esl_sync.allow_deletions import withdraw_deletions

    mid = args.merchant_id
    if withdraw_deletions(runtime.merchants(), runtime.state_store(), mid, datetime.now(UTC)):
        print(f"{mid}: deletions withdrawn; its next sweep is judged by CLOVER_MAX_DELETE_FRACTION")
    else:
        print(f"{mid}: no permission to delete waits; nothing written")
    return 0


def fence_catch_up(args: argparse.Namespace) -> int:
    """One line per merchant Postgres saw a fence for (README, "After restoring the state
    table"), each printed as it is done; then, for every merchant, one line counting them;
    for one without a fence, one line saying so. A merchant whose write failed is named in
    its line, the rest still caught up, and the exit status is 1."""
    from esl_sync import admin, runtime

    ledger, mid = runtime.label_ledger(), args.merchant_id
    done, unfenced = admin.catch_up_fences(runtime.merchants(), ledger, runtime.state_store(), mid)
    kinds: list[str] = []
    for f in done:
        print(f"{printable(f.merchant_id)}: {_fence_caught_up_line(f)}", flush=True)
        kinds.append("refused" if f.count is None else f.count.standing)
    raised, in_step, refused = (kinds.count(k) for k in ("raised", "in step", "refused"))
    if mid is None:
        print(
            f"fence catch-up: {raised} raised, {in_step} in step,"
            f" {len(kinds) - raised - in_step - refused} in another epoch,"
            f" {unfenced} with no fence yet" + (f", {refused} refused" if refused else "")
        )
    elif unfenced:
        print(f"{mid}: no poll wrote under a fence yet: nothing to catch up")
    return _refused_tail("fence catch-up", refused, "caught up")


def _fence_caught_up_line(f: admin.FenceCatchUp) -> str:
    if f.count is None:
        return (
            f"NOT raised ({printable(f.refused or '')}): its polls that write stay refused"
            " until it is; run the command again"
        )
    return _fence_line(f.count, f.seen)


def _fence_line(count: FenceCount, seen: int) -> str:
    nothing = "nothing to raise;"
    accepted = f"which Postgres accepts (Postgres saw {seen})"
    match count.standing:
        case "raised":
            return f"lease generation {count.stored} -> {seen} (Postgres saw {seen})"
        case "in step":
            return f"in step (lease generation {count.stored}, Postgres saw {seen})"
        case "another epoch":
            return (
                f"the state item is in another epoch than Postgres saw: {nothing}"
                f" the next poll writes in the item's epoch (or a new one), {accepted}"
            )
        case "not a count":
            return (
                f"lease generation is not a number (stored as {count.stored}): {nothing}"
                f" the next poll starts a new epoch, {accepted}"
            )
        case "no state item":
            return (
                "no state item (its tokens are gone with it: store them with"
                f" `esl-sync merchants add`): {nothing} its first lease starts a new epoch"
                f" (Postgres saw {seen})"
            )


def restore_catch_up(_args: argparse.Namespace) -> int:
    """After restoring the Postgres database (README, "After restoring the database"): the
    label versions' line, one line per merchant (and state item without one), a count;
    each line printed as soon as it is decided. Merchants that could not be listed (the
    Scan refused): one line saying what was done and what was not, exit 1."""
    from esl_sync import restore, runtime

    directory, states, items = runtime.merchants(), runtime.state_store(), runtime.state_items()
    v = restore.raise_versions(runtime.label_ledger())
    print(_versions_line(v), flush=True)
    raised = "label versions raised" if v.raised_to is not None else "label versions NOT raised"
    try:
        listed = restore.merchants_to_catch_up(directory, items)
    except Exception as error:  # Postgres, or the Scan (a policy without dynamodb:Scan)
        why = printable(f"{type(error).__name__}: {error}", limit=200)
        print(
            f"esl-sync: restore catch-up: {raised} (first line), but the merchants could not"
            f" be listed ({why}): no sweep made due; run the command again (safe: the"
            " versions only move forward)",
            file=sys.stderr,
        )
        return 1
    done = []
    for merchant_id, registered in listed:
        m = restore.catch_up_merchant(states, merchant_id, registered)
        # a state item's key may be anything a hand wrote
        print(f"{printable(m.merchant_id)}: {_restored_line(m)}", flush=True)
        done.append(m)
    missing = sum(not m.registered for m in done)
    refused = sum(m.refused is not None for m in done)
    first_reads = sum(not m.had_cursor and m.refused is None for m in done)
    print(
        f"restore catch-up: {len(done) - refused} sweep(s) due,"
        f" {first_reads} without a cursor,"
        f" {missing} state item(s) without a merchants row"
        + (f", {refused} refused" if refused else "")
    )
    if v.raised_to is None:
        print(f"esl-sync: restore catch-up: {raised} (first line)", file=sys.stderr)
    return _refused_tail("restore catch-up", refused, "caught up") or int(v.raised_to is None)


def _versions_line(v: VersionsRaised) -> str:
    if v.raised_to is None:  # only a clock behind an earlier run's gets here (see README)
        return (
            f"label versions: at {v.before}, ahead of the database server's clock ({v.floor})"
            f" by {(v.before - v.floor) // 1_000_000} s: NOT raised; versions issued before"
            " the restore may be above it. Is the server's clock behind? Set it right and run"
            " the command again"
        )
    return f"label versions: {v.before} -> {v.raised_to}: every version issued before is below"


def _restored_line(m: restore.MerchantCaughtUp) -> str:
    if m.refused is not None:
        return f"sweep NOT due ({printable(m.refused)}); run the command again"
    due = "sweep due" if m.had_cursor else "no cursor, sweep due"
    cursor = f"{due}: its next poll reads the whole catalog and confirms what Clover deleted"
    if m.registered:
        return cursor
    if not inputs.MERCHANT_ID.fullmatch(m.merchant_id):
        return (
            "a state item whose key is not a merchant id (written by hand?): no merchant"
            f" polls it, nothing to add again; {due}"
        )
    return (
        f"a state item but no merchants row (registered after the backup?); {cursor} once it"
        f" is added again: esl-sync merchants add {m.merchant_id} --store-code STORE (its"
        " tokens are kept), or the merchant opens the app again"
    )


def _refused_tail(command: str, refused: int, done: str) -> int:
    """A fleet command's last line when some merchants were refused (each named on its own
    line above): one line on stderr saying so; the exit status (1 if any, else 0)."""
    if refused:
        print(
            f"esl-sync: {command}: {refused} merchant(s) not {done} (named above): run the"
            " command again",
            file=sys.stderr,
        )
    return 1 if refused else 0
