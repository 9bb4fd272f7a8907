"""certifi's roots as an OpenSSL hashed directory: the same trust, loaded only as needed.

A context built from certifi's bundle (``cafile``) parses all of its ≈ 150 roots, ≈ 30 ms of
CPU on every cold start of every function that speaks HTTPS; a context built from a hashed
directory (``capath``) parses none until a handshake needs one, and then only the roots
whose subject it names (a file read each, well under a millisecond). The layer's build
(``layers/common/Makefile``) writes the directory next to this module from the very bundle it
ships; :func:`folder_for` gives it only while it still matches that bundle byte for byte, so
the roots trusted are certifi's whatever the path (:mod:`esl_sync.tls` falls back to the
bundle otherwise).

OpenSSL finds a root in such a directory by the file name ``<subject hash>.<n>``, the hash
being ``X509_NAME_hash``: the first four bytes (little-endian) of the SHA-1 of the subject's
canonical encoding. Python's ``ssl`` module does not expose it, and requiring the ``openssl``
command at build time would make the layer's build depend on which OpenSSL (or LibreSSL) a
deployer's machine has, so it is computed here: a small DER reader and OpenSSL's
canonicalization (``x509_name_canon``: each string value as UTF-8, ASCII lower-cased,
outer white space dropped, inner runs of white space one space; each RDN re-encoded as a DER
``SET``, the name's ``SEQUENCE`` header left out). The tests hold it equal to
``openssl x509 -subject_hash`` on every certifi root and on names built to be awkward.
"""

from __future__ import annotations

import hashlib
import importlib.util
import ssl
import sys
from pathlib import Path

FOLDER = Path(__file__).with_name("_hashed_roots")
"""Where the layer's build writes the directory (absent in a source checkout)."""
SOURCE = "SOURCE"
"""The file in the directory holding the SHA-256 of the bundle it was written from."""

_SEQUENCE, _SET, _OID, _UTF8 = 0x30, 0x31, 0x06, 0x0C
_BMP, _UNIVERSAL = 0x1E, 0x1C
_ONE_BYTE_STRINGS = {0x13, 0x14, 0x16, 0x1A}  # Printable, T61, IA5, Visible: read as Latin-1
_SPACE = b" \t\n\v\f\r"  # OpenSSL's ossl_isspace


class BadCertificate(ValueError):
    """A certificate whose DER this reader cannot follow to its subject."""


def subject_hash(der: bytes) -> int:
    """OpenSSL's ``X509_subject_name_hash`` of a DER certificate."""
    return name_hash(_subject(der))


def name_hash(name: bytes) -> int:
    """OpenSSL's ``X509_NAME_hash`` of a DER ``Name`` (its SEQUENCE included)."""
    digest = hashlib.sha1(_canonical(name), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "little")


def write(cafile: Path, folder: Path) -> int:
    """Write every root of the PEM bundle ``cafile`` into ``folder`` as ``<hash>.<n>``, and
    the bundle's SHA-256 as ``SOURCE``; the number of roots written."""
    bundle = cafile.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    taken: dict[int, int] = {}
    marker = "-----END CERTIFICATE-----"
    blocks = [part + marker for part in bundle.decode("ascii").split(marker) if "BEGIN" in part]
    for pem in blocks:
        pem = pem[pem.index("-----BEGIN CERTIFICATE-----") :]
        key = subject_hash(ssl.PEM_cert_to_DER_cert(pem))
        n = taken[key] = taken.get(key, -1) + 1
        (folder / f"{key:08x}.{n}").write_text(pem + "\n", encoding="ascii")
    (folder / SOURCE).write_text(hashlib.sha256(bundle).hexdigest() + "\n", encoding="ascii")
    return len(blocks)


def certifi_bundle() -> str | None:
    """certifi's bundle (the file ``certifi.where()`` names), found without importing certifi:
    its import loads ``importlib.resources`` (≈ 20 ms of a cold start) to cover installs from
    a zip, which a layer is not. ``None`` without certifi."""
    spec = importlib.util.find_spec("certifi")
    if spec is None or spec.origin is None:
        return None
    bundle = Path(spec.origin).with_name("cacert.pem")
    if bundle.is_file():
        return str(bundle)
    import certifi  # installed some other way: let it say where

    return str(certifi.where())


def folder_for(cafile: str, folder: Path | None = None) -> str | None:
    """``folder`` (the layer's :data:`FOLDER`) if it was written from exactly this bundle,
    else ``None``."""
    folder = FOLDER if folder is None else folder
    try:
        written = (folder / SOURCE).read_text(encoding="ascii").strip()
        bundle = Path(cafile).read_bytes()
    except OSError:
        return None
    return str(folder) if written == hashlib.sha256(bundle).hexdigest() else None


# -- DER, as little of it as a certificate's subject needs ----------------------------------


def _element(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the DER element at ``at``."""
    if at + 2 > len(data):
        raise BadCertificate("truncated element")
    tag, length = data[at], data[at + 1]
    start = at + 2
    if length & 0x80:
        size = length & 0x7F
        if not 1 <= size <= 4 or start + size > len(data):
            raise BadCertificate("bad length")
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    if start + length > len(data):
        raise BadCertificate("element runs past its parent")
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, content end) of each element in a content."""
    found = []
    at = start
    while at < end:
        tag, content, stop = _element(data, at)
        found.append((tag, at, content, stop))
        at = stop
    return found


def _subject(der: bytes) -> bytes:
    tag, start, end = _element(der, 0)
    if tag != _SEQUENCE:
        raise BadCertificate("not a certificate")
    tag, start, end = _element(der, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise BadCertificate("no tbsCertificate")
    fields = _children(der, start, end)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 5:
        raise BadCertificate("tbsCertificate too short")
    _tag, at, _content, stop = fields[4]  # serial, signature, issuer, validity, subject
    return der[at:stop]


def _canonical(name: bytes) -> bytes:
    tag, start, end = _element(name, 0)
    if tag != _SEQUENCE or end != len(name):
        raise BadCertificate("a name is a SEQUENCE")
    out = bytearray()
    for rdn_tag, _at, rdn_start, rdn_end in _children(name, start, end):
        if rdn_tag != _SET:
            raise BadCertificate("a relative name is a SET")
        entries = []
        for entry_tag, _e, entry_start, entry_end in _children(name, rdn_start, rdn_end):
            parts = _children(name, entry_start, entry_end)
            if entry_tag != _SEQUENCE or len(parts) != 2 or parts[0][0] != _OID:
                raise BadCertificate("an attribute is a SEQUENCE of an OID and a value")
            (_t, oid_at, _c, oid_end), (value_tag, value_at, value_start, value_end) = parts
            value = _canonical_value(value_tag, name[value_start:value_end])
            # A type OpenSSL does not canonicalize (value None) is kept as encoded.
            encoded_value = name[value_at:value_end] if value is None else _der(_UTF8, value)
            entries.append(_der(_SEQUENCE, name[oid_at:oid_end] + encoded_value))
        out += _der(_SET, b"".join(sorted(entries)))  # DER orders a SET OF by encoding
    return bytes(out)


def _canonical_value(tag: int, content: bytes) -> bytes | None:
    """OpenSSL's ``asn1_string_canon``: the value as canonical UTF-8, or None for a type it
    copies as is."""
    if tag == _UTF8:
        text = content
    elif tag == _BMP:
        text = content.decode("utf-16-be").encode()
    elif tag == _UNIVERSAL:
        text = content.decode("utf-32-be").encode()
    elif tag in _ONE_BYTE_STRINGS:
        text = content.decode("latin-1").encode()
    else:
        return None
    text = text.strip(_SPACE)
    out = bytearray()
    i = 0
    while i < len(text):
        byte = text[i]
        if byte in _SPACE:
            out.append(0x20)
            while i < len(text) and text[i] in _SPACE:
                i += 1
            continue
        out.append(byte + 32 if 0x41 <= byte <= 0x5A else byte)
        i += 1
    return bytes(out)


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = (n.bit_length() + 7) // 8
    return bytes((tag, 0x80 | size)) + n.to_bytes(size, "big") + content


def main(argv: list[str]) -> int:
    """``python -m esl_sync.hashed_roots CAFILE FOLDER``: the layer build's step."""
    if len(argv) != 2:
        print("usage: python -m esl_sync.hashed_roots CAFILE FOLDER", file=sys.stderr)
        return 2
    count = write(Path(argv[0]), Path(argv[1]))
    print(f"{count} roots written to {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
