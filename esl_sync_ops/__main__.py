"""``python -m esl_sync_ops``: the ``esl-sync`` command."""

import sys

from esl_sync_ops.cli import main

sys.exit(main())
