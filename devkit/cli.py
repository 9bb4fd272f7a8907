"""The ``esl-sync`` command line (a stable interface: the README's "Command line").

Every command but ``demo`` works against whatever the environment names (``DATABASE_URL``,
``POLL_QUEUE_URL``, ``STATE_TABLE_NAME``, ``AWS_ENDPOINT_URL``, …), or against a deployed
stack named with ``--stack`` (its outputs fill in what the environment does not say).
Every argument is checked before anything is read or written (:mod:`esl_sync.inputs`):
bad input is one line on stderr and exit status 2; any other failure (Postgres down, no
AWS credentials, KMS refusing) is one line and exit status 1. Never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from devkit.aws_calls import OPERATOR, running
from esl_sync import inputs

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


POLL_INTERVAL_SECONDS = (60, 86_400)
"""``--poll-interval-seconds``: as often as the schedule may run, at most once a day."""
OLDER_THAN_SECONDS = (0, 30 * 86_400)
"""``heal --older-than``: from now to 30 days."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse's own exit: --help (0) or a bad argument (2)
        return exit_.code if isinstance(exit_.code, int) else 2
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
    except (ConfigurationError, UnknownMerchantError, inputs.InvalidInput) as error:
        _say_error(str(error))
        return 2
    except KeyboardInterrupt:
        _say_error("interrupted")
        return 130
    except Exception as error:  # one line, never a traceback (see the module docstring)
        _say_error(f"{type(error).__name__}: {error}")
        return 1
    return result


def printable(text: str, limit: int = 300) -> str:
    """Text safe for a terminal: every character that is not printable (control
    characters, escapes, lone surrogates, line breaks) escaped; long text cut short."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
    return shown + ("…" if len(text) > limit else "")


def _say_error(message: str) -> None:
    print(f"esl-sync: {printable(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with every error as one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{printable(f'{self.prog}: {message}')}\n")


def _checked(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from an :mod:`esl_sync.inputs` checker (its message, one line)."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except inputs.InvalidInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = check.__name__
    return convert


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number (ASCII digits) in ``[low, high]``."""

    def convert(text: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]{1,12}", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}")
        return int(text)

    return convert


def _local_aws(args: argparse.Namespace) -> bool:
    """Whether AWS itself is on loopback (the local stack points ``AWS_ENDPOINT_URL`` at
    moto there): only then may a merchant's Clover URL be a loopback simulator."""
    url = os.environ.get("AWS_ENDPOINT_URL")
    try:
        return not args.stack and bool(url) and urlsplit(url).hostname in inputs.LOOPBACK_HOSTS
    except ValueError:
        return False


MERCHANT_ID = _checked(inputs.merchant_id)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esl-sync", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stack",
        metavar="NAME",
        type=_checked(inputs.stack_name),
        help="work against this deployed stack (its outputs)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole system locally and check the labels")
    demo.set_defaults(run=_demo)

    migrate = commands.add_parser("migrate", help="apply the Postgres migrations (DATABASE_URL)")
    migrate.set_defaults(run=_migrate)

    merchants = commands.add_parser("merchants", help="add, list, disable or enable merchants")
    actions = merchants.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a merchant and store its Clover token")
    add.add_argument("merchant_id", type=MERCHANT_ID)
    add.add_argument(
        "--store-code",
        required=True,
        type=_checked(inputs.store_code),
        help="the Hipoink store of its labels (1-32 of A-Z a-z 0-9 - _ .)",
    )
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
    add.add_argument(
        "--clover-base-url",
        help="regional Clover API host, if not the default: https://api.eu.clover.com,"
        " https://api.la.clover.com, https://apisandbox.dev.clover.com",
    )
    add.add_argument(
        "--poll-interval-seconds",
        type=_int_in(*POLL_INTERVAL_SECONDS),
        help="poll this merchant less often (60-86400)",
    )
    add.set_defaults(run=_merchants_add)
    listing = actions.add_parser("list", help="list merchants")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_merchants_list)
    for name, active in (("disable", False), ("enable", True)):
        toggle = actions.add_parser(name, help=f"{name} polling of a merchant")
        toggle.add_argument("merchant_id", type=MERCHANT_ID)
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
        type=MERCHANT_ID,
        help="instead: that merchant's stale labels, each with its last failure",
    )
    status.set_defaults(run=_status)

    poll = commands.add_parser("poll", help="poll one merchant now, outside the schedule")
    poll.add_argument("merchant_id", type=MERCHANT_ID)
    poll.set_defaults(run=_poll)

    resync = commands.add_parser(
        "resync", help="re-read a merchant's whole catalog and send every label again"
    )
    resync.add_argument("merchant_id", type=MERCHANT_ID)
    resync.set_defaults(run=_resync)

    stores = commands.add_parser("stores", help="lift a store's Hipoink configuration block")
    store_actions = stores.add_subparsers(required=True, metavar="ACTION")
    unblock = store_actions.add_parser(
        "unblock", help="send to the merchant's store again (after fixing sign or store code)"
    )
    unblock.add_argument("merchant_id", type=MERCHANT_ID)
    unblock.set_defaults(run=_stores_unblock)

    heal = commands.add_parser(
        "heal", help="queue again the labels stale for longer than LABEL_HEAL_AFTER_SECONDS"
    )
    heal.add_argument(
        "merchant_id", nargs="?", type=MERCHANT_ID, help="one merchant (default: every active one)"
    )
    heal.add_argument(
        "--older-than",
        type=_int_in(*OLDER_THAN_SECONDS),
        metavar="SECONDS",
        help="override LABEL_HEAL_AFTER_SECONDS (0-2592000)",
    )
    heal.set_defaults(run=_heal)

    bench = commands.add_parser(
        "bench", help="measure a poll's cost on the local stack (prints a table of figures)"
    )
    bench.add_argument(
        "--merchants", type=_int_in(1, 10_000), default=50, help="merchants (default 50)"
    )
    bench.add_argument(
        "--skus", type=_int_in(1, 100_000), default=2000, help="SKUs each (default 2000)"
    )
    bench.add_argument(
        "--idle-merchants",
        type=_int_in(0, 100_000),
        default=1000,
        help="mostly idle run (default 1000; 0: skip)",
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
    """Every input is checked first; then the token is encrypted, then written with the
    row (:func:`esl_sync.admin.add_merchant`): a refusal anywhere leaves nothing written."""
    from esl_sync import admin, runtime
    from esl_sync.store.interfaces import Merchant

    clover_base_url = (
        inputs.clover_base_url(args.clover_base_url, allow_loopback=_local_aws(args))
        if args.clover_base_url is not None
        else None
    )
    token = _token_from_stdin(args)
    merchant = Merchant(
        merchant_id=args.merchant_id,
        store_code=args.store_code,
        clover_base_url=clover_base_url,
        poll_interval_seconds=args.poll_interval_seconds,
    )
    admin.add_merchant(runtime.merchants(), runtime.state_store(), merchant, token)
    kind = " with its token pair" if args.token_pair_stdin else " with its token" if token else ""
    print(f"merchant {merchant.merchant_id} saved{kind}")
    return 0


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
        f" {sum(bool(r['refused_items']) for r in active)} with refused items,"
        f" {sum(bool(r['label_conflicts']) for r in active)} with product code conflicts,"
        f" {sum(bool(r['store_blocked']) for r in active)} blocked by Hipoink"
        f" — as of {now:%Y-%m-%d %H:%M:%S}Z",
        file=sys.stderr if args.json else sys.stdout,
    )
    codes = runtime.state_store().verification_codes()
    for number, received in enumerate(codes):
        print(
            f"{'last' if number == 0 else '   earlier'} Clover webhook verification code:"
            f" {printable(received.code)} (received {received.received_at:%Y-%m-%d %H:%M:%S}Z"
            f" from {printable(received.source_ip or 'an unknown address')})",
            file=sys.stderr if args.json else sys.stdout,
        )
    _print_rows(rows, args.json)
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
        _print_rows(rows, as_json)
        return 0
    if rows:
        _print_rows(rows, as_json)
    print(
        f"{merchant_id}: {len(refused)} refused item(s) (each label keeps its last accepted"
        " version until the item is fixed in Clover)"
    )
    if refused:
        _print_rows(
            [
                {"item_id": r.item_id, "pc": r.pc, "name": r.name, "since": r.since}
                | {"label": "kept" if r.label_kept else "none", "problem": r.problem}
                for r in refused
            ],
            as_json,
        )
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
    """One table cell: what Clover, Hipoink or a webhook sent is escaped for the terminal."""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return "-" if value is None else printable(str(value), limit=120)


if __name__ == "__main__":
    sys.exit(main())
