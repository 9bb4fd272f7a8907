"""The operator's tool, ``esl-sync``: merchants, status, heal, redrive, resync, migrate.

Installed with the package (``pip install .`` puts ``esl-sync`` on the PATH) and run from
an operator's machine against a deployed stack (``--stack``) or a local one; not part of
the Lambda layer. It reaches the stores through :mod:`esl_sync.runtime` and acts through
:mod:`esl_sync.admin`, like the functions do.
"""

import sys

INTERRUPTED = "interrupted"
"""What a Ctrl-C is answered with (``esl-sync: interrupted``, exit status 130)."""


def run() -> int:
    """The ``esl-sync`` entry point: :func:`esl_sync_ops.cli.main`, imported here, so that a
    Ctrl-C while the command's modules load (some 60 ms of each start) is the same one line
    as one during the command, not a traceback."""
    try:
        from esl_sync_ops.cli import main
    except KeyboardInterrupt:
        print(f"esl-sync: {INTERRUPTED}", file=sys.stderr)
        return 130
    return main()
