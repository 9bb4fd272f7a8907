"""What a deployed function refuses, and the two forms of the database secret."""

from __future__ import annotations

import json

import pytest
from psycopg.conninfo import conninfo_to_dict

from esl_sync.settings import ConfigurationError, deployed, load_settings
from esl_sync.store.secrets import database_conninfo

PASSWORD = "s3cr3t-Pa55"
RDS_SECRET = {
    "engine": "postgres",
    "username": "esl_sync_app",
    "password": PASSWORD,
    "host": "db.cluster-abc.eu-west-1.rds.amazonaws.com",
    "port": 5432,
    "dbname": "esl_sync",
    "dbInstanceIdentifier": "esl-sync",
}


@pytest.fixture
def in_lambda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "esl-sync-PollerFunction-x")
    monkeypatch.delenv("AWS_SAM_LOCAL", raising=False)


@pytest.mark.parametrize(
    ("function_name", "sam_local", "expected"),
    [
        (None, None, False),  # local stack, CLI, tests
        ("esl-sync-PollerFunction-x", None, True),  # Lambda
        ("PollerFunction", "true", False),  # sam local invoke sets both
        ("PollerFunction", "TRUE", False),
        ("", None, False),
    ],
)
def test_deployed_means_lambda_and_not_sam_local(
    monkeypatch: pytest.MonkeyPatch,
    function_name: str | None,
    sam_local: str | None,
    expected: bool,
) -> None:
    for name, value in (("AWS_LAMBDA_FUNCTION_NAME", function_name), ("AWS_SAM_LOCAL", sam_local)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert deployed() is expected


@pytest.mark.parametrize("variable", ["HIPOINK_API_BASE_URL", "CLOVER_API_BASE_URL"])
def test_a_deployed_function_refuses_plain_http_base_urls(
    monkeypatch: pytest.MonkeyPatch, in_lambda: None, variable: str
) -> None:
    monkeypatch.setenv(variable, "http://esl.example.com")
    with pytest.raises(ConfigurationError, match=f"{variable}: .*https:// in a deployed function"):
        load_settings()
    monkeypatch.setenv(variable, "https://esl.example.com/")
    assert getattr(load_settings(), variable.lower()) == "https://esl.example.com"


def test_locally_and_under_sam_local_http_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPOINK_API_BASE_URL", "http://host.docker.internal:4011")
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert load_settings().hipoink_api_base_url == "http://host.docker.internal:4011"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "HipoinkSenderFunction")
    monkeypatch.setenv("AWS_SAM_LOCAL", "true")
    assert load_settings().hipoink_api_base_url == "http://host.docker.internal:4011"


# ---------------------------------------------------------------- the database secret


def test_a_url_is_kept_as_it_is_locally() -> None:
    url = f"postgresql://app:{PASSWORD}@localhost:5433/esl?application_name=x"
    assert conninfo_to_dict(database_conninfo(url, require_tls=False)) == {
        "user": "app",
        "password": PASSWORD,
        "host": "localhost",
        "port": "5433",
        "dbname": "esl",
        "application_name": "x",
    }


def test_an_rds_json_secret_becomes_a_connection_with_tls_when_deployed() -> None:
    params = conninfo_to_dict(database_conninfo(json.dumps(RDS_SECRET), require_tls=True))
    assert params == {
        "user": "esl_sync_app",
        "password": PASSWORD,
        "host": RDS_SECRET["host"],
        "port": "5432",
        "dbname": "esl_sync",
        "sslmode": "require",
    }


@pytest.mark.parametrize("port", [5432, "5432", "6543"])
def test_the_port_may_be_a_number_or_digits(port: object) -> None:
    params = conninfo_to_dict(
        database_conninfo(json.dumps({**RDS_SECRET, "port": port}), require_tls=False)
    )
    assert params["port"] == str(port)


def test_without_a_dbname_libpq_picks_the_users() -> None:
    secret = {k: v for k, v in RDS_SECRET.items() if k not in ("dbname", "port")}
    params = conninfo_to_dict(database_conninfo(json.dumps(secret), require_tls=False))
    assert "dbname" not in params
    assert params["port"] == "5432"


@pytest.mark.parametrize(
    ("mode", "accepted"),
    [
        (None, True),
        ("require", True),
        ("verify-ca", True),
        ("verify-full", True),
        ("disable", False),
        ("allow", False),
        ("prefer", False),
    ],
)
def test_deployed_connections_use_tls(mode: str | None, accepted: bool) -> None:
    url = "postgresql://app:pw@db.example.com/esl" + (f"?sslmode={mode}" if mode else "")
    if accepted:
        params = conninfo_to_dict(database_conninfo(url, require_tls=True))
        assert params["sslmode"] == (mode or "require")
    else:
        with pytest.raises(ConfigurationError, match=f"sslmode={mode} is refused"):
            database_conninfo(url, require_tls=True)
        assert conninfo_to_dict(database_conninfo(url, require_tls=False))["sslmode"] == mode


BAD_SECRETS = [
    ("", "the secret is empty"),
    ("   ", "the secret is empty"),
    (f"not a url {PASSWORD}", "not a Postgres URL"),
    (f"postgresql://u:{PASSWORD}@h/db?sslmode=bogus", "sslmode must be one of"),
    (f"postgresql://u:{PASSWORD}@h/db?nonsense=1", "not a Postgres URL"),
    ("[1, 2]", "not a Postgres URL"),
    ('{"username": "a", "password": "' + PASSWORD, "not a JSON object"),
    (json.dumps([RDS_SECRET]), "not a Postgres URL"),
    (json.dumps({"username": "app", "password": PASSWORD}), "non-empty 'host'"),
    (json.dumps({**RDS_SECRET, "username": ""}), "non-empty 'username'"),
    (json.dumps({**RDS_SECRET, "password": None}), "non-empty 'password'"),
    (json.dumps({**RDS_SECRET, "host": 12}), "non-empty 'host'"),
    (json.dumps({**RDS_SECRET, "port": "abc"}), "port is not a port"),
    (json.dumps({**RDS_SECRET, "port": -1}), "port is not a port"),
    (json.dumps({**RDS_SECRET, "port": 70000}), "port is not a port"),
    (json.dumps({**RDS_SECRET, "port": True}), "port is not a port"),
    (json.dumps({**RDS_SECRET, "port": 5432.5}), "port is not a port"),
    (json.dumps({**RDS_SECRET, "dbname": ""}), "dbname is empty"),
    (json.dumps({**RDS_SECRET, "dbname": ["esl"]}), "dbname is empty"),
    (json.dumps({**RDS_SECRET, "engine": "mysql"}), "engine is not Postgres"),
]


@pytest.mark.parametrize(("text", "reason"), BAD_SECRETS)
def test_a_bad_secret_is_named_never_quoted(text: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        database_conninfo(text, require_tls=False)
    assert reason in str(caught.value)
    assert str(caught.value).startswith("invalid setting: DATABASE_URL: ")
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    "password", ["p'a\"s s\\w=o;r&d", "\u00e9\u00df\u4e2d", "x" * 1_000_000, "pw?sslmode=disable"]
)
def test_any_password_survives_the_json_form_intact(password: str) -> None:
    text = json.dumps({**RDS_SECRET, "password": password})
    params = conninfo_to_dict(database_conninfo(text, require_tls=True))
    assert params["password"] == password
    assert params["sslmode"] == "require"


# A password written into a URL without percent-encoding: libpq reads its pieces as the
# host, port or database name, and the connection's error quotes them ("failed to resolve
# host 'Secret@db.example.com'"): a password in the log, on the operator's terminal and in
# CloudFormation's answer. Refused by name, never quoted, before any connection.
UNENCODED_URLS = [
    ("@ in the password", "postgresql://app:Sup3r@Secret@db.example.com:5432/esl"),
    ("/ in the password", "postgresql://app:Sup3r/Secret@db.example.com:5432/esl"),
    ("both", "postgres://app:S/up3r@Secret@db.example.com/esl"),
    ("NUL in the password", "postgresql://app:Sup3r\x00Secret@db.example.com/esl"),
    ("NUL in a key=value password", "host=db.example.com user=app password=Sup3r\x00Secret"),
]


@pytest.mark.parametrize(("name", "url"), UNENCODED_URLS)
def test_a_password_libpq_would_misread_is_refused_by_name(name: str, url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        database_conninfo(url, require_tls=False)
    said = str(caught.value)
    assert said.startswith("invalid setting: DATABASE_URL: "), name
    assert "Secret" not in said
    assert "Sup3r" not in said


def test_a_nul_in_a_json_secrets_field_is_refused_by_name() -> None:
    text = json.dumps({**RDS_SECRET, "password": "Sup3r\x00Secret"})
    with pytest.raises(ConfigurationError, match="NUL") as caught:
        database_conninfo(text, require_tls=False)
    assert "Secret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:Sup3r%40Secret@db.example.com/esl",  # encoded: fine
        "postgresql://app:Sup3r%2FSecret@db.example.com/esl",
        "postgresql://app:Sup3r?Secret@db.example.com/esl",  # libpq reads these whole
        "postgresql://app:Sup3r#Secret@db.example.com/esl",
        "postgresql://app:Sup3r:Secret@db.example.com/esl",
        "postgresql:///esl?host=/tmp/sock&user=app&password=Sup3r@Secret",
    ],
)
def test_a_password_libpq_reads_whole_is_kept(url: str) -> None:
    params = conninfo_to_dict(database_conninfo(url, require_tls=False))
    assert params["password"].startswith("Sup3r")
    assert params["password"].endswith("Secret")
