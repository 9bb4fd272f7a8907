"""Events API Gateway's HTTP API would never send, shared by the tests of the functions it
fronts (webhook, onboarding): each a change to a well-formed payload 2.0 event that puts a
wrong type where API Gateway always puts the same one. The functions refuse them with a
400 before routing, never with the resolver's exception or a 5xx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def change_at(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A change of the event: ``value`` at the dotted ``path``."""

    def change(event: dict[str, Any]) -> None:
        *parents, name = path.split(".")
        for parent in parents:
            event = event[parent]
        event[name] = value

    return change


MALFORMED_EVENTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "a number for the query": change_at("rawQueryString", 5),
    "a list for the query": change_at("rawQueryString", ["merchant_id=MHOSTILE0001"]),
    "null for the query": change_at("rawQueryString", None),
    "a list for the headers": change_at("headers", ["host"]),
    "a number for a header": change_at("headers", {"x-clover-auth": 5}),
    "a number for the body": change_at("body", 5),
    "a string for the request context": change_at("requestContext", "x"),
    "no method": change_at("requestContext.http", {}),
    "a number for the method": change_at("requestContext.http.method", 5),
    "a number for the request id": change_at("requestContext.requestId", 7),
    "a list for the domain name": change_at("requestContext.domainName", ["x"]),
    "a number for the path": change_at("rawPath", 5),
}
