"""botocore, for the operator's CLI only: its credential chain (profiles, SSO) when the
environment holds no keys, and its CloudFormation client (:mod:`esl_sync.store.stack`). The
functions' calls go through :mod:`esl_sync.store.aws_json` and never import botocore.
Clients are built one at a time from one botocore session, whose data loader looks up only
the services it is asked about, and they tell :mod:`esl_sync.aws_observers` of each call (the
local stack records the CLI's calls too).

botocore, not boto3: the library calls clients only (no resources, no S3 transfers), and
importing boto3 also imports s3transfer and multiprocessing's managers, ≈ 8 % of a poller's
cold start for nothing it uses. boto3's client is botocore's, with boto3's resource hooks
(unused) and its name in the user agent; errors, retries, endpoints and configuration are
botocore's in both.

botocore checks that a service exists by listing every service it has data for: it reads
the folders of some 400 services, twice (the service model and its endpoint rules), the
first time a client is built. That is a third of a poller's cold start, spent on
services it never calls. :class:`_ServiceNames` answers the same question for one
service by reading that service's folder alone, and lists them all only if something
actually iterates the list (botocore does so for its error message, nothing else); so the
answer is exactly botocore's, at the price of the services asked about.

Clients are thread-safe, a session is not: clients are built under a lock (the poller's
threads may build one lazily, e.g. for KMS). The local stack's recorder of AWS calls hooks
into :func:`session`'s events (devkit/aws_calls.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any, overload

import botocore.session
from botocore.exceptions import DataNotFoundError
from botocore.loaders import Loader

from esl_sync import aws_observers

_lock = threading.RLock()
_session: botocore.session.Session | None = None


def session() -> botocore.session.Session:
    """The process's botocore session, with the quick loader (built on first use)."""
    global _session
    with _lock:
        if _session is None:
            core = botocore.session.get_session()
            paths = core.get_config_variable("data_path")
            core.register_component("data_loader", _quick_loader(paths))
            core.register("before-parameter-build", _tell_observers)
            _session = core
        return _session


def _tell_observers(**event: Any) -> None:
    """A botocore call (``before-parameter-build``), as the JSON client tells its observers of
    one (its start only: no observer of a CLI's calls needs their end)."""
    model = event["model"]
    aws_observers.tell(model.service_model.signing_name, model.name, event["params"])


def client(service: str, **kwargs: Any) -> Any:
    """``session().create_client(service, **kwargs)``, under the lock."""
    with _lock:
        return session().create_client(service, **kwargs)


def _quick_loader(search_paths: str | None) -> _QuickLoader:
    """What ``botocore.loaders.create_loader`` makes of ``AWS_DATA_PATH``, quick."""
    if search_paths is None:
        return _QuickLoader()
    paths = [os.path.expanduser(os.path.expandvars(p)) for p in search_paths.split(os.pathsep)]
    return _QuickLoader(extra_search_paths=paths)


class _QuickLoader(Loader):
    """botocore's loader, which tells whether a service exists without listing them all."""

    # botocore's stubs say list; botocore itself only asks ``in`` of it (and lists it for an
    # error message), which the sequence answers (a list subclass could not be trusted to).
    def list_available_services(self, type_name: str) -> Sequence[str]:  # type: ignore[override]
        return _ServiceNames(self, type_name)

    def full_list(self, type_name: str) -> list[str]:
        names: list[str] = super().list_available_services(type_name)
        return names


class _ServiceNames(Sequence[str]):
    """The services a loader has data of ``type_name`` for: ``in`` reads one service's
    folder; iterating (or indexing) lists them all, as botocore would."""

    def __init__(self, loader: _QuickLoader, type_name: str) -> None:
        self._loader, self._type = loader, type_name
        self._all: list[str] | None = None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return bool(self._loader.list_api_versions(name, self._type))
        except DataNotFoundError:
            return False

    def _names(self) -> list[str]:
        if self._all is None:
            self._all = self._loader.full_list(self._type)
        return self._all

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._names()[index]
