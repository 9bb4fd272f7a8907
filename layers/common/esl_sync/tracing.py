"""The X-Ray SDK's tracer (Powertools), for every function but the poller.

Importing this module loads the X-Ray SDK and patches botocore, so every AWS call becomes a
subsegment of the function's trace; the functions that call Clover or Hipoink patch httpx
too (``tracer.patch(("httpx",))``), so the others never load it. Patching all it knows
would also load and patch what no function uses (sqlite3) and trace botocore's requests
twice (http.client under it); its psycopg patch needs psycopg_pool, absent here.

The poller does not import it: it is traced by Lambda's active tracing alone (its
invocations, initialization and errors, linked to the SQS message that started them), which
costs it nothing at start. The SDK, its patches and the subsegments of a poll's AWS and
Clover calls were a quarter of its cold start, and the poller is the function that starts
most often (docs/architecture.md, "Cheap cold starts").
"""

from __future__ import annotations

from aws_lambda_powertools import Tracer

from esl_sync.observability import SERVICE

tracer = Tracer(service=SERVICE, patch_modules=("botocore",))

__all__ = ["tracer"]
