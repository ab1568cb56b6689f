"""Helpers for the tests that start real processes (qcluster, orderwatcher, the whole `up`
stack) on the test database, and for tests that race threads. Fixtures live in conftest.py."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from django.db import connection

from orders.models import Order, Status

BASE_DIR = Path(__file__).resolve().parent.parent
EXECUTED_TIMEOUT_S = 30


def database_url() -> str:
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        name = settings_dict["NAME"]
        if not name or name == ":memory:" or str(name).startswith("file:"):
            pytest.fail("the process tests need a file-backed SQLite test database")
        return f"sqlite:///{Path(name).resolve()}"
    if connection.vendor == "postgresql":
        auth = settings_dict["USER"] + (f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else "")
        return (f"postgres://{auth}@{settings_dict['HOST'] or '127.0.0.1'}:{settings_dict['PORT'] or 5432}"
                f"/{settings_dict['NAME']}")
    pytest.fail(f"no DATABASE_URL for {connection.vendor}")


class Cluster:
    """A `manage.py qcluster` subprocess with its own queue name; output goes to a file."""

    def __init__(self, name: str, env: dict):
        self.name = name
        self.env = env
        self.proc = None
        self.log = tempfile.TemporaryFile(mode="w+")

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=BASE_DIR, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # qcluster's graceful stop
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            # The cluster's own process group: also reaps workers a killed parent would orphan.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


def flush_redis_keys(redis_url: str, q_name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"django_q:{q_name}:*"))
    if keys:
        client.delete(*keys)


def audit_trail(order):
    """(kind, from, to, actor) rows, oldest first."""
    return [(e.kind, e.from_status, e.to_status, e.actor) for e in order.events.order_by("id")]


def wait_for_executed(command_id: str, cluster: Cluster) -> tuple[Order, float]:
    started = time.monotonic()
    deadline = started + EXECUTED_TIMEOUT_S
    while time.monotonic() < deadline:
        order = Order.objects.get(command_id=command_id)
        if order.status in (Status.EXECUTED, Status.FAILED):
            return order, time.monotonic() - started
        assert cluster.proc.poll() is None, f"qcluster exited with {cluster.proc.returncode}"
        time.sleep(0.1)
    pytest.fail(f"order {command_id} is {order.status} after {EXECUTED_TIMEOUT_S}s: {audit_trail(order)}")


def run_together(n: int, target) -> list:
    """Call target(i) in n threads released at once; return the results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        try:
            barrier.wait(timeout=10)
            results[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = exc
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """`manage.py up` (gunicorn, qcluster, orderwatcher) as a user runs it, on the test
    database; optionally more qcluster processes beside it, as a scaled-out desk runs them."""

    def __init__(self, env: dict, extra_clusters: int = 0):
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = [Cluster(env["ORDERDESK_Q_NAME"], env) for _ in range(extra_clusters)]
        self.proc = None
        self.log = tempfile.TemporaryFile(mode="w+")

    def start(self, ready_timeout_s: float = 60) -> "Stack":
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--addr", f"127.0.0.1:{self.port}"], cwd=BASE_DIR, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        for cluster in self.extra:
            cluster.start()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"up exited with {self.proc.returncode}:\n{self.output()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"up did not listen on {self.port} within {ready_timeout_s}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        for cluster in self.extra:
            cluster.stop()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C: up stops its children's process groups
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
