"""Schemathesis over a running service's OpenAPI with ``--checks all``: every operation, generated
requests, and every check (no 5xx, documented status codes, response schemas and content types, valid
data accepted, invalid data refused, methods and headers).

The run is bounded in `make test` (15 examples per operation) and longer in `make chaos`
(WENZHENG_FUZZ_EXAMPLES). Schemathesis' pytest plugin does not run on pytest 9, so its CLI is run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_PER_OPERATION = int(os.environ.get("WENZHENG_FUZZ_EXAMPLES", "15"))


@contextlib.contextmanager
def running_service(module: str, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`python -m <module>` on a free port with only the given WENZHENG_* settings; yields its base URL
    once the service says it is ready."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WENZHENG_")}
    full_env.update({"WENZHENG_PORT": str(port), "WENZHENG_ENVIRONMENT": "test", "WENZHENG_LOG_LEVEL": "WARNING",
                     **env})
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:  # ready, not just alive: /readyz answers 503 by design until the consumer has joined
                if process.poll() is not None:
                    raise RuntimeError(log_path.read_text(errors="replace")[-3000:])
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{module} not ready in 60 s:\n" + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def running_intake_process(kafka_bootstrap: str, mongo_url: str, topic_env: dict[str, str], workdir: Path,
                           name: str) -> Iterator[dict]:
    """``python -m services.intake`` over HTTP with its own database and a credentials file; yields its URL
    and the credentials, and drops the database afterwards."""
    from pymongo import MongoClient

    run = uuid.uuid4().hex[:10]
    database = f"wenzheng_intake_{name}_{run}"
    credentials = workdir / "credentials.json"
    env = {"WENZHENG_KAFKA_BOOTSTRAP": kafka_bootstrap, "WENZHENG_MONGO_URL": mongo_url,
           "WENZHENG_INTAKE_DATABASE": database, "WENZHENG_INTAKE_CREDENTIALS_FILE": str(credentials),
           "WENZHENG_INTAKE_CONSUMER_GROUP": f"{name}-{run}", "WENZHENG_INTAKE_RATE_LIMIT_ENABLED": "false",
           "WENZHENG_INTAKE_LOGIN_RATE_PER_IP": "100000", "WENZHENG_INTAKE_PASSWORD_TIME_COST": "1",
           "WENZHENG_INTAKE_PASSWORD_MEMORY_KIB": "1024", "WENZHENG_INTAKE_PASSWORD_PARALLELISM": "1",
           "WENZHENG_INTAKE_ATTACHMENTS_DIR": str(workdir / "attachments"),
           **topic_env}
    # the demo people (admin, supervisor, unit staff) and the local Open311 key, as `make run` makes them
    subprocess.run([sys.executable, "-m", "services.intake", "demo-accounts", "--out", str(credentials)],
                   env={**os.environ, **env}, check=True, capture_output=True, timeout=120)
    try:
        with running_service("services.intake", env, workdir / "intake.log") as url:
            yield {"url": url, "credentials": json.loads(credentials.read_text())}
    finally:
        with MongoClient(mongo_url) as client:
            client.drop_database(database)


@dataclass
class FuzzReport:
    command: list[str] = field(default_factory=list)
    operations: int = 0
    calls: int = 0
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    output: str = ""


def fuzz_openapi(url: str, headers: dict[str, str] | None = None,
                 max_examples: int = EXAMPLES_PER_OPERATION) -> FuzzReport:
    """``schemathesis run <url>/openapi.json --checks all`` (every check: server errors, status codes,
    response schemas and content types, positive and negative data, headers, auth, methods) with a
    fixed seed, and what it counted."""
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{url}/openapi.json", "--checks", "all",
               "--max-examples", str(max_examples), "--seed", "1", "--no-color", "--exclude-path", "/readyz"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    output = result.stdout + result.stderr
    report = FuzzReport(command=[c if not c.startswith("Authorization") else "Authorization: Bearer ***"
                                 for c in command], output=output)
    if match := re.search(r"Tested:\s+(\d+)", output):
        report.operations = int(match.group(1))
    if match := re.search(r"(\d+) generated, (\d+) passed", output):
        report.calls, report.passed = int(match.group(1)), int(match.group(2))
    elif match := re.search(r"(\d+) generated", output):
        report.calls = int(match.group(1))
    report.failures = re.findall(r"^\s*❌ (ST\d+ .*)$", output, re.MULTILINE)
    if result.returncode != 0 and not report.failures:
        report.failures = [f"schemathesis exited {result.returncode}:\n{output[-3000:]}"]
    return report
