"""Helpers for the tests that start real processes (qcluster, orderwatcher, the whole `up`
stack) on the test database, and for tests that race threads. Fixtures live in conftest.py."""

import os
import shutil
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
    """A `manage.py qcluster` subprocess with its own queue name (or another long-running
    command, such as `orderwatcher`, in the same environment); output goes to a file."""

    def __init__(self, name: str, env: dict, command: str = "qcluster"):
        self.name = name
        self.env = env
        self.command = command
        self.proc = None
        self.log = tempfile.TemporaryFile(mode="w+")

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", self.command], cwd=BASE_DIR, env=self.env,
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


def wait_until(condition, timeout_s: float, what: str):
    """condition()'s first true value, polled every 0.2 s; the test fails after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.2)
    pytest.fail(f"not within {timeout_s}s: {what}")


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




def descendants(root: int) -> list[int]:
    """root and every process below it (from /proc: no psutil here)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        found.append(pid := todo.pop())
        todo.extend(children.get(pid, []))
    return found


def command_line(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


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


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb + pg_ctl in a temporary directory, on a
    free port), so a test may stop and restart it: never the machine's shared server."""

    def __init__(self):
        import pwd

        # Not under pytest's tmp_path: the server's account must be able to reach the directory.
        self.root = Path(tempfile.mkdtemp(prefix="orderdesk-pg-"))
        self.data, self.sockets, self.log = self.root / "data", self.root / "sockets", self.root / "server.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/orderdesk"
        # initdb refuses to run as root: the server then runs as the postgres account.
        self.user = "postgres" if os.geteuid() == 0 else None
        self.sockets.mkdir()
        if self.user:
            account = pwd.getpwnam(self.user)
            for path in (self.root, self.sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, *argv):
        done = subprocess.run(argv, user=self.user, capture_output=True, text=True, timeout=120)
        if done.returncode:
            pytest.fail(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")

    def start(self) -> "PrivatePostgres":
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start", "-o",
                  f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off")
        return self

    def stop(self):
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self):
        subprocess.run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"], user=self.user,
                       capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self):
        import psycopg

        with psycopg.connect(f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE orderdesk")
