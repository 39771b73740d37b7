"""Runs the whole platform as separate processes, exactly as `make run` does (same commands, from
deploy/local/services.txt), but on private ports, topics and databases so a run never collides with a
developer's `make run` or another test. Used by the end-to-end tests and by `make bench` / `make chaos`.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.common.config import TopicSettings

ROOT = Path(__file__).resolve().parents[1]
SERVICES_TABLE = ROOT / "deploy" / "local" / "services.txt"
TEST_SHED_BOUNDS = {"shed_max_write_seconds": "60", "shed_max_outbox_age_seconds": "300",
                    "shed_max_loop_lag_seconds": "30"}


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    args: tuple[str, ...]
    port_env: str
    default_port: int
    what: str


def service_specs() -> dict[str, ServiceSpec]:
    specs = {}
    for line in SERVICES_TABLE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, module, port_env, port, what = (part.strip() for part in line.split("|"))
        specs[name] = ServiceSpec(name, tuple(module.split()), port_env, int(port), what)
    return specs


@dataclass
class Replica:
    spec: ServiceSpec
    index: int
    port: int
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.spec.name}-{self.index}"


@dataclass
class Platform:
    """One private copy of the platform. ``base_port`` + 10*service index + replica index."""

    run_id: str
    base_port: int = 18000
    workdir: Path = field(default_factory=lambda: ROOT / "var" / "e2e")
    extra_env: dict[str, str] = field(default_factory=dict)
    kafka_bootstrap: str = os.environ.get("WENZHENG_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    mongo_url: str = os.environ.get("WENZHENG_MONGO_URL", "mongodb://127.0.0.1:27017/")
    replicas: dict[str, list[Replica]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        atexit.register(self.stop_all)  # never leave services behind, even when the caller is interrupted
        self.dir = self.workdir / self.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock_file = self.dir / "clock_offset"
        self.clock_file.write_text("0", encoding="utf-8")
        self.credentials_file = self.dir / "credentials.json"
        self.topics = TopicSettings(**{
            key: f"e2e.{self.run_id}.{default}" for key, default in TopicSettings().model_dump().items()
        })
        self.specs = service_specs()

    # ---------------------------------------------------------------- environment
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WENZHENG_")}
        env.update({
            "WENZHENG_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "WENZHENG_MONGO_URL": self.mongo_url,
            "WENZHENG_ENVIRONMENT": "test",
            "WENZHENG_LOG_LEVEL": "INFO",
            "WENZHENG_CLOCK_OFFSET_FILE": str(self.clock_file),
            "WENZHENG_INTAKE_CREDENTIALS_FILE": str(self.credentials_file),
            # demo accounts for every unit: argon2id at its cheapest, so a copy of the platform starts quickly
            "WENZHENG_INTAKE_PASSWORD_TIME_COST": "1", "WENZHENG_INTAKE_PASSWORD_MEMORY_KIB": "1024",
            "WENZHENG_INTAKE_PASSWORD_PARALLELISM": "1",
            "PYTHONUNBUFFERED": "1",
        })
        # tests and chaos run on a loaded machine: a stalled second there must not turn their posts into 503s
        # (the load bench sets the production bounds again: bench/platform_load.py)
        env.update({f"WENZHENG_INTAKE_{name.upper()}": value for name, value in TEST_SHED_BOUNDS.items()})
        env.update({f"WENZHENG_TOPIC_{key.upper()}": name for key, name in self.topics.model_dump().items()})
        # every service's database, suffixed with the run id
        for service in self.specs:
            env[f"WENZHENG_{service.upper()}_DATABASE"] = f"wenzheng_{service}_e2e_{self.run_id}"
        # consumer groups of their own, so a run never shares offsets with another
        env["WENZHENG_ROUTER_APP_ID"] = f"wenzheng-router-{self.run_id}"
        env["WENZHENG_ROUTER_DATA_DIR"] = str(self.dir / "router")
        env["WENZHENG_INTAKE_CONSUMER_GROUP"] = f"wenzheng-intake-{self.run_id}"
        env["WENZHENG_NOTIFIER_GROUP_ID"] = f"wenzheng-notifier-{self.run_id}"
        env["WENZHENG_STATS_CONSUMER_GROUP"] = f"wenzheng-stats-{self.run_id}"
        # the portal calls this run's intake and stats (first replicas)
        for service in ("intake", "stats"):
            if service in self.specs:
                env[f"WENZHENG_PORTAL_{service.upper()}_URL"] = f"http://127.0.0.1:{self.port_for(service, 0)}"
        env.update(self.extra_env)
        return env

    def port_for(self, name: str, index: int) -> int:
        order = list(self.specs).index(name)
        return self.base_port + 10 * order + index

    # ---------------------------------------------------------------- processes
    def prepare(self) -> None:
        """Topics and the demo accounts (a staff member for every unit), as `make run` prepares them."""
        env = self.env()
        subprocess.run([sys.executable, "-m", "services.common.topics", "create", "--bootstrap",
                        self.kafka_bootstrap], check=True, env=env, cwd=ROOT, capture_output=True)
        if "intake" in self.specs and (ROOT / "services" / "intake" / "__main__.py").exists():
            subprocess.run([sys.executable, "-m", "services.intake", "demo-accounts", "--all-units", "--out",
                            str(self.credentials_file)], check=True, env=env, cwd=ROOT, capture_output=True)

    def start(self, name: str, index: int = 0, env_overrides: dict[str, str] | None = None) -> Replica:
        spec = self.specs[name]
        port = self.port_for(name, index)
        env = self.env() | {"WENZHENG_PORT": str(port), spec.port_env: str(port)} | (env_overrides or {})
        log_path = self.dir / f"{name}-{index}.log"
        log = open(log_path, "ab")
        process = subprocess.Popen([sys.executable, "-m", *spec.args], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        replica = Replica(spec, index, port, process, log_path)
        group = self.replicas.setdefault(name, [])
        group[:] = [r for r in group if r.index != index] + [replica]
        return replica

    def start_all(self, counts: dict[str, int] | None = None, timeout: float = 90) -> None:
        self.prepare()
        for name in self.specs:
            for index in range((counts or {}).get(name, 1)):
                self.start(name, index)
        self.wait_ready(timeout=timeout)

    def replica(self, name: str, index: int = 0) -> Replica:
        return next(r for r in self.replicas[name] if r.index == index)

    def url(self, name: str, index: int = 0) -> str:
        return self.replica(name, index).url

    def wait_ready(self, timeout: float = 90, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        pending = [r for group in self.replicas.values() for r in group]
        while pending and time.monotonic() < deadline:
            still = []
            for r in pending:
                if r.process and r.process.poll() is not None:
                    raise RuntimeError(f"{r.label} exited with {r.process.returncode}:\n{self.tail(r)}")
                try:
                    ok = httpx.get(r.url + path, timeout=2).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok:
                    still.append(r)
            pending = still
            if pending:
                time.sleep(0.5)
        if pending:
            raise RuntimeError("not ready in time: " + ", ".join(
                f"{r.label}\n{self.tail(r)}" for r in pending))

    def kill(self, name: str, index: int = 0, sig: int = signal.SIGKILL) -> None:
        r = self.replica(name, index)
        if r.process and r.process.poll() is None:
            os.killpg(r.process.pid, sig)
            r.process.wait(timeout=30)

    def restart(self, name: str, index: int = 0) -> Replica:
        self.kill(name, index, signal.SIGKILL)
        replica = self.start(name, index)
        self.wait_ready()
        return replica

    def pause(self, pid: int) -> None:
        os.kill(pid, signal.SIGSTOP)

    def resume(self, pid: int) -> None:
        os.kill(pid, signal.SIGCONT)

    def stop_all(self) -> None:
        for group in self.replicas.values():
            for r in group:
                if r.process and r.process.poll() is None:
                    try:
                        os.killpg(r.process.pid, signal.SIGTERM)
                        r.process.wait(timeout=15)
                    except (subprocess.TimeoutExpired, ProcessLookupError):
                        try:
                            os.killpg(r.process.pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass

    def tail(self, r: Replica, lines: int = 30) -> str:
        if not r.log_path or not r.log_path.exists():
            return ""
        return "\n".join(r.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    # ---------------------------------------------------------------- time and credentials
    def advance_clock(self, seconds: float) -> None:
        current = float(self.clock_file.read_text(encoding="utf-8") or 0)
        self.clock_file.write_text(str(current + seconds), encoding="utf-8")

    def credentials(self) -> dict:
        return json.loads(self.credentials_file.read_text(encoding="utf-8"))
