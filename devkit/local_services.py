"""The local stack's services, for `sam local invoke` in Docker.

``python -m devkit.local_services`` (with ``DATABASE_URL`` naming a Postgres that containers
can reach too, e.g. one started with ``docker run -p 5432:5432 postgres:15``) runs AWS
emulation, the Clover and Hipoink simulators and the demo merchant of the sample events on
the ports ``events/sam-local-env.json`` names, listening on every interface, until Ctrl-C.
Inside a Lambda container 127.0.0.1 is the container itself: the env file reaches this
machine as ``host.docker.internal`` (Docker Desktop provides the name; on Linux pass
``--add-host host.docker.internal:host-gateway`` to ``sam local invoke``), and the database
secret gets the same host.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Sequence

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devkit.catalog import gas_station_catalog
from devkit.local_stack import Listen, LocalStack

CONTAINER_HOST = "host.docker.internal"
DEMO_MERCHANT = "MDEMO0000001"  # the merchant and store of events/*.json
DEMO_STORE = "STORE-DEMO-1"
DEMO_TOKEN = "demo-token"


def container_database_url(url: str, host: str = CONTAINER_HOST) -> str:
    """``url`` as a container reaches it: a loopback host becomes ``host``."""
    params = conninfo_to_dict(url)
    if params.get("host", "localhost") in ("localhost", "127.0.0.1", "::1"):
        params["host"] = host
    return make_conninfo("", **params)


def start(database_url: str, listen: Listen, container_host: str = CONTAINER_HOST) -> LocalStack:
    """A started local stack serving ``listen``, holding the demo merchant (Postgres:
    ``database_url``, which must also be ``DATABASE_URL`` in the environment)."""
    stack = LocalStack(
        listen=listen, database_secret=container_database_url(database_url, container_host)
    ).__enter__()
    try:
        stack.add_merchant(DEMO_MERCHANT, DEMO_TOKEN, DEMO_STORE, items=gas_station_catalog(60))
    except BaseException:
        stack.__exit__(None, None, None)
        raise
    return stack


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.local_services", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on")
    parser.add_argument("--aws-port", type=int, default=Listen.aws_port)
    parser.add_argument("--clover-port", type=int, default=Listen.clover_port)
    parser.add_argument("--hipoink-port", type=int, default=Listen.hipoink_port)
    args = parser.parse_args(argv)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        print("DATABASE_URL must name a Postgres that containers can reach", file=sys.stderr)
        return 2
    listen = Listen(args.host, args.aws_port, args.clover_port, args.hipoink_port)
    stack = start(database_url, listen)
    try:
        print(
            f"serving AWS on :{args.aws_port}, Clover on :{args.clover_port}, Hipoink on"
            f" :{args.hipoink_port}; demo merchant {DEMO_MERCHANT}. Ctrl-C stops.",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stack.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
