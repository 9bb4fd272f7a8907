"""Bad input to the real ``esl-sync`` command line (issue 11, part 7), against a local stack:
every bad argument or token is one line on stderr and exit status 2, and nothing is
written; every other failure is one line and exit status 1; never a traceback."""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
from collections.abc import Iterator

import boto3
import psycopg
import pytest

from devkit.aws_calls import unrecorded
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT
from esl_sync import runtime
from esl_sync_ops.cli import main

MID = "MCLIBAD00001"
ADD = ["merchants", "add", MID, "--store-code", "STORE-1"]
TOKEN = ["--token-stdin"]
PAIR = ["--token-pair-stdin"]
GOOD_PAIR = (
    b'{"access_token": "acc-1", "access_token_expiration": 1800000000,'
    b' "refresh_token": "ref-1", "refresh_token_expiration": 1900000000}'
)

# (what, argv, standard input): each one bad in exactly one way.
BAD_MERCHANTS_ADD: list[tuple[str, list[str], bytes]] = [
    # merchant ids
    *[
        (f"merchant id {name}", ["merchants", "add", bad, "--store-code", "S1", *TOKEN], b"t\n")
        for name, bad in [
            ("with NUL", "MCLI\x00BAD"),
            ("unicode", "MÉRCHANT0001"),
            ("lone surrogate", "MCLI\udcffBAD"),
            ("too long", "M" * 65),
            ("empty", ""),
            ("shell ;", "MCLI;rm -rf /"),
            ("shell $()", "MCLI$(id)"),
            ("shell backticks", "MCLI`id`"),
            ("shell pipe", "MCLI|cat"),
            ("quote", "MCLI'BAD"),
            ("newline", "MCLI\nBAD"),
            ("terminal escape", "\x1b[2JMCLI"),
            ("space", "MCLI BAD"),
            ("leading dash", "-MCLIBAD"),
        ]
    ],
    # store codes
    *[
        (f"store code {name}", ["merchants", "add", MID, "--store-code", bad, *TOKEN], b"t\n")
        for name, bad in [
            ("double quote", 'STORE"1'),
            ("single quote", "STORE'1"),
            ("newline", "STORE\n1"),
            ("carriage return", "STORE\r1"),
            ("terminal escape", "\x1b]0;pwned\x07STORE"),
            ("10 KB", "S" * 10_240),
            ("33 characters", "S" * 33),
            ("empty", ""),
            ("space", "STORE 1"),
            ("unicode", "STÖRE"),
            ("NUL", "STORE\x001"),
            ("leading dot", ".STORE"),
            ("slash", "STORE/1"),
        ]
    ],
    # plain tokens
    ("empty token", [*ADD, *TOKEN], b""),
    ("blank token lines", [*ADD, *TOKEN], b"\n \n\t\n"),
    ("huge token", [*ADD, *TOKEN], b"t" * 100_000),
    ("token over KMS's 4 KB", [*ADD, *TOKEN], b"t" * 5_000 + b"\n"),
    ("non-UTF-8 token", [*ADD, *TOKEN], b"tok\xff\xfeen\n"),
    ("token with NUL", [*ADD, *TOKEN], b"tok\x00en\n"),
    ("token with a space", [*ADD, *TOKEN], b"tok en\n"),
    ("token with an escape", [*ADD, *TOKEN], b"tok\x1b[2Jen\n"),
    ("unicode token", [*ADD, *TOKEN], "tökén\n".encode()),
    ("two token lines", [*ADD, *TOKEN], b"one\ntwo\n"),
    ("a JSON pair to --token-stdin", [*ADD, *TOKEN], GOOD_PAIR),
    # token pairs
    ("pair not JSON", [*ADD, *PAIR], b"not json"),
    ("pair empty", [*ADD, *PAIR], b""),
    ("pair a list", [*ADD, *PAIR], b"[]"),
    ("pair without refresh token", [*ADD, *PAIR], b'{"access_token": "a"}'),
    ("pair with empty access token", [*ADD, *PAIR], b'{"access_token": "", "refresh_token": "r"}'),
    ("pair token with space", [*ADD, *PAIR], b'{"access_token": "a b", "refresh_token": "r"}'),
    ("pair token with NUL", [*ADD, *PAIR], b'{"access_token": "a\\u0000", "refresh_token": "r"}'),
    ("pair lone surrogate", [*ADD, *PAIR], b'{"access_token": "\\ud800", "refresh_token": "r"}'),
    ("pair tokens wrong type", [*ADD, *PAIR], b'{"access_token": 5, "refresh_token": ["r"]}'),
    (
        "pair expiration negative",
        [*ADD, *PAIR],
        b'{"access_token": "a", "refresh_token": "r", "access_token_expiration": -1}',
    ),
    (
        "pair expiration 5000 digits",
        [*ADD, *PAIR],
        b'{"access_token": "a", "refresh_token": "r", "access_token_expiration": '
        + b"9" * 5_000
        + b"}",
    ),
    (
        "pair expiration in milliseconds of year 10^6",
        [*ADD, *PAIR],
        b'{"access_token": "a", "refresh_token": "r", "refresh_token_expiration": 10e14}',
    ),
    ("pair nested 30,000 deep", [*ADD, *PAIR], b"[" * 30_000 + b"]" * 30_000),
    ("pair nested 100,000 deep", [*ADD, *PAIR], b"[" * 100_000 + b"]" * 100_000),
    ("pair non-UTF-8", [*ADD, *PAIR], b'{"access_token": "a\xff", "refresh_token": "r"}'),
    ("pair over 64 KiB", [*ADD, *PAIR], b'{"access_token": "' + b"a" * 70_000 + b'"}'),
    (
        "pair over KMS's 4 KB",
        [*ADD, *PAIR],
        b'{"access_token": "' + b"a" * 3_000 + b'", "refresh_token": "' + b"r" * 3_000 + b'"}',
    ),
    ("both token flags", [*ADD, *TOKEN, *PAIR], b"t\n"),
    # Clover URLs
    *[
        (f"URL {bad!r}", [*ADD, *TOKEN, "--clover-base-url", bad], b"t\n")
        for bad in [
            "http://169.254.169.254",
            "http://169.254.169.254/latest/meta-data/iam/",
            "https://169.254.169.254",
            "http://[fd00:ec2::254]",
            "ftp://api.clover.com",
            "file:///etc/passwd",
            "http://api.clover.com",
            "//api.clover.com",
            "api.clover.com",
            "https://evil.example",
            "https://api.clover.com.evil.example",
            "https://evilapi.clover.com",
            "https://api.clover.co",
            "https://api.clover.com@evil.example",
            "https://user:pass@api.clover.com",
            "https://api.clover.com:8443",
            "https://api.clover.com:0",
            "https://api.clover.com:99999",
            "https://api.clover.com:abc",
            "https://api.clover.com/v3/merchants",
            "https://api.clover.com?x=1",
            "https://api.clover.com#x",
            "https://api.clover.com\n",
            " https://api.clover.com",
            "https://api.clover.com\x00",
            "https://аpi.clover.com",  # Cyrillic а
            "http://localhost",  # loopback without a port
            "http://127.0.0.2:8080",
            "http://0.0.0.0:8080",
            "",
        ]
    ],
    # poll intervals
    *[
        (f"interval {bad!r}", [*ADD, *TOKEN, "--poll-interval-seconds", bad], b"t\n")
        for bad in ["0", "59", "-300", "86401", "abc", "1e3", "3.5", "", "9" * 5_000, "٣٠٠", "²"]
    ],
]


@pytest.fixture
def cli(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    yield stack
    runtime.reset()  # a test may have pointed the settings elsewhere


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: bytes = b"",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str) -> None:
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert err.startswith("esl-sync"), err
    assert err.isascii() or err[:-1].isprintable(), err
    assert "\x1b" not in err
    assert "\x00" not in err
    assert "\r" not in err
    assert "Traceback" not in err
    assert len(err) < 600


def nothing_written(stack: LocalStack) -> None:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM merchants").fetchone() == (0,)
    items = boto3.client("dynamodb").scan(TableName=stack.env["STATE_TABLE_NAME"])["Items"]
    assert items == []
    assert stack.queue_depths()["PollQueue"] == 0  # and no poll queued


def test_every_bad_input_to_merchants_add_is_one_line_exit_2_and_writes_nothing(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(BAD_MERCHANTS_ADD) >= 52
    for what, argv, stdin in BAD_MERCHANTS_ADD:
        code, out, err = run(monkeypatch, capsys, argv, stdin)
        assert (code, out) == (2, ""), (what, code, out, err)
        assert_one_line(err)
        assert b"t" * 100 not in err.encode(), what  # never a token echoed
    nothing_written(cli)
    # The same arguments, all good, do write.
    code, out, _ = run(monkeypatch, capsys, [*ADD, *TOKEN], b"tok-1\n")
    assert (code, out) == (0, f"merchant {MID} saved with its token\npoll of {MID} queued\n")
    assert cli.queue_depths()["PollQueue"] == 1


def test_good_urls_are_normalized_and_loopback_is_for_the_local_stack_only(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for given, stored in [
        ("https://api.eu.clover.com", "https://api.eu.clover.com"),
        ("HTTPS://API.LA.CLOVER.COM/", "https://api.la.clover.com"),
        ("https://apisandbox.dev.clover.com:443", "https://apisandbox.dev.clover.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),  # AWS is local here
        ("http://localhost:8765/", "http://localhost:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
    ]:
        code, _, err = run(monkeypatch, capsys, [*ADD, "--clover-base-url", given])
        assert (code, err) == (0, ""), given
        merchant = runtime.merchants().get(MID)
        assert merchant is not None
        assert merchant.clover_base_url == stored
    # Against real AWS (here: any endpoint that is not loopback) a loopback URL is refused
    # before anything is read or written.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://dynamodb.us-east-1.amazonaws.com")
    code, _, err = run(monkeypatch, capsys, [*ADD, "--clover-base-url", "http://127.0.0.1:8765"])
    assert code == 2
    assert_one_line(err)
    assert "loopback" not in err  # the local-stack exception is not offered there


def test_a_token_kms_refuses_leaves_nothing_written(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATE_KEY_ID", "arn:aws:kms:us-east-1:123456789012:key/no-such-key")
    runtime.reset()
    with unrecorded():  # a key the stack does not have: not a call the operator needs
        code, out, err = run(monkeypatch, capsys, [*ADD, *PAIR], GOOD_PAIR)
    assert (code, out) == (1, "")
    assert_one_line(err)
    assert "NotFoundException" in err
    assert b"acc-1" not in err.encode()
    nothing_written(cli)


def test_a_failed_token_write_leaves_the_merchant_row_as_it_was(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, capsys, [*ADD, *TOKEN], b"tok-1\n")[0] == 0
    state = boto3.client("dynamodb")
    state.delete_table(TableName=cli.env["STATE_TABLE_NAME"])  # DynamoDB refuses the write

    argv = ["merchants", "add", MID, "--store-code", "STORE-2", *TOKEN]
    code, out, err = run(monkeypatch, capsys, argv, b"tok-2\n")

    assert (code, out) == (1, "")
    assert_one_line(err)
    assert "ResourceNotFoundException" in err
    merchant = runtime.merchants().get(MID)
    assert merchant is not None
    assert merchant.store_code == "STORE-1"  # the row was rolled back with the failed write


BAD_OTHER_COMMANDS: list[list[str]] = [
    [],
    ["nosuchcommand"],
    ["merchants"],
    ["merchants", "add"],
    ["merchants", "add", MID],
    ["merchants", "list", "--bogus"],
    ["merchants", "disable", ""],
    ["merchants", "enable", "M" * 65],
    ["poll", "MCLI\x00BAD"],
    ["resync", "MCLI;reboot"],
    ["stores", "unblock", "MCLI\nBAD"],
    ["status", "--labels", "\x1b[2JMCLI"],
    ["status", "--labels", "MCLI\x00BAD"],
    ["status", "--json", "--labels", "M" * 1_000_000],
    ["status", "--labels", "MÉRCHANT"],
    ["status", "--labels", "M\ud800X"],  # a lone surrogate (bytes not UTF-8 in argv)
    ["status", "--labels", "M\u202eX"],
    ["status", "MCLI\x00"],
    ["status", "extra\x1b[2J"],
    ["heal", "MCLI é"],
    ["heal", "--older-than", "-1"],
    ["heal", "--older-than", "99999999999999999999"],
    ["heal", "--older-than", "abc"],
    ["heal", "--older-than", "2592001"],
    ["--stack", "bad name!", "status"],
    ["--stack", "", "status"],
    ["--stack", "s" * 129, "status"],
    ["redrive"],
    ["redrive", "--queue", "dlq\x1b[2J"],
    ["bench", "--merchants", "0"],
    ["bench", "--skus", "-5"],
    ["bench", "--idle-merchants", "1e9"],
    ["bench", "--cold-start-only", "--function", "sender"],
    ["bench", "--cold-start-only", "--runs", "0"],
    ["bench", "--cpu-only", "--stages"],  # one mode at a time, never one silently dropped
    ["bench", "--stages", "--cold-start-only"],
    ["bench", "--batch-peak", "--cpu-only"],
    ["bench", "--stages", "--merchants", "x"],
    # an option the chosen run does not read: refused, never silently dropped
    ["bench", "--cpu-only", "--json", "figures.json"],
    ["bench", "--batch-peak", "--merchants", "3"],
    ["bench", "--stages", "--idle-merchants", "5"],
    ["bench", "--cold-start-only", "--skus", "10"],
    ["bench", "--function", "poller"],
    ["bench", "--runs", "3"],
    # fence catch-up [MID]: a MID it cannot be, more than one, an option it has not
    ["fence", "catch-up", "M\x00NUL"],
    ["fence", "catch-up", "M" * 65],
    ["fence", "catch-up", "MÉRCHANT"],
    ["fence", "catch-up", ""],
    ["fence", "catch-up", "MRESTORE0001", "MRESTORE0002"],
    ["fence", "catch-up", "--generation", "9"],
    ["fence"],
    ["fence", "reset"],
    # sweep allow-deletions MID: exactly one merchant id
    ["sweep"],
    ["sweep", "allow-deletions"],
    ["sweep", "allow-deletions", "M\x00NUL"],
    ["sweep", "allow-deletions", "M" * 65],
    ["sweep", "allow-deletions", "\x1b[2JMCLI"],
    ["sweep", "allow-deletions", "MÉRCHANT"],
    ["sweep", "allow-deletions", "MCLI", "MCLI2"],
    ["sweep", "allow-deletions", "MCLI", "--all"],
    ["sweep", "allow"],
    ["sweep", "withdraw-deletions"],
    ["sweep", "withdraw-deletions", "M\x00NUL"],
    ["sweep", "withdraw-deletions", "MCLI", "MCLI2"],
    ["sweep", "withdraw-deletions", "MCLI", "--all"],
    # restore catch-up takes no argument
    ["restore"],
    ["restore", "catch-up", "MPGRESTORE01"],
    ["restore", "catch-up", "--force"],
    ["restore", "catch-up", "\x00"],
    ["restore", "catch-up", "é" * 100_000],
    ["restore", "undo"],
    ["restore", "catch-up", "catch-up"],
]


def test_every_other_command_answers_bad_input_with_one_line_and_exit_2(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in BAD_OTHER_COMMANDS:
        code, out, err = run(monkeypatch, capsys, argv)
        assert (code, out) == (2, ""), argv
        assert_one_line(err)
    nothing_written(cli)


def test_a_long_bad_value_keeps_the_end_of_its_error_that_says_what_is_right(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse names the value in the middle of its line and the choices at the end: a
    10 kB value cut the line at 300 characters, the choices with it (found by helper-95)."""
    code, out, err = run(monkeypatch, capsys, ["redrive", "--queue", "q" * 10_000])
    assert (code, out) == (2, "")
    assert_one_line(err)
    assert len(err) < 400
    assert "invalid choice" in err
    assert err.rstrip("\n").endswith("(choose from 'label', 'poll')"), err


SET = ["merchants", "set", MID]
BAD_MERCHANTS_SET: list[list[str]] = [
    SET,  # nothing to change
    ["merchants", "set"],
    ["merchants", "set", "MCLI\x00BAD", "--poll-interval-seconds", "default"],
    ["merchants", "set", "-MCLI", "--poll-interval-seconds", "default"],
    [*SET, "--store-code", "STORE-2"],  # not a `set` option: `set-store` changes it
    [*SET, "--token-stdin"],
    [*SET, "--poll-interval-seconds"],
    [*SET, "--clover-base-url"],
    *[
        [*SET, "--poll-interval-seconds", bad]
        for bad in [
            "Default",
            "DEFAULT",
            "defaults",
            " default",
            "default\n",
            "default\x00",
            "\x1b[2Jdefault",
            "",
            "none",
            "0",
            "59",
            "86401",
            "-60",
            "9" * 5_000,
            "٣٠٠",
            "3600.0",
        ]
    ],
    *[
        [*SET, "--clover-base-url", bad]
        for bad in [
            "Default",
            "default\x00",
            "default\n",
            "https://evil.example",
            "http://169.254.169.254",
            "https://api.clover.com@evil.example",
            "https://api.clover.com\x1b[2J",
            "\udcff",
            "",
        ]
    ],
]


def test_every_bad_input_to_merchants_set_is_one_line_exit_2_and_changes_nothing(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    eu = ["--clover-base-url", "https://api.eu.clover.com", "--poll-interval-seconds", "3600"]
    assert run(monkeypatch, capsys, [*ADD, *TOKEN, *eu], b"tok-1\n")[0] == 0
    before = runtime.merchants().get(MID)
    for argv in BAD_MERCHANTS_SET:
        code, out, err = run(monkeypatch, capsys, argv)
        assert (code, out) == (2, ""), (argv, code, out, err)
        assert_one_line(err)
    assert runtime.merchants().get(MID) == before
    # Good arguments do change it.
    code, _, err = run(monkeypatch, capsys, [*SET, "--poll-interval-seconds", "default"])
    assert (code, err) == (0, "")
    after = runtime.merchants().get(MID)
    assert after is not None
    assert (after.poll_interval_seconds, after.clover_base_url) == (
        None,
        "https://api.eu.clover.com",
    )


def test_unexpected_failures_are_one_line_and_exit_1(
    cli: LocalStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, capsys, [*ADD, *TOKEN], b"tok-1\n")[0] == 0
    # DynamoDB: the state table is gone.
    monkeypatch.setenv("STATE_TABLE_NAME", "no-such-table")
    runtime.reset()
    with unrecorded():  # a table the stack does not have
        code, out, err = run(monkeypatch, capsys, ["status"])
    assert code == 1
    assert_one_line(err)
    assert "ResourceNotFoundException" in err
    # Postgres: nobody listens.
    monkeypatch.setenv("DATABASE_URL", "postgresql://esl:secret-pw@127.0.0.1:9/none")
    runtime.reset()
    for argv in (["merchants", "list"], ["poll", MID], ["status"]):
        code, out, err = run(monkeypatch, capsys, argv)
        assert (code, out) == (1, ""), argv
        assert_one_line(err)
        assert "OperationalError" in err
        assert "secret-pw" not in err


def test_the_installed_command_never_prints_a_traceback(cli: LocalStack) -> None:
    """The process as an operator runs it: bad bytes on stdin, a bad id, no AWS at all."""
    command = [sys.executable, "-m", "esl_sync_ops"]
    run_cli = functools.partial(
        subprocess.run, capture_output=True, timeout=120, check=False, cwd=REPO_ROOT
    )
    env = {**os.environ, **cli.env}
    no_aws = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    no_aws["AWS_CONFIG_FILE"] = no_aws["AWS_SHARED_CREDENTIALS_FILE"] = "/nonexistent"
    for argv, stdin, environment, status in [
        ([*ADD, *TOKEN], b"\xff\xfe\x00bad", env, 2),
        (["merchants", "add", "MCLI;BAD", "--store-code", "S"], b"", env, 2),
        (["--stack", "esl-sync-prod", "status"], b"", no_aws, 2),
    ]:
        completed = run_cli(command + argv, input=stdin, env=environment)
        err = completed.stderr.decode()
        assert completed.returncode == status, err
        assert_one_line(err)
        assert completed.stdout == b""
    nothing_written(cli)


# A Ctrl-C arrives as KeyboardInterrupt wherever the process is. These raise it where the
# command line is read (the plugins' entry points load) and where the command's own module
# is imported by the installed entry point, in a process of its own (pytest would stop at it).
INTERRUPTED_WHILE_PARSING = """
import sys
import esl_sync_ops.cli as cli
def interrupted(**_kwargs):
    raise KeyboardInterrupt
cli.entry_points = interrupted
sys.exit(cli.main(["status"]))
"""
INTERRUPTED_WHILE_IMPORTING = """
import sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "esl_sync_ops.cli":
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, Interrupt())
from importlib.metadata import entry_points
[script] = [e for e in entry_points(group="console_scripts") if e.name == "esl-sync"]
sys.exit(script.load()())
"""


@pytest.mark.parametrize("code", [INTERRUPTED_WHILE_PARSING, INTERRUPTED_WHILE_IMPORTING])
def test_ctrl_c_before_the_command_runs_is_one_line_and_exit_130(code: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )
    assert (completed.returncode, completed.stderr) == (130, "esl-sync: interrupted\n")
    assert completed.stdout == ""
