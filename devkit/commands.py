"""The development commands of ``esl-sync``: ``demo``, ``cycle`` and ``bench``.

They run the functions' own code on this machine (the local stack, or the handlers in
this process), so they live with the development kit; the operator's CLI
(:mod:`esl_sync_ops.cli`) does not import them: pyproject.toml registers :func:`register`
in its entry point group ``esl_sync_ops.commands``. Their modules are imported only when
the command runs (the local stack needs moto and an embedded PostgreSQL).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from esl_sync.inputs import InvalidInput
from esl_sync_ops.cli import int_in

# devkit.lambda_runner.FUNCTIONS' names (not imported here: it loads boto3 for every command)
FUNCTION_NAMES = ("dispatcher", "poller", "hipoink_sender", "migrator", "webhook", "onboarding")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the development commands to ``esl-sync``'s parser."""
    demo = subparsers.add_parser("demo", help="run the whole system locally and check the labels")
    demo.set_defaults(run=_demo, development=True)

    cycle = subparsers.add_parser(
        "cycle", help="dispatcher → poll queue → poller → label queue → sender, once"
    )
    cycle.set_defaults(run=_cycle, development=True)

    bench = subparsers.add_parser(
        "bench", help="measure a poll's cost on the local stack (prints a table of figures)"
    )
    bench.add_argument(
        "--merchants",
        type=int_in(1, 10_000),
        default=_BENCH_DEFAULTS["merchants"],
        help="merchants (default 50)",
    )
    bench.add_argument(
        "--skus",
        type=int_in(1, 100_000),
        default=_BENCH_DEFAULTS["skus"],
        help="SKUs each (default 2000)",
    )
    bench.add_argument(
        "--idle-merchants",
        type=int_in(0, 100_000),
        default=_BENCH_DEFAULTS["idle_merchants"],
        help="mostly idle run (default 1000; 0: skip)",
    )
    bench.add_argument(
        "--no-build",
        action="store_true",
        help="skip the builds (sizes; cold starts use the layer as installed here)",
    )
    modes = bench.add_mutually_exclusive_group()  # one quick run at a time, or the full one
    modes.add_argument(
        "--cold-start-only",
        action="store_true",
        help="only the cold starts of --function (default: the poller), no polls",
    )
    bench.add_argument(
        "--function",
        action="append",
        choices=FUNCTION_NAMES,
        help="with --cold-start-only: a function to start (repeatable)",
    )
    bench.add_argument(
        "--runs",
        type=int_in(1, 100),
        default=_BENCH_DEFAULTS["runs"],
        help="fresh processes per function for --cold-start-only (default 5; median)",
    )
    modes.add_argument(
        "--batch-peak",
        action="store_true",
        help="only the poller's peak memory over five first syncs of --skus items each",
    )
    modes.add_argument(
        "--cpu-only",
        action="store_true",
        help="only a first sync and idle polls: the two CPU figures, quickly",
    )
    modes.add_argument(
        "--stages",
        action="store_true",
        help="only a first sync, its CPU split by stage (transform, upsert, pages, …)",
    )
    bench.add_argument("--json", type=Path, help="also write the figures to this file")
    bench.set_defaults(run=_bench, development=True)


def _demo(_args: argparse.Namespace) -> int:
    from devkit.demo import main as demo_main

    return demo_main()


BENCH_RUN_OPTIONS: dict[str, frozenset[str]] = {
    "cold_start_only": frozenset({"function", "runs", "no_build", "json"}),
    "batch_peak": frozenset({"skus"}),
    "cpu_only": frozenset({"merchants", "skus"}),
    "stages": frozenset({"merchants", "skus", "json"}),
    "": frozenset({"merchants", "skus", "idle_merchants", "no_build", "json"}),  # the full run
}
"""The options each run reads (its mode flag apart): another one given is refused, never
silently dropped (``--json`` with ``--cpu-only`` writing nothing would look like a run
that wrote no figures)."""
_BENCH_DEFAULTS: dict[str, Any] = {
    "merchants": 50,
    "skus": 2000,
    "idle_merchants": 1000,
    "no_build": False,
    "function": None,
    "runs": 5,
    "json": None,
}


def _bench(args: argparse.Namespace) -> int:
    mode = next((m for m in BENCH_RUN_OPTIONS if m and getattr(args, m)), "")
    unread = sorted(
        name
        for name, default in _BENCH_DEFAULTS.items()
        if getattr(args, name) != default and name not in BENCH_RUN_OPTIONS[mode]
    )
    if unread:
        given = ", ".join(f"--{name.replace('_', '-')}" for name in unread)
        run = f"--{mode.replace('_', '-')}" if mode else "the full run"
        raise InvalidInput(f"bench: {run} does not use {given}")
    from devkit.bench import run_from_args

    return run_from_args(args)


def _cycle(_args: argparse.Namespace) -> int:
    """dispatcher → poll queue → poller → label queue → sender, once, in this process,
    against whatever the environment names (the handlers' AWS calls are theirs)."""
    import boto3

    from devkit.lambda_runner import FunctionRunner
    from esl_sync.settings import settings

    s = settings()
    s.require("poll_queue_url", "label_queue_url")
    runner = FunctionRunner(boto3.client("sqs"))
    dispatched = runner.invoke("dispatcher", {"reason": "manual"})
    polls = runner.drain(s.required("poll_queue_url"), "poller")
    labels = runner.drain(s.required("label_queue_url"), "hipoink_sender")
    print(
        f"dispatched {dispatched['dispatched']}; polls {polls.records} ({polls.failures} failed);"
        f" label jobs {labels.records} ({labels.failures} failed)"
    )
    return 1 if polls.failures or labels.failures else 0
