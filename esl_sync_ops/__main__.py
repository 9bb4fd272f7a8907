"""``python -m esl_sync_ops``: the ``esl-sync`` command."""

import sys

from esl_sync_ops import run

sys.exit(run())
