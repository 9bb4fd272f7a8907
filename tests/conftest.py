"""Shared fixtures: one embedded PostgreSQL per test session, a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "EslSync")

from devkit.embedded_postgres import EmbeddedPostgres
from devkit.local_stack import LocalStack


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """``DATABASE_URL`` when set (CI with its own server), else an embedded server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with EmbeddedPostgres() as server:
        yield server.url


@pytest.fixture(scope="session")
def make_database(postgres_server: str) -> Callable[[], str]:
    """Creates a new, empty database on the session's server and returns its URL."""

    def create() -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_conninfo(postgres_server, dbname=name)

    return create


@pytest.fixture
def database_url(make_database: Callable[[], str]) -> str:
    return make_database()


@pytest.fixture
def stack(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """The whole local stack on a fresh database, with both simulators."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    with LocalStack() as local:
        yield local
