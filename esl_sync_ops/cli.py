"""The ``esl-sync`` command line: the operator's runbook (a stable interface).

Every command works against whatever the environment names (``DATABASE_URL``,
``POLL_QUEUE_URL``, ``STATE_TABLE_NAME``, ``AWS_ENDPOINT_URL``, …), or against a deployed
stack named with ``--stack`` (its outputs fill in what the environment does not say).
Every argument is checked before anything is read or written (:mod:`esl_sync.inputs`):
bad input is one line on stderr and exit status 2; any other failure (Postgres down, no
AWS credentials, KMS refusing) is one line and exit status 1. Never a traceback. One more:
``merchants add``, ``enable`` and ``set-store`` exit 3 when the merchant was saved but its
poll could not be queued (one line; :data:`esl_sync_ops.commands.POLL_NOT_QUEUED`).

Other installed packages may add commands under the same entry point through the entry
point group :data:`COMMAND_PLUGINS` (the development kit adds ``demo``, ``cycle`` and
``bench``, see ``devkit/commands.py``); this package imports none of them.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from importlib.metadata import entry_points
from typing import Any, NoReturn

from esl_sync import inputs
from esl_sync_ops import INTERRUPTED, commands
from esl_sync_ops.terminal import printable

COMMAND_PLUGINS = "esl_sync_ops.commands"
"""Entry point group: each entry is a function that adds its commands to the subparsers
(``add_parser(...).set_defaults(run=..., development=True)``)."""
POLL_INTERVAL_SECONDS = (60, 86_400)
"""``--poll-interval-seconds``: as often as the schedule may run, at most once a day."""
OLDER_THAN_SECONDS = (0, 30 * 86_400)
"""``heal --older-than``: from now to 30 days."""

operator_scope: Callable[[], AbstractContextManager[object]] = nullcontext
"""Entered around every operator command (not the development commands, which run the
functions' own code). The local stack sets it to attribute the command's AWS calls to the
operator's policy for the IAM test (``deploy/iam/operator-policy.json``)."""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while the command line is read and its modules load
        _say_error(INTERRUPTED)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse's own exit: --help (0) or a bad argument (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    from esl_sync.admin import NoStoreCodeError, UnknownMerchantError
    from esl_sync.settings import ConfigurationError

    development = getattr(args, "development", False)
    scope = nullcontext() if development else operator_scope()
    try:
        with scope, nullcontext() if development else _function_lines_off_stdout():
            if args.stack:
                commands.use_stack(args.stack)
            result: int = args.run(args)
    except (
        ConfigurationError,
        UnknownMerchantError,
        NoStoreCodeError,
        inputs.InvalidInput,
    ) as error:
        _say_error(str(error))
        return 2
    except Exception as error:  # one line, never a traceback (see the module docstring)
        _say_error(f"{type(error).__name__}: {error}")
        return 1
    return result


@contextmanager
def _function_lines_off_stdout() -> Iterator[None]:
    """What the functions' code logs for CloudWatch while an operator command runs it
    (``heal`` and ``resync``: "stale labels queued again") is no line of the command's:
    stdout holds only what the command prints (the README's lines, ``--json``). The INFO
    lines are dropped (the command prints its own), a warning or an error goes to stderr."""
    from esl_sync.observability import logger

    streams = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.stream for h in streams]  # not setStream's answer: None when unchanged
    for handler in streams:
        handler.setStream(sys.stderr)
    level = logger.log_level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
        for handler, stream in zip(streams, previous, strict=True):
            handler.setStream(stream)


def _say_error(message: str) -> None:
    print(f"esl-sync: {printable(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse with every error as one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{_both_ends(f'{self.prog}: {message}')}\n")


def _both_ends(text: str, head: int = 200, tail: int = 100) -> str:
    """A long usage error shown by its start and its end: argparse puts the operator's
    value in the middle and what would be right at the end (``invalid choice: '<10 kB>'
    (choose from poll, label)``), which a cut of the tail alone lost."""
    if len(text) <= head + tail:
        return printable(text, head + tail)
    return f"{printable(text[:head], head)}…{printable(text[-tail:], tail)}"


def checked(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from an :mod:`esl_sync.inputs` checker (its message, one line)."""

    def convert(text: str) -> Any:
        try:
            return check(text)
        except inputs.InvalidInput as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = check.__name__
    return convert


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number (ASCII digits) in ``[low, high]``."""

    def convert(text: str) -> int:
        if not re.fullmatch(r"[+-]?[0-9]{1,12}", text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}")
        return int(text)

    return convert


def or_default(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that also takes the word :data:`~esl_sync_ops.commands.DEFAULT`
    (the stack's setting, clearing the merchant's own), exactly so."""

    def either(text: str) -> Any:
        if text == commands.DEFAULT:
            return commands.DEFAULT
        try:
            return convert(text)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{error}, or {commands.DEFAULT}") from None

    either.__name__ = convert.__name__
    return either


MERCHANT_ID = checked(inputs.merchant_id)


def _poll_options(parser: argparse.ArgumentParser) -> None:
    """The merchant's own Clover host and poll interval (``merchants add`` and ``set``)."""
    parser.add_argument(
        "--clover-base-url",
        metavar="URL",
        help="regional Clover API host, if not the default: https://api.eu.clover.com,"
        " https://api.la.clover.com, https://apisandbox.dev.clover.com; 'default': the"
        " stack's (CLOVER_API_BASE_URL)",
    )
    parser.add_argument(
        "--poll-interval-seconds",
        metavar="N",
        type=or_default(int_in(*POLL_INTERVAL_SECONDS)),
        help="poll this merchant less often (60-86400); 'default': every interval"
        " (CLOVER_SYNC_INTERVAL_SECONDS)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="esl-sync", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stack",
        metavar="NAME",
        type=checked(inputs.stack_name),
        help="work against this deployed stack (its outputs)",
    )
    subparsers = parser.add_subparsers(required=True, metavar="COMMAND")

    migrate = subparsers.add_parser("migrate", help="apply the Postgres migrations (DATABASE_URL)")
    migrate.set_defaults(run=commands.migrate)

    merchants = subparsers.add_parser(
        "merchants",
        help="add, set a store code, Clover host or poll interval, list, disable or enable"
        " merchants",
    )
    actions = merchants.add_subparsers(required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register a merchant and store its Clover token")
    add.add_argument("merchant_id", type=MERCHANT_ID)
    add.add_argument(
        "--store-code",
        required=True,
        type=checked(inputs.store_code),
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
    _poll_options(add)
    add.set_defaults(run=commands.merchants_add)
    options = actions.add_parser(
        "set",
        help="change a merchant's own Clover host or poll interval ('default': the stack's);"
        " nothing else",
    )
    options.add_argument("merchant_id", type=MERCHANT_ID)
    _poll_options(options)
    options.set_defaults(run=commands.merchants_set)
    set_store = actions.add_parser(
        "set-store",
        help="give a merchant its Hipoink store code (one that installed the app and awaits"
        " it, or one that will: kept for its install)",
    )
    set_store.add_argument("merchant_id", type=MERCHANT_ID)
    set_store.add_argument(
        "store", type=checked(inputs.store_code), help="1-32 of A-Z a-z 0-9 - _ ."
    )
    set_store.set_defaults(run=commands.merchants_set_store)
    listing = actions.add_parser("list", help="list merchants")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=commands.merchants_list)
    for name, active in (("disable", False), ("enable", True)):
        toggle = actions.add_parser(
            name,
            help=f"{name} polling of a merchant" + ("; queues one poll at once" if active else ""),
        )
        toggle.add_argument("merchant_id", type=MERCHANT_ID)
        toggle.set_defaults(run=commands.merchants_toggle, active=active)

    status = subparsers.add_parser("status", help="per merchant: cursor, last success, lag, labels")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--labels",
        metavar="MERCHANT",
        type=MERCHANT_ID,
        help="instead: that merchant's stale labels, each with its last failure",
    )
    status.set_defaults(run=commands.status)

    poll = subparsers.add_parser("poll", help="poll one merchant now, outside the schedule")
    poll.add_argument("merchant_id", type=MERCHANT_ID)
    poll.set_defaults(run=commands.poll)

    resync = subparsers.add_parser(
        "resync", help="re-read a merchant's whole catalog and send every label again"
    )
    resync.add_argument("merchant_id", type=MERCHANT_ID)
    resync.set_defaults(run=commands.resync)

    stores = subparsers.add_parser("stores", help="lift a store's Hipoink configuration block")
    store_actions = stores.add_subparsers(required=True, metavar="ACTION")
    unblock = store_actions.add_parser(
        "unblock", help="send to the merchant's store again (after fixing sign or store code)"
    )
    unblock.add_argument("merchant_id", type=MERCHANT_ID)
    unblock.set_defaults(run=commands.stores_unblock)

    heal = subparsers.add_parser(
        "heal", help="queue again the labels stale for longer than LABEL_HEAL_AFTER_SECONDS"
    )
    heal.add_argument(
        "merchant_id", nargs="?", type=MERCHANT_ID, help="one merchant (default: every active one)"
    )
    heal.add_argument(
        "--older-than",
        type=int_in(*OLDER_THAN_SECONDS),
        metavar="SECONDS",
        help="override LABEL_HEAL_AFTER_SECONDS (0-2592000)",
    )
    heal.set_defaults(run=commands.heal)

    labels = subparsers.add_parser("labels", help="verify a merchant's labels against Hipoink")
    label_actions = labels.add_subparsers(required=True, metavar="ACTION")
    verify = label_actions.add_parser(
        "verify",
        help="compare what Hipoink holds with what it acknowledged; the next poll re-sends"
        " the labels that differ",
    )
    verify.add_argument("merchant_id", type=MERCHANT_ID)
    verify.set_defaults(run=commands.labels_verify)

    sweep = subparsers.add_parser("sweep", help="the deletion sweep's refusal rule")
    sweep_actions = sweep.add_subparsers(required=True, metavar="ACTION")
    allow = sweep_actions.add_parser(
        "allow-deletions",
        help="the merchant really deleted that many items: let its next sweep remove more than"
        " CLOVER_MAX_DELETE_FRACTION once (each still confirmed by Clover) and queue a poll",
    )
    allow.add_argument("merchant_id", type=MERCHANT_ID)
    allow.set_defaults(run=commands.sweep_allow_deletions)
    withdraw = sweep_actions.add_parser(
        "withdraw-deletions",
        help="take a waiting allow-deletions back: the next sweep is judged by"
        " CLOVER_MAX_DELETE_FRACTION again",
    )
    withdraw.add_argument("merchant_id", type=MERCHANT_ID)
    withdraw.set_defaults(run=commands.sweep_withdraw_deletions)

    fence = subparsers.add_parser("fence", help="the poll lease's fence (after a state restore)")
    fence_actions = fence.add_subparsers(required=True, metavar="ACTION")
    catch_up = fence_actions.add_parser(
        "catch-up",
        help="raise the state table's lease generations to those Postgres saw (after"
        " restoring the state table: until then every poll that writes is refused)",
    )
    catch_up.add_argument(
        "merchant_id", nargs="?", type=MERCHANT_ID, help="one merchant (default: every one)"
    )
    catch_up.set_defaults(run=commands.fence_catch_up)

    restore = subparsers.add_parser(
        "restore", help="catch up after restoring the Postgres database from a backup"
    )
    restore_actions = restore.add_subparsers(required=True, metavar="ACTION")
    restore_actions.add_parser(
        "catch-up",
        help="move the label versions past every one issued before the restore and have every"
        " merchant sweep its catalog at its next poll; name the state items without a merchant",
    ).set_defaults(run=commands.restore_catch_up)

    redrive = subparsers.add_parser(
        "redrive", help="move dead-lettered messages back to their queue"
    )
    redrive.add_argument("--queue", required=True, choices=("label", "poll"))
    redrive.set_defaults(run=commands.redrive)
    for plugin in entry_points(group=COMMAND_PLUGINS):
        plugin.load()(subparsers)
    return parser


if __name__ == "__main__":
    sys.exit(main())
