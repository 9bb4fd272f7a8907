"""What the app's browser-facing routes need: a strict reader of query strings and small
HTML pages with the security headers every answer carries.

The query reader is the standard library's (``urllib.parse.parse_qsl``) with its edges
closed: a length and field-count bound, UTF-8 decoding that refuses instead of replacing,
and a parameter the caller reads given twice is refused (API Gateway would join repeats
with commas). Values come back decoded and unchecked: each route checks its own.

Pages never quote what the browser sent, and never hold a secret: they say what happened
and, for failures, a reference id the operator finds in the logs.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_QUERY_CHARS = 4096
"""Clover's redirects carry five short parameters; anything longer is not one of them."""
MAX_QUERY_FIELDS = 32

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;"
    "color:#1b1b1b}h1{font-size:1.4em}.ref{color:#555;font-size:.9em}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
"""Every answer: not cached anywhere, no Referer leaving it (its URL may hold Clover's
code), nothing loaded, run or framed but its own inline style."""


class QueryRefused(ValueError):
    """A query string this route does not read; the message is safe to show."""


def read_query(raw: str, known: Collection[str]) -> dict[str, str]:
    """The ``known`` parameters of a raw query string (others are ignored), decoded."""
    if len(raw) > MAX_QUERY_CHARS:
        raise QueryRefused("the address is too long")
    if not raw.isascii() or not raw.isprintable():
        raise QueryRefused("the address holds characters a browser does not send")
    try:
        pairs = parse_qsl(
            raw,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except UnicodeDecodeError:
        raise QueryRefused("the address is not valid UTF-8") from None
    except ValueError:
        raise QueryRefused("the address has too many parameters") from None
    found: dict[str, str] = {}
    for name, value in pairs:
        if name not in known:
            continue
        if name in found:
            raise QueryRefused(f"the parameter {name} is given more than once")
        found[name] = value
    return found


@dataclass(frozen=True)
class Page:
    """One small HTML answer. ``location`` makes it a redirect (its body a link)."""

    status: int
    title: str
    paragraphs: tuple[str, ...] = ()
    reference: str | None = None
    location: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "text/html; charset=utf-8", **SECURITY_HEADERS}
        if self.location is not None:
            headers["Location"] = self.location
        return headers

    @property
    def body(self) -> str:
        parts = [f"<p>{html.escape(p)}</p>" for p in self.paragraphs]
        if self.location is not None:
            parts.append(f'<p><a href="{html.escape(self.location)}">Continue</a></p>')
        if self.reference is not None:
            parts.append(f'<p class="ref">Reference: {html.escape(self.reference)}</p>')
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(self.title)}</h1>{''.join(parts)}</body></html>"
        )
