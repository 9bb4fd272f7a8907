"""The X-Ray SDK's tracer (Powertools), for every function but the poller.

Importing this module loads the X-Ray SDK and patches botocore, so every AWS call becomes a
subsegment of the function's trace; the functions that call Clover or Hipoink patch httpx
too (``tracer.patch(("httpx",))``), so the others never load it. Patching all it knows
would also load and patch what no function uses (sqlite3) and trace botocore's requests
twice (http.client under it); its psycopg patch needs psycopg_pool, absent here.

The poller does not import it: it is traced by Lambda's active tracing alone (its
invocations, initialization and errors, linked to the SQS message that started them), which
costs it nothing. It is the function that starts most often and makes the most calls: the
SDK's import and patches were ≈ 10 ms of its cold start (A/B over alternating fresh
processes: 461 → 449 ms, median of 17 each, on a loaded machine; within the noise in a
second run), and with Powertools' settings every closed subsegment is a UDP message to the
daemon, so a poll paid for one per AWS or Clover call. What operators lose: the poller's
traces have no subsegment per call (README, "Operations").
"""

from __future__ import annotations

from aws_lambda_powertools import Tracer

from esl_sync.observability import SERVICE

tracer = Tracer(service=SERVICE, patch_modules=("botocore",))

__all__ = ["tracer"]
