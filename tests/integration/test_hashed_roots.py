"""certifi's roots as an OpenSSL hashed directory (esl_sync.hashed_roots): each file named as
OpenSSL names it (checked against the ``openssl`` command itself), found by a real handshake,
loaded only when needed, and used only while it matches the bundle it was written from."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esl_sync import hashed_roots, tls

CERTIFI = Path(certifi.where())


def _openssl_hash(pem: str) -> str:
    done = subprocess.run(
        ["openssl", "x509", "-subject_hash", "-noout"],
        input=pem,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def _openssl_hashes(pems: list[str], folder: Path) -> list[str]:
    """Each PEM's subject hash as openssl names it, by one ``openssl rehash`` of a folder of
    them (its links are named ``HASH.N``) instead of one process a root; a PEM it gives no
    link (a duplicate certificate) is asked alone."""
    folder.mkdir()
    for index, pem in enumerate(pems):
        (folder / f"{index:04d}.pem").write_text(pem, encoding="ascii")
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
    named = {
        int(link.readlink().name.removesuffix(".pem")): link.name.split(".")[0]
        for link in folder.iterdir()
        if link.is_symlink()
    }
    return [named.get(index) or _openssl_hash(pem) for index, pem in enumerate(pems)]


def _pems(bundle: Path) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    parts = bundle.read_text(encoding="ascii").split(marker)
    return [p[p.index("-----BEGIN") :] + marker + "\n" for p in parts if "BEGIN" in p]


def _certificate(folder: Path, subject: str, *config: str) -> Path:
    """A self-signed certificate for 127.0.0.1 with ``subject`` (openssl's -subj syntax)."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    conf = folder / "openssl.cnf"
    conf.write_text(
        "\n".join(["[req]", "distinguished_name = dn", *config, "[dn]"]) + "\n", encoding="utf-8"
    )
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-utf8"),
            *("-config", str(conf), "-multivalue-rdn"),
            *("-keyout", str(key), "-out", str(cert), "-subj", subject),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert


def test_every_certifi_root_is_named_as_openssl_names_it(tmp_path: Path) -> None:
    pems = _pems(CERTIFI)
    assert len(pems) > 100
    written = hashed_roots.write(CERTIFI, tmp_path / "roots")
    assert written == len(pems)
    names = sorted(p.name for p in (tmp_path / "roots").iterdir() if p.name != "SOURCE")
    assert len(names) == len(pems)
    expected: dict[str, str] = {}
    for pem, key in zip(pems, _openssl_hashes(pems, tmp_path / "openssl"), strict=True):
        expected[f"{key}.{sum(n.startswith(key) for n in expected)}"] = pem
    assert names == sorted(expected)
    # Each file holds the root its name says: the very certificate openssl named so above
    # (asking openssl again for the file's name would run 140 more processes, 3.5 s).
    for name, pem in expected.items():
        assert ssl.PEM_cert_to_DER_cert((tmp_path / "roots" / name).read_text()) == (
            ssl.PEM_cert_to_DER_cert(pem)
        )


@pytest.mark.parametrize(
    ("subject", "config"),
    [
        ("/CN=Example Root/O=ACME Corp/C=US", ()),
        ("/CN=  MiXeD   Case\tand  Spaces  /O=a", ()),  # case, outer and inner white space
        ("/CN=b+O=a+OU=Z/C=DE", ()),  # a multi-valued RDN, out of order
        ("/CN=Zürich Ünïcode 中文 Root/O=Société", ()),  # UTF8String
        ("/CN=Zürich BMP Root/O=plain", ("string_mask = default",)),  # BMP/T61/Printable
        ("/CN=PRINTABLE ONLY/serialNumber=12 34/emailAddress=Ops@Example.COM", ()),
        ("/DC=com/DC=Example/CN=x", ()),  # IA5String domain components
    ],
)
def test_awkward_names_hash_as_openssl_hashes_them(
    tmp_path: Path, subject: str, config: tuple[str, ...]
) -> None:
    pem = _certificate(tmp_path, subject, *config).read_text()
    ours = hashed_roots.subject_hash(ssl.PEM_cert_to_DER_cert(pem))
    assert f"{ours:08x}" == _openssl_hash(pem)


_NAME_TEXT = st.text(
    alphabet=st.sampled_from([*"aZ09 .-_'", "\t", "é", "Ä", "中", "ß", "İ", "Ω"]),
    min_size=1,
    max_size=24,
).filter(lambda t: t.strip(" \t") != "")


@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(common=_NAME_TEXT, organization=_NAME_TEXT)
def test_any_name_hashes_as_openssl_hashes_it(
    tmp_path: Path, common: str, organization: str
) -> None:
    pem = _certificate(tmp_path, f"/CN={common}/O={organization}").read_text()
    ours = hashed_roots.subject_hash(ssl.PEM_cert_to_DER_cert(pem))
    assert f"{ours:08x}" == _openssl_hash(pem)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """(port of a TLS server on 127.0.0.1 with its own certificate, that certificate)."""
    cert = _certificate(tmp_path, "/CN=Esl Sync Test Root/O=Hashed   Roots")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], cert
    stop.set()
    thread.join()
    listener.close()


def _handshake(context: ssl.SSLContext, port: int) -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass


def test_a_handshake_finds_its_root_in_the_directory_that_parsed_nothing_before(
    tmp_path: Path, server: tuple[int, Path]
) -> None:
    port, cert = server
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(CERTIFI.read_text() + cert.read_text(), encoding="ascii")
    hashed_roots.write(bundle, tmp_path / "roots")
    context = ssl.create_default_context(
        capath=hashed_roots.folder_for(str(bundle), tmp_path / "roots")
    )
    assert context.get_ca_certs() == []  # nothing parsed before a handshake asks
    _handshake(context, port)  # verified: OpenSSL found the root by its file name


def test_a_root_the_bundle_lacks_is_not_trusted(tmp_path: Path, server: tuple[int, Path]) -> None:
    port, _cert = server
    hashed_roots.write(CERTIFI, tmp_path / "roots")
    context = ssl.create_default_context(
        capath=hashed_roots.folder_for(str(CERTIFI), tmp_path / "roots")
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(context, port)


def test_the_directory_serves_only_the_bundle_it_was_written_from(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(CERTIFI.read_bytes())
    hashed_roots.write(bundle, tmp_path / "roots")
    assert hashed_roots.folder_for(str(bundle), tmp_path / "roots") == str(tmp_path / "roots")
    bundle.write_bytes(CERTIFI.read_bytes() + b"\n")  # one byte more: another bundle
    assert hashed_roots.folder_for(str(bundle), tmp_path / "roots") is None
    assert hashed_roots.folder_for(str(tmp_path / "missing.pem"), tmp_path / "roots") is None
    assert hashed_roots.folder_for(str(CERTIFI), tmp_path / "nothing") is None
    (tmp_path / "roots" / hashed_roots.SOURCE).write_text("\x00garbage", encoding="latin-1")
    assert hashed_roots.folder_for(str(CERTIFI), tmp_path / "roots") is None


def test_tls_uses_the_layers_directory_when_it_matches_certifi_and_the_bundle_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    monkeypatch.setattr(hashed_roots, "FOLDER", tmp_path / "roots")
    tls.forget()
    try:
        assert len(tls.for_https().get_ca_certs()) == len(
            _pems(CERTIFI)
        )  # no directory: the bundle
        hashed_roots.write(CERTIFI, tmp_path / "roots")
        tls.forget()
        assert tls.for_https().get_ca_certs() == []  # the directory: parsed when needed
        assert tls.for_aws() is tls.for_https()  # one context for both
    finally:
        tls.forget()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(data=st.binary(max_size=300))
def test_bytes_that_are_no_certificate_are_refused_as_such(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # BadCertificate, or no text of its type
        hashed_roots.subject_hash(data)


def test_the_build_step_refuses_a_bad_call_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert hashed_roots.main(["only-one"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("usage:")


def test_certifis_bundle_is_found_without_importing_certifi() -> None:
    assert hashed_roots.certifi_bundle() == certifi.where()
    probe = (
        "import sys; from esl_sync import tls; tls.for_https(); tls.for_aws();"
        "print('certifi' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
