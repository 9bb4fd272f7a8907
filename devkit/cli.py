"""The ``esl-sync`` command line (a stable interface: see DESIGN.md).

Every command but ``demo`` works against whatever the environment names (``DATABASE_URL``,
``POLL_QUEUE_URL``, ``STATE_TABLE_NAME``, ``AWS_ENDPOINT_URL``, …), or against a deployed
stack named with ``--stack`` (its outputs fill in what the environment does not say).
Errors are one line naming what is wrong, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devkit.aws_calls import OPERATOR, running

if TYPE_CHECKING:
    from esl_sync.clover.oauth import CloverTokens

# Stack output → the setting it provides (see template.yaml, Outputs).
STACK_OUTPUTS = {
    "PollQueueUrl": "POLL_QUEUE_URL",
    "LabelQueueUrl": "LABEL_QUEUE_URL",
    "StateTableName": "STATE_TABLE_NAME",
    "StateKeyArn": "STATE_KEY_ID",
    "DatabaseUrlSecretArn": "DATABASE_URL_SECRET_ARN",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from esl_sync.admin import UnknownMerchantError
    from esl_sync.settings import ConfigurationError

    # Its AWS calls are the operator's (deploy/iam/operator-policy.json; devkit/aws_calls.py)
    # but for the commands that run the functions' code or a local stack of their own.
    owner = nullcontext() if args.run in (_demo, _bench, _cycle) else running(OPERATOR)
    try:
        with owner:
            if args.stack:
                _use_stack(args.stack)
            result: int = args.run(args)
    except (ConfigurationError, UnknownMerchantError) as error:
        print(f"esl-sync: {error}", file=sys.stderr)
        return 2
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esl-sync", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stack", metavar="NAME", help="work against this deployed stack (its outputs)"
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole system locally and check the labels")
    demo.set_defaults(run=_demo)

    migrate = commands.add_parser("migrate", help="apply the Postgres migrations (DATABASE_URL)")
    migrate.set_defaults(run=_migrate)

    merchants = commands.add_parser("merchants", help="add, list, disable or enable merchants")
    actions = merchants.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a merchant and store its Clover token")
    add.add_argument("merchant_id")
    add.add_argument("--store-code", required=True, help="the Hipoink store of its labels")
    token_source = add.add_mutually_exclusive_group()
    token_source.add_argument(
        "--token-stdin",
        action="store_true",
        help="read a plain Clover token (sandbox or legacy) from standard input (kept out of"
        " shell history)",
    )
    token_source.add_argument(
        "--token-pair-stdin",
        action="store_true",
        help="read a v2 token pair from standard input: the JSON Clover's /oauth/v2/token"
        " returns (access_token, access_token_expiration, refresh_token,"
        " refresh_token_expiration)",
    )
    add.add_argument("--clover-base-url", help="regional Clover API host, if not the default")
    add.add_argument("--poll-interval-seconds", type=int, help="poll this merchant less often")
    add.set_defaults(run=_merchants_add)
    listing = actions.add_parser("list", help="list merchants")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_merchants_list)
    for name, active in (("disable", False), ("enable", True)):
        toggle = actions.add_parser(name, help=f"{name} polling of a merchant")
        toggle.add_argument("merchant_id")
        toggle.set_defaults(run=_merchants_toggle, active=active)

    cycle = commands.add_parser(
        "cycle", help="dispatcher → poll queue → poller → label queue → sender, once"
    )
    cycle.set_defaults(run=_cycle)

    status = commands.add_parser("status", help="per merchant: cursor, last success, lag, labels")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--labels",
        metavar="MERCHANT",
        help="instead: that merchant's stale labels, each with its last failure",
    )
    status.set_defaults(run=_status)

    poll = commands.add_parser("poll", help="poll one merchant now, outside the schedule")
    poll.add_argument("merchant_id")
    poll.set_defaults(run=_poll)

    resync = commands.add_parser(
        "resync", help="re-read a merchant's whole catalog and send every label again"
    )
    resync.add_argument("merchant_id")
    resync.set_defaults(run=_resync)

    stores = commands.add_parser("stores", help="lift a store's Hipoink configuration block")
    store_actions = stores.add_subparsers(required=True, metavar="ACTION")
    unblock = store_actions.add_parser(
        "unblock", help="send to the merchant's store again (after fixing sign or store code)"
    )
    unblock.add_argument("merchant_id")
    unblock.set_defaults(run=_stores_unblock)

    heal = commands.add_parser(
        "heal", help="queue again the labels stale for longer than LABEL_HEAL_AFTER_SECONDS"
    )
    heal.add_argument("merchant_id", nargs="?", help="one merchant (default: every active one)")
    heal.add_argument(
        "--older-than", type=int, metavar="SECONDS", help="override LABEL_HEAL_AFTER_SECONDS"
    )
    heal.set_defaults(run=_heal)

    bench = commands.add_parser(
        "bench", help="measure a poll's cost on the local stack (prints a table of figures)"
    )
    bench.add_argument("--merchants", type=int, default=50, help="merchants (default 50)")
    bench.add_argument("--skus", type=int, default=2000, help="SKUs each (default 2000)")
    bench.add_argument(
        "--idle-merchants", type=int, default=1000, help="mostly idle run (default 1000; 0: skip)"
    )
    bench.add_argument("--no-build", action="store_true", help="skip sam build (sizes)")
    bench.add_argument("--json", type=Path, help="also write the figures to this file")
    bench.set_defaults(run=_bench)

    redrive = commands.add_parser("redrive", help="move dead-lettered messages back to their queue")
    redrive.add_argument("--queue", required=True, choices=("label", "poll"))
    redrive.set_defaults(run=_redrive)
    return parser


def _use_stack(name: str) -> None:
    """Fill the environment from a stack's outputs; what is set explicitly wins."""
    import os

    from esl_sync import runtime
    from esl_sync.store.stack import stack_outputs

    outputs = stack_outputs(name)
    for output, variable in STACK_OUTPUTS.items():
        if output in outputs:
            os.environ.setdefault(variable, outputs[output])
    runtime.reset()


def _poll(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    admin.request_poll(runtime.merchants(), runtime.poll_queue(), args.merchant_id)
    print(f"poll of {args.merchant_id} queued")
    return 0


def _resync(args: argparse.Namespace) -> int:
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
    print(
        f"{args.merchant_id}: cursor reset, {outcome.upserts} label(s) and {outcome.deletes}"
        " delete(s) queued, full re-read queued"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from devkit.bench import run_from_args

    return run_from_args(args)


def _demo(_args: argparse.Namespace) -> int:
    from devkit.demo import main as demo_main

    return demo_main()


def _migrate(_args: argparse.Namespace) -> int:
    from esl_sync import runtime
    from esl_sync.store.schema import apply_migrations

    applied = apply_migrations(runtime.database_url())
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def _merchants_add(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime
    from esl_sync.store.interfaces import Merchant

    try:
        token = _token_from_stdin(args)
    except ValueError as error:
        print(f"esl-sync: {error}", file=sys.stderr)
        return 2
    merchant = Merchant(
        merchant_id=args.merchant_id,
        store_code=args.store_code,
        clover_base_url=args.clover_base_url,
        poll_interval_seconds=args.poll_interval_seconds,
    )
    admin.add_merchant(runtime.merchants(), runtime.state_store(), merchant, token)
    kind = " with its token pair" if args.token_pair_stdin else " with its token" if token else ""
    print(f"merchant {merchant.merchant_id} saved{kind}")
    return 0


def _token_from_stdin(args: argparse.Namespace) -> str | CloverTokens | None:
    """The token an operator pipes in (never an argument: shell history keeps those)."""
    from esl_sync.clover.oauth import CloverTokens

    if args.token_pair_stdin:
        pair = CloverTokens.parse(sys.stdin.read(), "token pair on standard input")
        if pair.refresh_token is None:
            raise ValueError(
                "token pair on standard input: no refresh_token (plain token: use --token-stdin)"
            )
        return pair
    if args.token_stdin:
        token = sys.stdin.readline().strip()
        if not token:
            raise ValueError("no token on standard input")
        return token
    return None


def _merchants_list(args: argparse.Namespace) -> int:
    from esl_sync import runtime

    rows = [vars(m) for m in runtime.merchants().all()]
    _print_rows(rows, args.json)
    return 0


def _merchants_toggle(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    merchant = admin.set_active(runtime.merchants(), args.merchant_id, args.active)
    print(f"merchant {merchant.merchant_id} {'enabled' if merchant.active else 'disabled'}")
    return 0


def _cycle(_args: argparse.Namespace) -> int:
    import boto3

    from devkit.lambda_runner import FunctionRunner
    from esl_sync.settings import settings

    s = settings()
    s.require("poll_queue_url", "label_queue_url")
    assert s.poll_queue_url is not None
    assert s.label_queue_url is not None
    runner = FunctionRunner(boto3.client("sqs"))
    dispatched = runner.invoke("dispatcher", {"reason": "manual"})
    polls = runner.drain(s.poll_queue_url, "poller")
    labels = runner.drain(s.label_queue_url, "hipoink_sender")
    print(
        f"dispatched {dispatched['dispatched']}; polls {polls.records} ({polls.failures} failed);"
        f" label jobs {labels.records} ({labels.failures} failed)"
    )
    return 1 if polls.failures or labels.failures else 0


def _status(args: argparse.Namespace) -> int:
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
        f" {sum(not r['fresh'] for r in active)} not fresh,"
        f" {sum(r['auth'] == 'needs_reauth' for r in active)} need re-auth,"
        f" {sum(bool(r['stale_labels']) for r in active)} with stale labels,"
        f" {sum(bool(r['store_blocked']) for r in active)} blocked by Hipoink"
        f" — as of {now:%Y-%m-%d %H:%M:%S}Z",
        file=sys.stderr if args.json else sys.stdout,
    )
    verification = runtime.state_store().last_verification_code()
    if verification:
        code, received = verification
        print(
            f"last Clover webhook verification code: {code}"
            f" (received {received:%Y-%m-%d %H:%M:%S}Z)",
            file=sys.stderr if args.json else sys.stdout,
        )
    _print_rows(rows, args.json)
    return 0


def _stale_labels(merchant_id: str, as_json: bool) -> int:
    from esl_sync import admin, runtime

    labels = admin.stale_labels(runtime.merchants(), runtime.label_ledger(), merchant_id)
    print(
        f"{merchant_id}: {len(labels)} stale label(s)", file=sys.stderr if as_json else sys.stdout
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
    ]
    if rows or as_json:
        _print_rows(rows, as_json)
    return 0


def _stores_unblock(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    if admin.unblock_store(runtime.merchants(), runtime.label_ledger(), args.merchant_id):
        print(
            f"store of {args.merchant_id} unblocked; its stale labels are re-sent by the next"
            f" heal (now: esl-sync heal {args.merchant_id} --older-than 0)"
        )
    else:
        print(f"store of {args.merchant_id} was not blocked")
    return 0


def _heal(args: argparse.Namespace) -> int:
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
    for outcome in outcomes:
        print(
            f"{outcome.merchant_id}: queued {outcome.upserts} upsert(s) and"
            f" {outcome.deletes} delete(s) in {outcome.jobs} label job(s)"
        )
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from esl_sync import admin, runtime

    moved = admin.redrive(runtime.dead_letter_queue(args.queue))
    print(f"moved {moved} message(s) from the {args.queue} dead-letter queue back to its queue")
    return 0


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns))


def _cell(value: object) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return "-" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
