"""The local stack: the whole system on one machine.

It is the single way the demo, the tests and the benchmarks run the system.

It starts an embedded PostgreSQL (unless ``DATABASE_URL`` is set), AWS emulated in-process
(or, for the benchmark, in a process of its own) by moto's server on loopback (queues,
table and key built from ``template.yaml``, and the secrets: the handlers read the
database URL, the Hipoink sign, the webhook auth code and the Clover app's credentials
from Secrets Manager, as deployed), and the Clover and Hipoink
simulators (unless their URLs are given). Every AWS call a handler makes is recorded and
checked against its role in ``template.yaml`` when the stack closes: a call the role does
not grant fails the run, as it would fail in AWS. ``run_cycle()`` drives the real
handlers the way Lambda's event source mappings do: batches, partial batch failures made
visible again, and redrive to the dead-letter queue after ``maxReceiveCount`` receives.
``send_webhook()`` delivers a Clover notification through the webhook function the way
the HTTP API would, then lets the poll it queued run through to the labels;
``install_app()`` plays a merchant's browser through the app's install (the onboarding
function's routes and the Clover simulator's authorize page) to its first labels.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import boto3
import httpx
import psycopg
from psycopg.rows import dict_row

from devkit.aws_calls import OPERATOR, AwsCallRecorder, running, unrecorded
from devkit.clover_sim import CloverSimulator
from devkit.embedded_postgres import EmbeddedPostgres
from devkit.hipoink_sim import HipoinkSimulator
from devkit.iam import problems
from devkit.lambda_runner import (
    FUNCTIONS,
    ContextFactory,
    DrainResult,
    FunctionRunner,
    load_handler,
)
from devkit.template import REPO_ROOT, load_template, resolve, resource
from esl_sync.credentials import CloverTokens

if TYPE_CHECKING:
    from mypy_boto3_sqs.client import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType


REGION = "us-east-1"
HIPOINK_SIGN = "local-hipoink-sign"
CLOVER_WEBHOOK_AUTH = "local-clover-webhook-auth"  # also in events/webhook.json
QUEUES = ("PollDeadLetterQueue", "LabelDeadLetterQueue", "PollQueue", "LabelQueue")  # DLQs first
CLOVER_APP_CLIENT_SECRET = "local-clover-app-secret"
API_BASE_URL = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"  # as in events/*.json
CLOVER_SITE_URL = f"{API_BASE_URL}/clover"  # the app's site URL in Clover's dashboard
STATE_KEY_ALIAS = "alias/esl-sync-local-state"
SECRET_PREFIX = "esl-sync-local/"
# Secrets the handlers read from Secrets Manager: value variable -> the variable of its ARN.
SECRET_VARIABLES = {
    "DATABASE_URL": "DATABASE_URL_SECRET_ARN",
    "HIPOINK_SIGN": "HIPOINK_SIGN_SECRET_ARN",
    "CLOVER_WEBHOOK_AUTH": "CLOVER_WEBHOOK_AUTH_SECRET_ARN",
    "CLOVER_CLIENT_ID": "CLOVER_APP_SECRET_ARN",  # {"client_id", "client_secret"}
    "CLOVER_OAUTH_STATE_KEY": "CLOVER_OAUTH_STATE_KEY_SECRET_ARN",
}


def secret_name(variable: str) -> str:
    """The local secret holding a value variable: ``esl-sync-local/database-url`` for
    ``DATABASE_URL``, ``esl-sync-local/clover-app`` for the Clover app's credentials."""
    stem = SECRET_VARIABLES[variable].removesuffix("_ARN").removesuffix("_SECRET")
    return SECRET_PREFIX + stem.lower().replace("_", "-")


@dataclass(frozen=True)
class Listen:
    """Where the stack's AWS emulation and simulators listen when other processes must
    reach them (``sam local invoke`` containers, see devkit/local_services.py); port 0 is
    any free port. Without it, everything is on loopback on free ports."""

    host: str = "0.0.0.0"
    aws_port: int = 4566
    clover_port: int = 4011
    hipoink_port: int = 4012


@dataclass
class CycleSummary:
    dispatched: int
    polls: DrainResult
    labels: DrainResult
    queue_depths: dict[str, int]

    @property
    def dead_lettered(self) -> int:
        return self.queue_depths["PollDeadLetterQueue"] + self.queue_depths["LabelDeadLetterQueue"]


@dataclass
class WebhookDelivery:
    """The webhook function's HTTP answer, and what the polls and label jobs it led to did."""

    status: int
    message: str
    polls: DrainResult
    labels: DrainResult


@dataclass
class HttpAnswer:
    """A function's answer through the HTTP API: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    body: str

    @property
    def location(self) -> str | None:
        return self.headers.get("location")


@dataclass
class Install:
    """A merchant's browser through the app's install: each answer on the way (the
    authorize page's is None when the install route did not send the browser there), the
    callback URL Clover sent it to, and the polls and label jobs it led to."""

    install: HttpAnswer
    authorize_status: int | None = None
    callback_url: str | None = None
    callback: HttpAnswer | None = None
    polls: DrainResult = field(default_factory=DrainResult)
    labels: DrainResult = field(default_factory=DrainResult)


class LocalStack:
    """Context manager running everything in this process; see the module docstring."""

    def __init__(
        self,
        clover_base_url: str | None = None,
        hipoink_base_url: str | None = None,
        *,
        settings: dict[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
        listen: Listen | None = None,
        database_secret: str | None = None,
        record_aws_calls: bool = True,
        aws_in_own_process: bool = False,
    ) -> None:
        """``database_secret`` is the database secret's value when the handlers reach
        Postgres by another address than this process (from a container);
        ``record_aws_calls=False`` leaves the handlers' AWS calls unrecorded and unchecked
        (the benchmark: the recorder's work is not the handlers'); ``aws_in_own_process``
        serves moto from a process of its own instead of this one's threads (the benchmark:
        in Lambda no AWS service shares the function's interpreter, its GIL and its
        caches)."""
        self._record_aws_calls = record_aws_calls
        self._aws_in_own_process = aws_in_own_process
        self._listen = listen
        self._database_secret = database_secret
        self._clover_base_url = clover_base_url
        self._hipoink_base_url = hipoink_base_url
        self._overrides = settings or {}
        self._progress = progress or (lambda _message: None)
        self._exit = ExitStack()
        self._saved_env: dict[str, str | None] = {}
        self.clover: CloverSimulator | None = None
        self.hipoink: HipoinkSimulator | None = None
        self.env: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self.template = load_template()
        self._sqs: SQSClient | None = None
        self.runner: FunctionRunner | None = None
        self.aws_calls = AwsCallRecorder(self._resource_of)
        self.pages: list[str] = []  # every answer of the onboarding routes, headers included
        self.cli_output: list[str] = []  # what each `cli()` printed, stdout then stderr
        self._database_url = ""  # the database this process reaches

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from esl_sync import runtime

        leaks = self.leaked_secrets() if exc_type is None else 0
        ungranted = self.ungranted_calls() if exc_type is None else []
        self.aws_calls.detach()
        runtime.reset()
        self._exit.close()
        self._sqs = None
        self.runner = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()
        if leaks:
            raise AssertionError(
                f"{leaks} handler log line(s) or page(s) hold a token, code, key or secret"
            )
        if ungranted:
            raise AssertionError("AWS would refuse these calls:\n" + "\n".join(ungranted))

    def ungranted_calls(self) -> list[str]:
        """The handlers' AWS calls that their roles in template.yaml do not grant (each
        line names the function, the call and the role to change)."""
        calls = self.aws_calls.calls
        return [
            line
            for f in FUNCTIONS.values()
            for line in problems(self.template, f, calls, exact=False)
        ]

    def leaked_secrets(self) -> int:
        """How many places hold a secret: lines the handlers logged (JSON logs and EMF
        metrics), what Lambda's runtime logs of an error a handler let out, answers the
        install routes gave (page and headers), what ``esl-sync`` printed through
        :meth:`cli` (standard output and error), rows of the stack's Postgres (each row of
        each table, as text) and items of its state table (DynamoDB). The secrets: a Clover
        token or authorization code the simulator issued, the app's client secret, the
        install state's key, the Hipoink sign, the webhook auth code, and the database's
        password, from ``DATABASE_URL`` and from every value the stack's secrets in Secrets
        Manager hold now (a test may rotate one, or point it at a login Postgres refuses).
        Checked on every normal exit, so every test and demo run through the local stack is
        also a leak test."""
        known = self.known_secrets()
        errors = self.runner.runtime_errors if self.runner else []
        texts = [*self.logs, *errors, *self.pages, *self.cli_output]
        held = sum(1 for text in texts if any(s in text for s in known))
        return held + self._rows_holding(known) + self._items_holding(known)

    def known_secrets(self) -> set[str]:
        """The secrets :meth:`leaked_secrets` looks for (none shorter than 6 characters:
        those match ordinary words)."""
        known = {
            self.env.get(name, "")
            for name in ("HIPOINK_SIGN", "CLOVER_WEBHOOK_AUTH", "CLOVER_OAUTH_STATE_KEY")
        }
        known.add(CLOVER_APP_CLIENT_SECRET)
        if self.clover is not None:
            known |= self.clover.issued_tokens() | {self.clover.client_secret}
        for login in (self._database_url, self.env.get("DATABASE_URL", "")):
            known |= _secret_parts(login, whole=False)
        if "AWS_ENDPOINT_URL" in self.env:  # started: Secrets Manager holds its secrets
            known |= self._stored_secrets()
        return {s for s in known if len(s) >= 6}

    def _stored_secrets(self) -> set[str]:
        """What each of the stack's secrets holds now, and the password or client secret
        inside it. Read as the stack itself, never recorded as a handler's call."""
        client = boto3.client(
            "secretsmanager", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name=REGION
        )
        found: set[str] = set()
        for variable in SECRET_VARIABLES:
            try:
                with unrecorded():
                    answer = client.get_secret_value(SecretId=secret_name(variable))
            except client.exceptions.ResourceNotFoundException:
                continue  # a test removed it
            found |= _secret_parts(answer["SecretString"], whole=variable != "DATABASE_URL")
        return found

    def _scan_connection(self) -> psycopg.Connection[Any]:
        """A connection to the stack's database: by the login it started with, or, should a
        test have rotated that login's password, by the one the database secret holds now."""
        try:
            return psycopg.connect(self._database_url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError:
            from esl_sync.store.secrets import database_conninfo

            client = boto3.client(
                "secretsmanager", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name=REGION
            )
            with unrecorded():
                text = client.get_secret_value(SecretId=secret_name("DATABASE_URL"))
            now = database_conninfo(text["SecretString"], require_tls=False)
            return psycopg.connect(now, autocommit=True, connect_timeout=10)

    def _items_holding(self, known: set[str]) -> int:
        """How many items of the stack's state table hold one of ``known`` (the merchant
        state ``status`` shows, the install records; a token is there only encrypted)."""
        if "STATE_TABLE_NAME" not in self.env or not known:
            return 0
        client = boto3.client(
            "dynamodb", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name=REGION
        )
        held = 0
        pages = client.get_paginator("scan").paginate(TableName=self.env["STATE_TABLE_NAME"])
        try:
            with unrecorded():
                for page in pages:
                    for item in page["Items"]:
                        held += any(s in json.dumps(item, default=repr) for s in known)
        except client.exceptions.ResourceNotFoundException:
            return 0  # a test removed the table
        return held

    def _rows_holding(self, known: set[str]) -> int:
        """How many rows of the stack's Postgres hold one of ``known``."""
        if not self._database_url or not known:
            return 0
        with self._scan_connection() as conn:
            tables = conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            held = 0
            for (table,) in tables:
                row = conn.execute(
                    f"SELECT count(*) FROM {table} AS r"  # noqa: S608 - names from pg_tables
                    " WHERE EXISTS (SELECT FROM unnest(%s::text[]) AS s"
                    " WHERE strpos(r::text, s) > 0)",
                    (sorted(known),),
                ).fetchone()
                held += int(row[0]) if row else 0
            return held

    def _start(self) -> None:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            self._progress("starting embedded PostgreSQL")
            database_url = self._exit.enter_context(EmbeddedPostgres()).url
        self._database_url = database_url
        self._progress("starting AWS emulation (moto) and simulators")
        aws_endpoint = self._start_moto()
        if self._clover_base_url is None:
            clover = CloverSimulator()
            if self._listen:
                clover.address = (self._listen.host, self._listen.clover_port)
            clover.client_secret = CLOVER_APP_CLIENT_SECRET
            clover.site_url = CLOVER_SITE_URL
            self.clover = self._exit.enter_context(clover)
            self._clover_base_url = self.clover.base_url
        if self._hipoink_base_url is None:
            hipoink = HipoinkSimulator(sign=HIPOINK_SIGN)
            if self._listen:
                hipoink.address = (self._listen.host, self._listen.hipoink_port)
            self.hipoink = self._exit.enter_context(hipoink)
            self._hipoink_base_url = self.hipoink.base_url
        self._set_env(
            {
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_SERVICE_NAME": "esl-sync",
                "POWERTOOLS_METRICS_NAMESPACE": "EslSync",
                "CLOVER_API_BASE_URL": self._clover_base_url,
                "HIPOINK_API_BASE_URL": self._hipoink_base_url,
                "HIPOINK_CLIENT_ID": "default",
                "CLOVER_DISPATCH_SPREAD_SECONDS": "0",
            }
        )
        if self._record_aws_calls:
            self.aws_calls.attach()
        self._exit.enter_context(_operator_commands_attributed())
        self._create_aws_resources()
        self._create_secrets(
            {
                "DATABASE_URL": self._database_secret or database_url,
                "HIPOINK_SIGN": HIPOINK_SIGN,
                "CLOVER_WEBHOOK_AUTH": CLOVER_WEBHOOK_AUTH,
                "CLOVER_OAUTH_STATE_KEY": secrets.token_urlsafe(48),
                **({"CLOVER_CLIENT_ID": self.clover.client_id} if self.clover else {}),
            }
        )
        self._set_env(self._overrides)
        from esl_sync import runtime
        from esl_sync.settings import settings
        from esl_sync.store.schema import apply_migrations

        runtime.reset()
        settings()  # a bad override fails here, naming the variable
        apply_migrations(database_url)
        self.runner = FunctionRunner(self.sqs, REGION)
        for name in FUNCTIONS:
            load_handler(name)  # a handler that cannot start fails here, not mid-cycle

    def _start_moto(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        host, port = ("127.0.0.1", 0)
        if self._listen:
            host, port = self._listen.host, self._listen.aws_port
        if self._aws_in_own_process:
            port = self._exit.enter_context(_moto_process(host, port))
        else:
            _atomic_dynamodb_items()
            port = self._exit.enter_context(_moto_threads(host, port))
        endpoint = f"http://127.0.0.1:{port}"
        # moto keeps its state per process: start every stack from nothing.
        httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        return endpoint

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
            self.env[name] = value

    def _create_secrets(self, values: dict[str, str]) -> None:
        """Each secret in Secrets Manager, its ARN in the handlers' environment and its value
        only in ``env`` (for tests and subprocesses): the handlers read it as deployed."""
        secrets = boto3.client("secretsmanager", region_name=REGION)
        for name, value in values.items():
            text = value
            if name == "CLOVER_CLIENT_ID":
                text = json.dumps({"client_id": value, "client_secret": CLOVER_APP_CLIENT_SECRET})
            arn = secrets.create_secret(Name=secret_name(name), SecretString=text)["ARN"]
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ.pop(name, None)
            self._set_env({SECRET_VARIABLES[name]: arn})
            self.env[name] = value

    def _create_aws_resources(self) -> None:
        """Queues, table and key named and configured like the template's resources."""
        sqs = self.sqs
        for logical_id in QUEUES:
            props = resource(self.template, logical_id)["Properties"]
            fifo = bool(props.get("FifoQueue"))
            attributes: dict[QueueAttributeNameType, str] = {
                "VisibilityTimeout": str(
                    resolve(self.template, props.get("VisibilityTimeout", 30))
                ),
                "MessageRetentionPeriod": str(props.get("MessageRetentionPeriod", 345600)),
            }
            if fifo:
                attributes["FifoQueue"] = "true"
            if "MaximumMessageSize" in props:
                attributes["MaximumMessageSize"] = str(props["MaximumMessageSize"])
            redrive = props.get("RedrivePolicy")
            if redrive:
                target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": self._queue_arn(target),
                        "maxReceiveCount": int(resolve(self.template, redrive["maxReceiveCount"])),
                    }
                )
            name = logical_id + (".fifo" if fifo else "")
            self.urls[logical_id] = sqs.create_queue(QueueName=name, Attributes=attributes)[
                "QueueUrl"
            ]
        kms = boto3.client("kms", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=REGION)
        key_id = kms.create_key(Description="esl-sync state key (local)")["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName=STATE_KEY_ALIAS, TargetKeyId=key_id)
        table = resource(self.template, "StateTable")["Properties"]
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="StateTable",
            KeySchema=table["KeySchema"],
            AttributeDefinitions=table["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
        )
        self._set_env(
            {
                "POLL_QUEUE_URL": self.urls["PollQueue"],
                "LABEL_QUEUE_URL": self.urls["LabelQueue"],
                "STATE_TABLE_NAME": "StateTable",
                "STATE_KEY_ID": key_id,
            }
        )

    def _resource_of(self, service: str, params: Mapping[str, Any]) -> list[str]:
        """The template's logical ids (``env:NAME`` for secrets) that a call names."""
        if service == "sqs":
            url = params.get("QueueUrl") or params.get("QueueName", "")
            names = {u: q for q, u in self.urls.items()} | {q: q for q in self.urls}
            return [names.get(url, names.get(url.removesuffix(".fifo"), f"?{url}"))]
        if service == "dynamodb":
            tables = [params["TableName"]] if "TableName" in params else params["RequestItems"]
            return [str(t) for t in tables]  # the local table is named after its logical id
        if service == "kms":
            key = params.get("KeyId", self.env.get("STATE_KEY_ID"))
            return [
                "StateKey" if key in (self.env.get("STATE_KEY_ID"), STATE_KEY_ALIAS) else f"?{key}"
            ]
        if service == "secretsmanager":
            secret = params.get("SecretId")
            named = [f"env:{n}" for n, v in self.env.items() if v == secret and n.endswith("_ARN")]
            return named or [f"?{secret}"]
        if service == "cloudformation":
            return ["Stack"]  # `esl-sync --stack NAME` reading the stack's outputs
        return [f"?{service}"]

    def _queue_arn(self, logical_id: str) -> str:
        return self.sqs.get_queue_attributes(
            QueueUrl=self.urls[logical_id], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

    # -- AWS access ------------------------------------------------------------------------

    @property
    def sqs(self) -> SQSClient:
        if self._sqs is None:
            self._sqs = boto3.client("sqs", region_name=REGION)
        return self._sqs

    @property
    def logs(self) -> list[str]:
        """Every line the handlers logged (JSON logs and EMF metrics), in order."""
        return self.runner.logs if self.runner else []

    def queue_depths(self) -> dict[str, int]:
        depths = {}
        for logical_id, url in self.urls.items():
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            depths[logical_id] = sum(int(v) for v in attributes.values())
        return depths

    # -- merchants and state ----------------------------------------------------------------

    def add_merchant(
        self,
        merchant_id: str,
        token: str,
        store_code: str,
        *,
        items: list[dict[str, Any]] | None = None,
    ) -> None:
        """Register a merchant (Postgres + encrypted token) and, on the simulators, its catalog;
        as ``esl-sync merchants add MID --store-code S --token-stdin`` does: a registered one
        is enabled, with this store code and token, and keeps its Clover host and interval."""
        from esl_sync import admin, runtime
        from esl_sync.records import Merchant

        if self.clover is not None:
            self.clover.add_merchant(merchant_id, token, items or [])
        if self.hipoink is not None:
            self.hipoink.add_store(store_code)
        admin.add_merchant(
            runtime.merchants(),
            runtime.state_store(),
            Merchant(merchant_id=merchant_id, store_code=store_code),
            token,
            keep=("clover_base_url", "poll_interval_seconds"),
        )

    def use_token_pair(
        self,
        merchant_id: str,
        *,
        access_lifetime_seconds: int | None = None,
        refresh_lifetime_seconds: int | None = None,
    ) -> CloverTokens:
        """Authorize the merchant anew with a v2 pair from the Clover simulator and store it,
        as an operator does with ``esl-sync merchants add --token-pair-stdin``."""
        from esl_sync import runtime

        assert self.clover is not None, "token pairs come from the Clover simulator"
        pair = self.clover.issue_tokens(
            merchant_id,
            access_lifetime_seconds=access_lifetime_seconds,
            refresh_lifetime_seconds=refresh_lifetime_seconds,
        )
        tokens = CloverTokens.from_object(pair, "simulator's token pair")
        runtime.state_store().write_token(merchant_id, tokens)
        return tokens

    @contextmanager
    def _db(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with psycopg.connect(self.env["DATABASE_URL"], row_factory=dict_row) as conn:
            yield conn

    def products(self, merchant_id: str) -> list[dict[str, Any]]:
        with self._db() as conn:
            return conn.execute(
                "SELECT * FROM products WHERE merchant_id = %s ORDER BY source_id", (merchant_id,)
            ).fetchall()

    def label_state(self, merchant_id: str) -> list[dict[str, Any]]:
        with self._db() as conn:
            return conn.execute(
                "SELECT * FROM label_state WHERE merchant_id = %s ORDER BY pc", (merchant_id,)
            ).fetchall()

    # -- driving the functions --------------------------------------------------------------

    def dispatch(self) -> int:
        result = self.invoke("dispatcher", {"reason": "schedule"})
        dispatched: int = result["dispatched"]
        return dispatched

    def invoke(
        self, function: str, event: dict[str, Any], *, context: ContextFactory | None = None
    ) -> dict[str, Any]:
        assert self.runner is not None, "the local stack is not started"
        return self.runner.invoke(function, event, context=context)

    def drain(
        self,
        queue: str,
        function: str,
        *,
        batch_size: int = 10,
        context: ContextFactory | None = None,
    ) -> DrainResult:
        """Deliver the queue to the function; ``context`` builds each invocation's context."""
        assert self.runner is not None, "the local stack is not started"
        return self.runner.drain(self.urls[queue], function, batch_size=batch_size, context=context)

    def send_webhook(
        self, body: bytes | str | dict[str, Any], auth: str | None, *, deliver: bool = True
    ) -> WebhookDelivery:
        """POST a Clover notification to the webhook function (an HTTP API v2 event, with
        ``X-Clover-Auth: auth`` unless None); then, unless ``deliver`` is False, run the
        polls it queued and their label jobs, with no dispatcher involved."""
        text = json.dumps(body) if isinstance(body, dict) else body
        raw = text.encode() if isinstance(text, str) else text
        answer = self.invoke("webhook", webhook_event(raw, auth))
        polls = labels = DrainResult()
        if deliver:
            polls = self.drain("PollQueue", "poller", batch_size=self._batch_size("PollerFunction"))
            labels = self.drain("LabelQueue", "hipoink_sender")
        return WebhookDelivery(
            answer["statusCode"], json.loads(answer["body"])["message"], polls, labels
        )

    def open(self, url: str) -> HttpAnswer:
        """GET ``url`` (on the stack's API, ``API_BASE_URL``) through the onboarding function,
        as the HTTP API would: its raw query string passed on as sent."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != API_BASE_URL:
            raise ValueError(f"not the stack's API: {url}")
        answer = self.invoke("onboarding", http_get_event(parts.path, parts.query))
        headers = {k.lower(): v for k, v in answer.get("headers", {}).items()}
        page = HttpAnswer(answer["statusCode"], headers, answer.get("body", ""))
        self.pages.append(json.dumps(headers) + page.body)
        return page

    def install_app(
        self,
        merchant_id: str,
        *,
        signed_in: str | None = None,
        query: str | None = None,
        approve: bool = True,
        deliver: bool = True,
    ) -> Install:
        """The merchant's browser through the install: Clover's site URL with the merchant
        (``query`` instead, if given); unless ``approve`` is False, Clover's authorize page
        (the simulator, ``signed_in`` approving: the merchant by default) and the callback;
        then, unless ``deliver`` is False, the polls and label jobs it queued, with no
        dispatcher involved."""
        assert self.clover is not None, "the install needs the Clover simulator"
        client = self.clover.client_id
        start = query or f"merchant_id={merchant_id}&employee_id=SIMEMPLOYEE01&client_id={client}"
        result = Install(self.open(f"{CLOVER_SITE_URL}/install?{start}"))
        if not approve or result.install.status != 302 or result.install.location is None:
            return result
        self.clover.signed_in_merchant = signed_in or merchant_id
        authorize = httpx.get(result.install.location, timeout=10)
        result.authorize_status = authorize.status_code
        result.callback_url = authorize.headers.get("location")
        if authorize.status_code != 302 or result.callback_url is None:
            return result
        result.callback = self.open(result.callback_url)
        if deliver:
            result.polls = self.drain("PollQueue", "poller")
            result.labels = self.drain("LabelQueue", "hipoink_sender")
        return result

    def run_cycle(self) -> CycleSummary:
        """dispatcher → poll queue → poller → label queue → sender, once."""
        started = time.monotonic()
        dispatched = self.dispatch()
        self._progress(f"dispatched {dispatched} poll(s)")
        polls = self.drain("PollQueue", "poller", batch_size=self._batch_size("PollerFunction"))
        self._progress(f"polled ({polls.records} record(s), {polls.failures} failed)")
        labels = self.drain("LabelQueue", "hipoink_sender", batch_size=10)
        self._progress(
            f"sent label jobs ({labels.records} record(s), {labels.failures} failed)"
            f" in {time.monotonic() - started:.1f} s"
        )
        return CycleSummary(dispatched, polls, labels, self.queue_depths())

    def cli(self, *argv: str) -> str:
        """``esl-sync ARGV`` in this process against the stack, as an operator runs it: its
        standard output. A command that does not exit 0 raises, with its standard error."""
        code, out, err = self.run_cli(*argv)
        if code != 0:
            raise AssertionError(f"esl-sync {' '.join(argv)} exited {code}: {err}")
        return out

    def run_cli(self, *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        """``esl-sync ARGV`` in this process, ``stdin`` its standard input (None: this
        process's): its exit status, standard output and standard error (both kept for the
        leak check)."""
        from esl_sync_ops.cli import main

        out, err = io.StringIO(), io.StringIO()
        given = sys.stdin if stdin is None else io.TextIOWrapper(io.BytesIO(stdin), "utf-8")
        with redirect_stdout(out), redirect_stderr(err), _stdin(given):
            code = main(list(argv))
        self.cli_output.append(out.getvalue() + err.getvalue())
        return code, out.getvalue(), err.getvalue()

    def _batch_size(self, function: str) -> int:
        events = resource(self.template, function)["Properties"].get("Events", {})
        for event in events.values():
            if event.get("Type") == "SQS":
                return int(resolve(self.template, event["Properties"].get("BatchSize", 10)))
        return 10


def _secret_parts(text: str, *, whole: bool) -> set[str]:
    """The secrets in a secret's value: the value itself (``whole``: not for a database
    login, whose host and name are not secret), the password of a Postgres login in it (a
    URL, a ``key=value`` string or an RDS JSON secret; a URL's also as written, should
    libpq misread it) and a JSON secret's ``client_secret``."""
    from psycopg.conninfo import conninfo_to_dict

    found = {text} if whole else set()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        found |= {
            v
            for k, v in document.items()
            if k in ("password", "client_secret") and isinstance(v, str)
        }
    elif text.strip():
        try:
            password = conninfo_to_dict(text).get("password")
        except psycopg.ProgrammingError:
            password = None
        if isinstance(password, str):
            found.add(password)
        scheme, separator, rest = text.partition("://")
        authority = rest.split("?", 1)[0]
        if separator and scheme in ("postgres", "postgresql") and "@" in authority:
            # as written, up to the host's '@': libpq misreads a password holding '@' or '/'
            found.add(unquote(authority[: authority.rindex("@")].partition(":")[2]))
    return found


@contextmanager
def _stdin(stream: Any) -> Iterator[None]:
    previous, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = previous


@contextmanager
def _operator_commands_attributed() -> Iterator[None]:
    """While the stack runs, the AWS calls of an ``esl-sync`` operator command run in this
    process are the operator's (``deploy/iam/operator-policy.json``; devkit/aws_calls.py):
    the IAM test compares them with the operator's policy."""
    from esl_sync_ops import cli

    previous = cli.operator_scope
    cli.operator_scope = lambda: running(OPERATOR)
    try:
        yield
    finally:
        cli.operator_scope = previous


@contextmanager
def _moto_threads(host: str, port: int) -> Iterator[int]:
    """moto's server on threads of this process for as long as the context lasts: the port
    it listens on. moto's own ``ThreadedMotoServer`` serves with werkzeug's default
    ``poll_interval`` of 0.5 s and its ``stop()`` waits for the loop to look again: 0.48 s
    of every stack's close, so of nearly every integration test's teardown. The same
    server (moto's app and request handler, werkzeug's threaded server), polling every
    10 ms as the simulators do (devkit/loopback.py)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="moto", daemon=True
    )
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()  # serve_forever closes the socket as it returns
        thread.join()


@contextmanager
def _moto_process(host: str, port: int) -> Iterator[int]:
    """moto's server in a child process (spawned: this process runs threads already) for
    as long as the context lasts: the port it listens on."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve_moto, args=(host, port, theirs), name="moto", daemon=True)
    child.start()
    try:
        if not ours.poll(60):
            raise RuntimeError("moto's process did not start within 60 s")
        yield int(ours.recv())
    finally:
        child.terminate()
        child.join(10)


def _serve_moto(host: str, port: int, parent: Any) -> None:
    """The child's whole life: DynamoDB made atomic, moto served, its port sent back; then
    wait until the parent terminates it."""
    from moto.server import ThreadedMotoServer

    _atomic_dynamodb_items()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    parent.send(server.get_host_and_port()[1])
    threading.Event().wait()


_ITEM_OPERATIONS = ("put_item", "get_item", "update_item", "delete_item", "transact_write_items")


def _atomic_dynamodb_items() -> None:
    """Make moto apply each DynamoDB item operation whole, as DynamoDB does.

    DynamoDB applies a conditional write atomically: of two racing for one refresh lock,
    one wins. moto's server answers each request on a thread of its own and reads, checks
    and writes an item without a lock, so both could pass their condition (five poll
    workers racing for one token refresh made two refreshes now and then, under load). One
    lock around moto's item operations gives the emulator DynamoDB's guarantee; done once
    per process (moto's backends are the process's)."""
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_esl_sync_atomic", False):
        return
    lock = threading.RLock()

    def locked(operation: Any) -> Any:
        @functools.wraps(operation)
        def whole(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return operation(*args, **kwargs)

        return whole

    for name in _ITEM_OPERATIONS:
        setattr(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))
    DynamoDBBackend._esl_sync_atomic = True  # type: ignore[attr-defined]


def http_get_event(path: str, raw_query: str) -> dict[str, Any]:
    """The sample event of ``events/onboarding.json`` for ``GET path?raw_query``."""
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "onboarding.json").read_text())
    joined: dict[str, str] = {}  # API Gateway joins a repeated parameter's values with commas
    for name, value in parse_qsl(raw_query, keep_blank_values=True, errors="replace"):
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    event.update(routeKey=f"GET {path}", rawPath=path, rawQueryString=raw_query)
    event.pop("queryStringParameters", None)
    if joined:
        event["queryStringParameters"] = joined
    event["requestContext"].update(
        routeKey=f"GET {path}", requestId=uuid.uuid4().hex, timeEpoch=int(time.time() * 1000)
    )
    event["requestContext"]["http"]["path"] = path
    return event


def webhook_event(body: bytes, auth: str | None) -> dict[str, Any]:
    """The sample event of ``events/webhook.json`` carrying this body and auth header."""
    event: dict[str, Any] = json.loads((REPO_ROOT / "events" / "webhook.json").read_text())
    headers = {k: v for k, v in event["headers"].items() if k != "x-clover-auth"}
    headers["content-length"] = str(len(body))
    if auth is not None:
        headers["x-clover-auth"] = auth
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:  # API Gateway base64-encodes what is not text
        text, encoded = base64.b64encode(body).decode(), True
    event.update(headers=headers, body=text, isBase64Encoded=encoded)
    event["requestContext"].update(requestId=uuid.uuid4().hex, timeEpoch=int(time.time() * 1000))
    return event
