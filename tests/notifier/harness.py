"""Helpers for the notifier's broker tests: a fake delivery gateway, real worker processes, reading topics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from harness.waiting import wait_until as wait_for  # noqa: F401 (the notifier tests' name for it)
from services.common.config import TopicSettings

ROOT = Path(__file__).resolve().parents[2]


class FakeGateway:
    """An SMS/WeChat gateway on 127.0.0.1 that dedupes on the idempotency key, as real gateways do.

    ``requests`` counts every call per id; ``accepted`` counts the deliveries it made (once per id).
    ``fail_with`` makes it answer every call with that status.
    """

    def __init__(self, fail_with: int | None = None) -> None:
        self.requests: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.fail_with = fail_with
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                key = self.headers.get("Idempotency-Key") or body.get("id") or body.get("client_msg_id")
                with gateway.lock:
                    gateway.requests[key] += 1
                    status = gateway.fail_with or 200
                    if status == 200 and key not in gateway.accepted:
                        gateway.accepted[key] += 1
                        gateway.bodies[key] = body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status == 200 else b'{"error": "boom"}')

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGateway:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def worker_env(*, kafka: str, mongo: str, names: TopicSettings, run_id: str, port: int, sms_url: str,
               clock_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WENZHENG_")}
    env.update({
        "WENZHENG_KAFKA_BOOTSTRAP": kafka, "WENZHENG_MONGO_URL": mongo, "WENZHENG_ENVIRONMENT": "test",
        "WENZHENG_PORT": str(port), "WENZHENG_CLOCK_OFFSET_FILE": str(clock_file),
        "WENZHENG_NOTIFIER_GROUP_ID": f"notifier-{run_id}", "WENZHENG_NOTIFIER_DATABASE": f"wenzheng_notifier_{run_id}",
        "WENZHENG_NOTIFIER_SMS_URL": sms_url, "WENZHENG_NOTIFIER_SCAN_INTERVAL_SECONDS": "0.2",
        "WENZHENG_NOTIFIER_HOTSPOT_SCAN_SECONDS": "1", "WENZHENG_NOTIFIER_SWEEP_INTERVAL_SECONDS": "1",
        "WENZHENG_NOTIFIER_SESSION_TIMEOUT_MS": "6000", "WENZHENG_NOTIFIER_BACKOFF_BASE_SECONDS": "0.05",
        "WENZHENG_NOTIFIER_OVERDUE_GRACE_SECONDS": "0",
        "WENZHENG_NOTIFIER_DELIVERY_LEASE_SECONDS": "8", "WENZHENG_NOTIFIER_HTTP_TIMEOUT_SECONDS": "3",
        "WENZHENG_LOG_LEVEL": "INFO",
    })
    env.update({f"WENZHENG_TOPIC_{key.upper()}": value for key, value in names.model_dump().items()})
    env.update(extra)
    return env


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path = env, log_path
        self.port = int(env["WENZHENG_PORT"])
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.notifier", "worker"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    async def readyz(self) -> dict[str, Any] | None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{tail}")
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                return response.json() if response.status_code == 200 else None
        except httpx.HTTPError:
            return None


async def read_topic(bootstrap: str, topic: str, partitions: int = 3) -> list[tuple[int, dict[str, Any]]]:
    """Every (partition, event) on a topic, from the beginning to its current end."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        out: list[tuple[int, dict[str, Any]]] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for _tp, records in (await reader.getmany(*pending, timeout_ms=500)).items():
                out.extend((r.partition, json.loads(r.value)) for r in records)
            for tp in list(pending):
                if await reader.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await reader.stop()
