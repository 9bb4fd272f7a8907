"""The operator's tool, ``esl-sync``: merchants, status, heal, redrive, resync, migrate.

Installed with the package (``pip install .`` puts ``esl-sync`` on the PATH) and run from
an operator's machine against a deployed stack (``--stack``) or a local one; not part of
the Lambda layer. It reaches the stores through :mod:`esl_sync.runtime` and acts through
:mod:`esl_sync.admin`, like the functions do.
"""
