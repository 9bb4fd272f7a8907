"""Cold starts and peak memory, measured the way Lambda starts a function.

Each measurement is a fresh Python process per function, as Lambda makes one per instance,
with nothing on its path but what Lambda gives a function: the function's folder, the
layer as ``layers/common/Makefile`` builds it (for this machine's architecture), and the
runtime's own packages (boto3, botocore and what they need, with their bytecode: copied
from this environment, whose other packages, such as the SAM CLI's, are not on the path:
``python -S``). No bytecode is written (Lambda's file system is read-only). Lambda's
environment is set (``LAMBDA_TASK_ROOT``, the function's name, a sampled X-Ray trace id, so
the tracer and its patches run as deployed) and the secrets are read from Secrets Manager.
The child starts with what Lambda's Python runtime has imported before it imports a
handler (its bootstrap, runtime client, event marshaller and log formatter: ``logging``,
``json``, ``traceback``, ``datetime``, ``decimal``, ``enum``, ``math`` and
``concurrent.futures``' thread pool) and nothing else: ``importlib.util`` and
``importlib.abc``, which the runtime does not load, are the function's to pay.
It imports ``functions/<name>/app.py`` as the runtime does (``import app``), invokes it
once with an event, and reports the process's own CPU time (user + system) and wall time of
each step, and its peak resident memory. The emulators answer from the parent process, so
the child's CPU time is its own work; its wall time also holds their answers.

One liberty: a deployed function refuses ``http://`` endpoints and Postgres without TLS,
and the local stack offers only those, so the child's ``esl_sync.settings.deployed`` says
False (set by an import hook, after the module ran, so its import is timed as is). Since
nothing it calls is HTTPS, the child builds, inside the timed invocation, the verified TLS
context(s) a deployed function builds at its first HTTPS connection (:mod:`esl_sync.tls`:
one per trust store, the one a function's clients then share), so the figure holds them.
"""

from __future__ import annotations

import compileall
import json
import os
import platform
import py_compile
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from devkit.template import REPO_ROOT
from esl_sync import hashed_roots

_MARK = "ESL_SYNC_COLD_START "
_CHILD = r"""
# What Lambda's Python runtime has imported before it imports the handler (its bootstrap,
# runtime client, event marshaller and log formatter): the function does not pay for these.
# Nothing else: importlib.util, importlib.abc and the rest are the function's to pay.
import datetime, decimal, enum, importlib, importlib.machinery, json, logging, math, os, sys
import time, traceback
from concurrent.futures import ThreadPoolExecutor

class _Undeployed:  # a finder by duck typing (importlib.abc is not loaded)
    def find_spec(self, name, path, target=None):
        if name != "esl_sync.settings":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.deployed = lambda: False
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _Undeployed())
app, event_file, invoke = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
event = json.loads(open(event_file).read()) if invoke else None

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    memory_limit_in_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
    aws_request_id = "c0ffee00-0000-4000-8000-000000000000"
    def get_remaining_time_in_millis(self):
        return 300_000

cpu0, wall0 = time.process_time(), time.perf_counter()
module = importlib.import_module("app")  # as the runtime imports "app.lambda_handler"
assert os.path.samefile(module.__file__, app), module.__file__
cpu1, wall1 = time.process_time(), time.perf_counter()
if invoke:  # the TLS context a deployed function builds at its first HTTPS connection
    from esl_sync import tls
    tls.for_aws(), tls.for_https()
answer = module.lambda_handler(event, Context()) if invoke else None
cpu2, wall2 = time.process_time(), time.perf_counter()
# VmHWM, not getrusage: ru_maxrss keeps the forking parent's peak across exec.
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(__MARK__ + json.dumps({
    "import_cpu_ms": 1000 * (cpu1 - cpu0), "import_wall_ms": 1000 * (wall1 - wall0),
    "invoke_cpu_ms": 1000 * (cpu2 - cpu1), "invoke_wall_ms": 1000 * (wall2 - wall1),
    "peak_rss_mib": int(status.split()[0]) / 1024,
    "answer": answer,
}, default=str), flush=True)
""".replace("__MARK__", repr(_MARK))

# What Lambda sets in every function's environment (values as a deployed function sees them).
_TRACE_ID = "Root=1-67a1b2c3-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1"


@dataclass
class ColdStart:
    """Medians over the runs, with the spread of the total CPU (low, high)."""

    function: str
    runs: int
    import_cpu_ms: float
    import_wall_ms: float
    invoke_cpu_ms: float | None
    invoke_wall_ms: float | None
    peak_rss_mib: float
    cpu_low_ms: float
    cpu_high_ms: float

    @property
    def cpu_ms(self) -> float:
        """Import plus first invocation, CPU time: the figure the 250 ms goal is about."""
        return self.import_cpu_ms + (self.invoke_cpu_ms or 0.0)


RUNTIME_PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "urllib3",
    "python-dateutil",
    "six",
    "jmespath",
)
"""What the Lambda Python runtime provides besides the standard library."""


def copy_distributions(names: Iterable[str], folder: Path) -> Path:
    """The installed files of these distributions, copied into ``folder`` (bytecode left
    out, compiled anew by the caller as it needs)."""
    for name in names:
        distribution = metadata.distribution(name)
        for file in distribution.files or []:
            source = Path(str(distribution.locate_file(file)))
            if str(file).startswith("..") or source.suffix == ".pyc" or not source.is_file():
                continue
            target = folder / str(file)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return folder


def runtime_packages(folder: Path) -> Path:
    """The runtime's packages, compiled as an installed runtime has them."""
    copy_distributions(RUNTIME_PROVIDED, folder)
    compileall.compile_dir(folder, quiet=1, workers=0)
    return folder


def layer_from_environment(folder: Path) -> Path:
    """The layer without a build (no network): the lock's distributions as installed here
    and the library, with certifi's hashed roots and compiled, as the Makefile makes them."""
    lock = REPO_ROOT / "layers" / "common" / "requirements.txt"
    names = re.findall(r"^([A-Za-z0-9_.-]+)==", lock.read_text(), flags=re.MULTILINE)
    copy_distributions(names, folder)
    shutil.copytree(
        REPO_ROOT / "layers" / "common" / "esl_sync",
        folder / "esl_sync",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    hashed_roots.write(folder / "certifi" / "cacert.pem", folder / "esl_sync" / "_hashed_roots")
    compileall.compile_dir(
        folder,
        quiet=1,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return folder


def build_host_layer(folder: Path) -> Path | None:
    """The layer as ``sam build`` makes it, for this machine's architecture; None if it
    cannot be built here (no ``make``, no PyPI)."""
    make = shutil.which("make")
    if make is None:
        return None
    arch = "x86_64" if platform.machine().lower() in {"x86_64", "amd64"} else "aarch64"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        [make, "-s", "build-CommonLayer", f"ARTIFACTS_DIR={folder}"],
        cwd=REPO_ROOT / "layers" / "common",
        env={**os.environ, "PATH": path, "ESL_SYNC_LAYER_ARCH": arch},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return folder / "python" if done.returncode == 0 else None


def lambda_environment(
    stack_env: dict[str, str], function: str, logical_id: str, memory_mb: int
) -> dict[str, str]:
    """The child's environment: the stack's (secrets only as ARNs, tracing on) and Lambda's."""
    secret_values = {"DATABASE_URL", "HIPOINK_SIGN", "CLOVER_WEBHOOK_AUTH", "CLOVER_CLIENT_ID"}
    env = {k: v for k, v in stack_env.items() if k not in secret_values}
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    keep = ("PATH", "HOME", "LANG", "TMPDIR")
    return {
        **{k: os.environ[k] for k in keep if k in os.environ},
        **env,
        "LAMBDA_TASK_ROOT": str(REPO_ROOT / "functions" / function),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": f"esl-sync-{logical_id}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/esl-sync-{logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/01/[$LATEST]0123456789abcdef",
        "_HANDLER": "app.lambda_handler",
        "_X_AMZN_TRACE_ID": _TRACE_ID,
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TZ": ":UTC",
    }


def cold_start(
    function: str,
    env: dict[str, str],
    path: Sequence[Path],
    event_file: Path | None,
    *,
    runs: int = 3,
) -> ColdStart:
    """``runs`` fresh processes of ``function`` (``event_file`` None: import only), with
    the layer and the runtime's packages (``path``) after the function's folder."""
    samples = [_child(function, env, path, event_file) for _ in range(runs)]
    totals = [s["import_cpu_ms"] + s["invoke_cpu_ms"] for s in samples]

    def median(key: str) -> float:
        return round(float(statistics.median(s[key] for s in samples)), 1)

    invoked = event_file is not None
    return ColdStart(
        function=function,
        runs=runs,
        import_cpu_ms=median("import_cpu_ms"),
        import_wall_ms=median("import_wall_ms"),
        invoke_cpu_ms=median("invoke_cpu_ms") if invoked else None,
        invoke_wall_ms=median("invoke_wall_ms") if invoked else None,
        peak_rss_mib=round(max(s["peak_rss_mib"] for s in samples), 1),
        cpu_low_ms=round(min(totals), 1),
        cpu_high_ms=round(max(totals), 1),
    )


def _child(
    function: str, env: dict[str, str], path: Sequence[Path], event_file: Path | None
) -> dict[str, Any]:
    task_root = REPO_ROOT / "functions" / function
    done = subprocess.run(
        [
            sys.executable,
            "-S",  # no site-packages: only what Lambda puts on the path
            "-c",
            _CHILD,
            str(task_root / "app.py"),
            str(event_file or os.devnull),
            "1" if event_file else "0",
        ],
        env={**env, "PYTHONPATH": os.pathsep.join(str(p) for p in (task_root, *path))},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARK):
            result: dict[str, Any] = json.loads(line.removeprefix(_MARK))
            return result
    raise RuntimeError(f"{function}: the cold start run failed: {done.stderr[-2000:]}")
