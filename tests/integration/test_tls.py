"""One verified TLS context per trust store for every HTTPS client of a process
(esl_sync.tls): Hipoink's, Clover's and the AWS client verify with it, and a certificate no
trusted root signed is refused by each."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import certifi
import pytest

from devkit.hipoink_sim import HipoinkSimulator
from esl_sync import tls
from esl_sync.clover.client import CloverClient
from esl_sync.clover.errors import CloverConnectionError
from esl_sync.clover.oauth import CloverOAuthClient
from esl_sync.hipoink.client import HipoinkClient
from esl_sync.hipoink.errors import HipoinkConfigError, HipoinkRetryable
from esl_sync.records import ItemPage
from esl_sync.store import aws_json
from esl_sync.store.aws_json import AwsError
from tests.tls_certs import self_signed

Built = list[tuple[str | None, str | None]]
Https = tuple[str, Path, Built]


class _Answer(BaseHTTPRequestHandler):
    """``{"error_code": 0}`` to every POST: a Hipoink success, an empty AWS answer; an empty
    page of Clover items to every GET."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"elements": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error_code": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.posts += 1  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Https]:
    """(URL of an HTTPS server with its own certificate, the certificate, the trust stores of
    every TLS context built since), with every context and AWS client forgotten around it."""
    cert, key = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.posts = 0  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(  # shutdown() waits up to one poll_interval (0.5 s by default)
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    url = f"https://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTLSTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "tls-test-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    # Every context the process builds, whoever builds it (httpx builds its own with this
    # function when it is given none).
    built: Built = []
    create = ssl.create_default_context

    def counted(
        purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: str | bytes | None = None,
    ) -> ssl.SSLContext:
        built.append((cafile, capath))
        return create(purpose, cafile=cafile, capath=capath, cadata=cadata)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    tls.forget()
    aws_json.forget_clients()
    try:
        yield url, cert, built
    finally:
        aws_json.forget_clients()
        tls.forget()
        server.shutdown()
        server.server_close()


def _hipoink(url: str) -> HipoinkClient:
    return HipoinkClient(url, "client-1", lambda: "the-sign")


def _clover_page(clover: CloverClient, url: str) -> ItemPage:
    return clover.merchant("MTLS00000001", "tok-tls", url).list_page([("limit", "10")])


def test_a_certificate_no_trusted_root_signed_is_refused(https: Https) -> None:
    url, _, built = https
    # A configuration error (the store is blocked, not retried into the dead-letter queue).
    with pytest.raises(
        HipoinkConfigError,
        match=r"^create_multiple: Hipoink's TLS certificate failed verification \(self.signed",
    ):
        _hipoink(url).upsert("STORE-1", [])
    with pytest.raises(AwsError) as raised:
        aws_json.client("dynamodb", attempts=1).call("GetItem", {})
    assert raised.value.code == "SSLError"
    with CloverClient(max_attempts=1) as clover, pytest.raises(CloverConnectionError) as refused:
        _clover_page(clover, url)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert built == [(certifi.where(), None)]  # certifi's roots, loaded once for all three


@pytest.mark.usefixtures("https")  # its trust stores: certifi's alone
def test_a_handshake_that_fails_otherwise_is_retried() -> None:
    """Not every TLS failure is about the certificate: a server that answers plain HTTP to
    a TLS handshake (or breaks it off) may be a passing fault, so it stays retryable."""
    with HipoinkSimulator(sign="the-sign") as plain:
        https_to_plain = plain.base_url.replace("http://", "https://")
        with pytest.raises(HipoinkRetryable, match=r"^create_multiple: ConnectError$"):
            _hipoink(https_to_plain).upsert("STORE-1", [])
        assert plain.request_count() == 0


def test_every_https_client_verifies_with_the_one_context_of_its_trust_store(
    https: Https, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert, built = https
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as httpx reads it
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))  # as botocore reads it
    clover, oauth, hipoink, sender = (
        CloverClient(),
        CloverOAuthClient("app-1"),
        _hipoink(url),
        _hipoink(url),
    )
    hipoink.upsert("STORE-1", [])
    sender.upsert("STORE-1", [])
    assert _clover_page(clover, url).elements == []
    assert aws_json.client("kms").call("Decrypt", {}) == {"error_code": 0}
    assert aws_json.client("dynamodb").call("GetItem", {}) == {"error_code": 0}
    assert built == [(str(cert), None)]  # one context: four HTTPS clients and AWS
    for each in (clover, oauth, hipoink, sender):
        each.close()


def test_ssl_cert_dir_is_honoured_as_httpx_would(
    https: Https, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, cert, built = https
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    tls.for_https()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the file wins, as in httpx
    _hipoink(url).upsert("STORE-1", [])
    assert built == [(None, str(tmp_path)), (str(cert), None)]
