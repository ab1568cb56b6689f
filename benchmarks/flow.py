"""The whole flow over HTTP: `manage.py up`'s real stack under 8 keep-alive clients.

    .venv/bin/python benchmarks/flow.py [--seconds 15] [--clients 8] [--backend sqlite|postgres|both]
                                        [--web-only] [--keep]

For each back end it starts `manage.py up --addr 127.0.0.1:PORT` as a subprocess in its own
process group (gunicorn with orderdesk/gunicorn_conf.py, `qcluster`, `orderwatcher`), with
SECRET_KEY set and PAPER_FILL_DELAY_S=0.05, and stops it by signalling that group, as up's own
_stop does. SQLite: a temporary file (DATABASE_URL), django-q2's ORM queue. PostgreSQL: a
database of its own (bench_flow, dropped and created), Redis db 14 (flushed before and after)
as the queue. Both run in one invocation, so their figures share the machine's noise.

What it sends: TradingView-style text/plain alerts (the secret in the body), one ENTRY BUY leg
of qty 1, each on a (strategy, symbol) pair never used before in the run. Every alert then
passes every blocker and reaches the paper broker: the guard blocks an ENTRY while the same
strategy holds a live order or position on that symbol and side, and blocks an opposite
ENTRY across strategies, but not a same-side ENTRY of another strategy. Pairs run
strategy-major over SYMBOLS paper instruments (added as PaperInstrument rows before the
start), so two alerts in flight are never on one instrument (no guard-lock queueing that a
real trader would not see) and a symbol is revisited only by the next strategy, whose guard
read then returns that symbol's few positions. Alternating ENTRY BUY / EXIT SELL per symbol
was not used: the EXIT passes only once the watcher has recorded the ENTRY's fill (up to
PAPER_FILL_DELAY_S + WATCHER_INTERVAL_S later), which would tie the request rate to the fill
delay. One fresh instrument per alert was not used either: the paper broker's position
book reads every instrument on each watcher pass.

The HTTP client is threads over raw sockets (one sendall per request with TCP_NODELAY, a
minimal response parser), not http.client: http.client sends the headers and the body in two
writes and parses headers with the email package, both of which would distort a 2-core
machine's figures. Its own CPU use is printed.

Printed per back end: accepted alerts/s, non-2xx and transport errors, webhook p50/p90/p99 at N
clients, a 1-client p50, a keep-alive stall check (reused vs fresh connection; a ~40 ms gap
is Nagle meeting delayed ACK), orders/s reaching the paper broker (PaperOrder rows), created ->
broker-ack latency from the audit rows (OrderEvent CREATED -> BROKER_ACCEPTED), peak database
connections (PostgreSQL: pg_stat_activity; SQLite: descriptors open on the database file in
the stack's processes) and the same server's requests/s on a cheap GET at N clients. The goals
are printed next to the figures. Not a timed test, not run by CI: it prints figures.

--web-only stops (SIGSTOP) the `qcluster` and `orderwatcher` process groups for the N-client
load and resumes them after it: the web tier's own ceiling, with the whole machine to itself.
The backlog then drains once they resume, so orders/s during the load reads 0.
"""

import argparse
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SECRET = "bench-flow-secret-0123456789abcdefghij"  # >= 24 chars, shared by the bench strategies
STRATEGY_PREFIX = "bench"
SYMBOLS = 1000  # paper instruments added for the run; see the docstring
PAIRS_PER_SECOND = 3000  # capacity of fresh (strategy, symbol) pairs per second of load
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_DB = "bench_flow"
REDIS_URL = "redis://127.0.0.1:6379/14"
REDIS_CACHE_URL = "redis://127.0.0.1:6379/13"  # the rate limits' counters (flushed with the queue)
PAPER_FILL_DELAY_S = "0.05"
WEBHOOK = "/api/webhook/"
HEALTH = "/api/health/"
FALLBACK_GET = "/admin/login/"

GOAL_P99_RATIO = 3.0
GOAL_P99_MS = 100.0
GOAL_ALERTS_S = 500.0
GOAL_BROKER_S = 100.0
OPENALGO_ALERTS_S = 140.0
STALL_MS = 20.0  # reused connection slower than a fresh one by this much: a stall


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15, help="length of the N-client webhook load (default 15)")
    p.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients (default 8)")
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--web-only", action="store_true",
                   help="pause qcluster and orderwatcher during the N-client load (the web tier's ceiling)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory (SQLite file, stack logs) and the bench_flow database")
    return p.parse_args()


# --- statistics ----------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- HTTP client ---------------------------------------------------------------------------

class Client:
    """One HTTP/1.1 keep-alive connection: a request is one sendall, the response is read by
    Content-Length (or to the close)."""

    def __init__(self, port: int):
        self.port = port
        self.sock = None
        self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock, self.buf = None, b""

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def request(self, data: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock.sendall(data)
            return self._response()
        except Exception:
            self.close()
            raise

    def _response(self) -> tuple[int, bytes]:
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ConnectionError("chunked response: not supported by this client")
        if length is None:  # no length: the body runs to the close
            try:
                while True:
                    rest += self._recv()
            except ConnectionError:
                pass
            length, close = len(rest), True
        while len(rest) < length:
            rest += self._recv()
        body, self.buf = rest[:length], rest[length:]
        if close:
            self.close()
        return status, body


def get_request(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench-flow\r\n\r\n".encode()


class Alerts:
    """Webhook requests on fresh (strategy, symbol) pairs, strategy-major (thread-safe: next()
    on itertools.count is atomic under the GIL)."""

    def __init__(self, port: int, strategies: int):
        self.port = port
        self.capacity = strategies * SYMBOLS
        self.counter = itertools.count()

    def next_request(self) -> bytes:
        n = next(self.counter)
        if n >= self.capacity:
            raise RuntimeError("out of fresh (strategy, symbol) pairs: raise PAIRS_PER_SECOND")
        body = json.dumps({
            "strategy": strategy_name(n // SYMBOLS),
            "secret": SECRET,
            "execution_type": "ENTRY",
            "exchange": "NSE",
            "legs": [{"symbol": symbol_name(n % SYMBOLS), "side": "BUY", "qty": 1, "order_type": "MARKET",
                      "product": "MIS"}],
        }).encode()
        return (f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUser-Agent: Go-http-client/1.1\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                "Accept-Encoding: gzip\r\n\r\n").encode() + body



def strategy_name(i: int) -> str:
    return f"{STRATEGY_PREFIX}-{i:03d}"


def symbol_name(i: int) -> str:
    return f"BF{i:04d}-EQ"


class Tally:
    """What the clients saw: latencies of 2xx replies and what the intake said of the orders."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted = 0  # 2xx with every order CREATED (passed every blocker, enqueued)
        self.blocked = 0  # 2xx with a FAILED order
        self.non_2xx = 0
        self.transport = 0
        self.first_errors: list[str] = []

    def add(self, ms: float, status: int, body: bytes, webhook: bool):
        with self.lock:
            if 200 <= status < 300:
                self.latencies.append(ms)
                if webhook:
                    orders = json.loads(body)["orders"]
                    if all(o["status"] == "CREATED" for o in orders):
                        self.accepted += 1
                    else:
                        self.blocked += 1
                        self._note(f"blocked: {orders[0]['tag']}")
            else:
                self.non_2xx += 1
                self._note(f"HTTP {status}: {body[:160]!r}")

    def error(self, exc: Exception):
        with self.lock:
            self.transport += 1
            self._note(f"{type(exc).__name__}: {exc}")

    def _note(self, text: str):
        if len(self.first_errors) < 3:
            self.first_errors.append(text)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.transport + self.blocked


def drive(port: int, clients: int, seconds: float, make_request, webhook: bool) -> tuple[Tally, float]:
    """`clients` threads, each one keep-alive connection, for `seconds`. (tally, wall seconds)"""
    tally = Tally()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def loop():
        client = Client(port)
        start.wait()
        while time.perf_counter() < deadline[0]:
            data = make_request()
            t0 = time.perf_counter()
            try:
                status, body = client.request(data)
            except Exception as exc:  # noqa: BLE001 - counted
                tally.error(exc)
                continue
            tally.add((time.perf_counter() - t0) * 1000, status, body, webhook)
        client.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline[0] = t0 + seconds
    start.wait()
    for t in threads:
        t.join()
    return tally, time.perf_counter() - t0


def stall_check(port: int, alerts: Alerts, n: int = 100) -> tuple[float, float]:
    """p50 ms of webhook requests on one reused connection and on a fresh connection each
    (connect included), interleaved."""
    reused, fresh = [], []
    keep = Client(port)
    for _ in range(n):
        for series, client in ((reused, keep), (fresh, Client(port))):
            data = alerts.next_request()
            t0 = time.perf_counter()
            status, _ = client.request(data)
            series.append((time.perf_counter() - t0) * 1000)
            if status >= 300:
                raise SystemExit(f"stall check: HTTP {status}")
            if client is not keep:
                client.close()
    keep.close()
    return pct(reused, 0.5), pct(fresh, 0.5)


# --- the database, read directly (no Django in this process) --------------------------------

def _epoch(value) -> float:
    if isinstance(value, str):  # SQLite: Django stores naive UTC text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class Probe:
    """Read-only queries on the stack's database: broker orders, audit rows, connections."""

    def __init__(self, backend: str, target: str):
        self.backend = backend
        if backend == "sqlite":
            self.conn = sqlite3.connect(target, isolation_level=None, timeout=10, check_same_thread=False)
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(target, autocommit=True)
            self.mark = "%s"
        self.target = target

    def rows(self, sql: str, params=()) -> list[tuple]:
        sql = sql.replace("%s", self.mark)
        cursor = self.conn.cursor()
        cursor.execute(sql, params)
        return cursor.fetchall()

    def broker_orders(self) -> int:
        return self.rows("SELECT count(*) FROM brokers_paperorder")[0][0]

    def placed_times(self) -> list[float]:
        return [_epoch(r[0]) for r in self.rows("SELECT placed_at FROM brokers_paperorder")]

    def created_to_ack_ms(self, since: float, until: float) -> list[float]:
        pairs = self.rows(
            "SELECT c.at, a.at FROM orders_orderevent c JOIN orders_orderevent a"
            " ON a.order_id = c.order_id AND a.kind = 'BROKER_ACCEPTED' WHERE c.kind = 'CREATED'")
        out = []
        for created, acked in pairs:
            c = _epoch(created)
            if since <= c < until:
                out.append((_epoch(acked) - c) * 1000)
        return out

    def pending(self) -> int:
        """Orders accepted but not yet at the broker (queued, or claimed and being placed)."""
        return self.rows("SELECT count(*) FROM orders_order WHERE status = 'CREATED'"
                         " OR (status = 'SENT_TO_BROKER' AND broker_order_id IS NULL)")[0][0]

    def statuses(self) -> dict[str, int]:
        return dict(self.rows("SELECT status, count(*) FROM orders_order GROUP BY status"))

    def connections(self, root_pid: int) -> int:
        if self.backend == "postgres":
            return self.rows("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                             (PG_DB,))[0][0]
        count = 0
        for pid in descendants(root_pid):
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    try:
                        if os.readlink(f"/proc/{pid}/fd/{fd}") == self.target:
                            count += 1
                    except OSError:
                        pass
            except OSError:
                pass
        return count

    def close(self):
        self.conn.close()


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def worker_groups(root: int) -> set[int]:
    """Process groups of up's `qcluster` and `orderwatcher` children."""
    groups = set()
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"qcluster" in argv or b"orderwatcher" in argv:
                groups.add(os.getpgid(pid))
        except (OSError, ProcessLookupError):
            pass
    return groups


def signal_groups(groups: set[int], sig: int):
    for group in groups:
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            pass


TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pids) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each of `pids`, with its children that have
    ended: django-q2 replaces a worker after 500 tasks (`recycle`), and a worker that ended
    during the load would otherwise take its CPU out of the stack's."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = sum(int(v) for v in fields[11:15]) * TICK_S  # utime, stime, cutime, cstime
        except (OSError, IndexError, ValueError):
            pass
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every process, ours or not)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) * TICK_S


class CpuMeter:
    """CPU used by the stack (up and its descendants, plus the PostgreSQL backends serving its
    database) and by the whole machine, between start() and stop()."""

    def __init__(self, probe: "Probe", root_pid: int):
        self.probe, self.root_pid = probe, root_pid

    def _pids(self) -> list[int]:
        pids = descendants(self.root_pid)
        if self.probe.backend == "postgres":
            pids += [r[0] for r in self.probe.rows(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (PG_DB,))]
        return pids

    def start(self):
        self.t0, self.machine0, self.stack0 = time.monotonic(), machine_busy_s(), process_cpu_s(self._pids())

    def stop(self) -> tuple[float, float, float, dict[str, float]]:
        """(seconds, stack CPU seconds, CPU seconds of everything else on the machine, stack
        CPU seconds by role)"""
        pids = self._pids()
        stack1, machine1 = process_cpu_s(pids), machine_busy_s()
        wall = time.monotonic() - self.t0
        roles: dict[str, float] = {}
        for pid, v in stack1.items():
            role = process_role(pid, self.probe.backend)
            roles[role] = roles.get(role, 0.0) + v - self.stack0.get(pid, 0.0)
        stack = sum(roles.values())
        return wall, stack, max(0.0, machine1 - self.machine0 - stack), roles


ROLES = (("gunicorn", "web"), ("qcluster", "queue"), ("orderwatcher", "watcher"), ("postgres", "postgres"))


def process_role(pid: int, backend: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace")
    except OSError:
        return "other"
    return next((role for word, role in ROLES if word in argv), "postgres" if backend == "postgres" else "other")


class Sampler(threading.Thread):
    """Every 0.2 s: broker order count and database connections (peak kept)."""

    def __init__(self, backend: str, target: str, root_pid: int):
        super().__init__(daemon=True)
        self.probe = Probe(backend, target)
        self.root_pid = root_pid
        self.peak_connections = 0
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                self.peak_connections = max(self.peak_connections, self.probe.connections(self.root_pid))
            except Exception:  # noqa: BLE001, S110 - a sample lost is not a figure lost
                pass
            self.stop_event.wait(0.2)

    def stop(self) -> int:
        self.stop_event.set()
        self.join()
        self.probe.close()
        return self.peak_connections


# --- the stack -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(backend: str, tmp: Path) -> tuple[dict, str]:
    """The environment for `up` and the probe's target (SQLite path or PostgreSQL URL)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "orderdesk.settings",
        "SECRET_KEY": "bench-flow-key-" + os.urandom(16).hex(),
        "PAPER_FILL_DELAY_S": PAPER_FILL_DELAY_S,
        "ORDERDESK_Q_NAME": "benchflow",
        "PYTHONUNBUFFERED": "1",
        # Every client is 127.0.0.1: the per-address limit would cut the load at 6000/min.
        # It is still counted on every request, so its cost is in the figures.
        "WEBHOOK_RATE_PER_IP": "100000000/min",
    })
    if backend == "sqlite":
        path = str(tmp / "flow.sqlite3")
        env["DATABASE_URL"] = f"sqlite:///{path}"
        return env, path
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB
    env["DATABASE_URL"] = url
    env["REDIS_URL"] = REDIS_URL
    env["REDIS_CACHE_URL"] = REDIS_CACHE_URL
    return env, url


def reset_services(backend: str, drop_only: bool = False):
    if backend != "postgres":
        return
    import psycopg
    import redis

    for url in (REDIS_URL, REDIS_CACHE_URL):
        redis.Redis.from_url(url).flushdb()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {PG_DB}")


PREPARE = """
from decimal import Decimal
from django.core.management import call_command
from brokers.models import PaperInstrument
from orders.models import Strategy
call_command("migrate", interactive=False, verbosity=0)
PaperInstrument.objects.bulk_create(
    [PaperInstrument(exchange="NSE", symbol=f"BF{{i:04d}}-EQ", ref_price=Decimal(100 + i)) for i in range({symbols})],
    batch_size=500)
strategies = []
for i in range({strategies}):
    s = Strategy(name=f"{prefix}-{{i:03d}}")
    s.set_secret({secret!r})
    strategies.append(s)
Strategy.objects.bulk_create(strategies)
"""


def prepare_database(env: dict, strategies: int):
    code = PREPARE.format(symbols=SYMBOLS, strategies=strategies, prefix=STRATEGY_PREFIX, secret=SECRET)
    subprocess.run([PYTHON, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True)


def start_stack(env: dict, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([PYTHON, "manage.py", "up", "--addr", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_stack(proc: subprocess.Popen):
    """SIGTERM to up's group (up forwards it to each child's group and waits 5 s), then
    SIGKILL whatever group is left."""
    groups = set()
    for pid in descendants(proc.pid):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_until_serving(port: int, proc: subprocess.Popen, log_path: Path, timeout: float = 90) -> str:
    """The baseline GET path once the web server answers: /api/health/ if it answers JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"`up` exited with {proc.returncode}; see {log_path}:\n"
                             + log_path.read_text(errors="replace")[-3000:])
        try:
            client = Client(port)
            status, _ = client.request(get_request(port, FALLBACK_GET))
            client.close()
            if status == 200:
                return baseline_path(port)
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the web server did not answer within {timeout:g} s; see {log_path}")


def baseline_path(port: int) -> str:
    client = Client(port)
    try:
        status, body = client.request(get_request(port, HEALTH))
        json.loads(body)
        return HEALTH if status == 200 else FALLBACK_GET
    except (ValueError, OSError):
        return FALLBACK_GET
    finally:
        client.close()


def wait_for_broker(probe: Probe, timeout: float, at_least: int = 0) -> float | None:
    """Seconds until every accepted order is at the paper broker (and at least `at_least`
    are), None if not within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if probe.pending() == 0 and probe.broker_orders() >= at_least:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


# --- one back end ------------------------------------------------------------------------

def measure(backend: str, args, tmp: Path) -> dict:
    env, target = stack_env(backend, tmp)
    strategies = int((args.seconds + 10) * PAIRS_PER_SECOND / SYMBOLS) + 1
    reset_services(backend)
    prepare_database(env, strategies)
    port = free_port()
    log_path = tmp / f"up-{backend}.log"
    proc = start_stack(env, port, log_path)
    result = {"backend": backend, "log": log_path}
    try:
        get_path = wait_until_serving(port, proc, log_path)
        probe = Probe(backend, target)
        alerts = Alerts(port, strategies)
        sampler = Sampler(backend, target, proc.pid)
        sampler.start()
        # Ready when an alert has gone all the way to the broker (cluster and watcher up).
        first = Client(port)
        first.request(alerts.next_request())
        first.close()
        if wait_for_broker(probe, 60, at_least=1) is None:
            raise SystemExit(f"no order reached the broker within 60 s; see {log_path}")
        drive(port, args.clients, 2.0, alerts.next_request, webhook=True)  # warm-up, not measured
        result["stall_reused"], result["stall_fresh"] = stall_check(port, alerts)
        sequential, _ = drive(port, 1, 2.0, alerts.next_request, webhook=True)
        result["seq_p50"] = pct(sequential.latencies, 0.5)
        wait_for_broker(probe, 60)  # start the load with an empty pipeline

        paused = worker_groups(proc.pid) if args.web_only else set()
        signal_groups(paused, signal.SIGSTOP)
        try:
            meter = CpuMeter(probe, proc.pid)
            meter.start()
            cpu0, load_t0 = time.process_time(), time.time()
            load, wall = drive(port, args.clients, args.seconds, alerts.next_request, webhook=True)
            load_t1, client_cpu = time.time(), time.process_time() - cpu0
            result["cpu"] = meter.stop()
        finally:
            signal_groups(paused, signal.SIGCONT)
        backlog = probe.pending()
        drained = wait_for_broker(probe, 120)
        placed = [t for t in probe.placed_times() if load_t0 <= t < load_t1]

        baseline, base_wall = drive(port, args.clients, max(3.0, args.seconds / 3), lambda: get_request(port, get_path),
                                    webhook=False)
        result.update(
            load=load, wall=wall, client_cpu=client_cpu, backlog=backlog, drained=drained,
            broker_rate=len(placed) / (load_t1 - load_t0),
            ack=probe.created_to_ack_ms(load_t0, load_t1),
            statuses=probe.statuses(), connections=sampler.stop(),
            baseline=baseline, base_wall=base_wall, get_path=get_path,
            sequential=sequential,
        )
        probe.close()
    finally:
        stop_stack(proc)
        if not args.keep:
            reset_services(backend, drop_only=True)
    return result


# --- the report ---------------------------------------------------------------------------

def stack_shape() -> str:
    sys.path.insert(0, str(ROOT))
    from orderdesk import gunicorn_conf

    q_workers = os.environ.get("ORDERDESK_Q_WORKERS", "8")
    return (f"gunicorn {gunicorn_conf.workers} workers x {gunicorn_conf.threads} threads (gthread), "
            f"qcluster {q_workers} workers, orderwatcher; {os.cpu_count()} CPUs")


def print_backend(r: dict, clients: int):
    load, base = r["load"], r["baseline"]
    name = {"sqlite": "SQLite, django-q2 ORM queue", "postgres": "PostgreSQL + Redis queue"}[r["backend"]]
    p50, p90, p99 = (pct(load.latencies, q) for q in (0.5, 0.9, 0.99))
    stall = r["stall_reused"] - r["stall_fresh"] >= STALL_MS
    print(f"\n== {name} ==  (log: {r['log']})")
    print(f"webhook, {clients} clients, {r['wall']:.1f} s: {load.accepted / r['wall']:.0f} accepted alerts/s "
          f"({load.accepted} accepted, {load.blocked} blocked, {load.non_2xx} non-2xx, {load.transport} transport errors)")
    if load.first_errors:
        print("   first errors: " + " | ".join(load.first_errors))
    print(f"   latency ms: p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {max(load.latencies, default=0):.1f}"
          f"   (p99/p50 {p99 / p50:.1f}x)")
    cpu_wall, stack_cpu, other_cpu, roles = r["cpu"]
    other_cpu = max(0.0, other_cpu - r["client_cpu"])
    print(f"   CPU during the load ({os.cpu_count()} cores = {os.cpu_count() * 100}%): stack {stack_cpu / cpu_wall * 100:.0f}% "
          f"({stack_cpu / max(1, load.accepted) * 1000:.1f} ms per accepted alert, web + queue + workers + watcher"
          f"{' + PostgreSQL' if r['backend'] == 'postgres' else ''}), this client {r['client_cpu'] / cpu_wall * 100:.0f}% "
          f"({r['client_cpu'] / max(1, load.accepted + load.blocked) * 1e6:.0f} us per request), "
          f"everything else on the machine {other_cpu / cpu_wall * 100:.0f}%")
    print("   stack CPU by process: " + ", ".join(
        f"{role} {cpu / cpu_wall * 100:.0f}% ({cpu / max(1, load.accepted) * 1000:.1f} ms/alert)"
        for role, cpu in sorted(roles.items(), key=lambda kv: -kv[1])))
    print(f"sequential, 1 client: p50 {r['seq_p50']:.1f} ms")
    print(f"keep-alive: reused connection p50 {r['stall_reused']:.1f} ms, fresh connection p50 {r['stall_fresh']:.1f} ms"
          f" -> {'STALL' if stall else 'no stall'}")
    drained = f"drained {r['drained']:.1f} s after the load" if r["drained"] is not None else "NOT drained in 120 s"
    print(f"broker: {r['broker_rate']:.0f} orders/s reached the paper broker during the load; backlog at its end "
          f"{r['backlog']}, {drained}")
    print(f"   created -> broker ack ms: p50 {pct(r['ack'], 0.5):.0f}  p99 {pct(r['ack'], 0.99):.0f} "
          f"({len(r['ack'])} orders); order statuses at the end {r['statuses']}")
    unit = "connections (pg_stat_activity)" if r["backend"] == "postgres" else "open descriptors on the database file"
    print(f"peak database connections: {r['connections']} {unit}")
    print(f"baseline GET {r['get_path']}, {clients} clients: {len(base.latencies) / r['base_wall']:.0f} req/s, "
          f"p50 {pct(base.latencies, 0.5):.1f} ms, p99 {pct(base.latencies, 0.99):.1f} ms "
          f"({base.non_2xx + base.transport} errors); webhook/GET throughput "
          f"{(load.accepted + load.blocked) / r['wall'] / max(1e-9, len(base.latencies) / r['base_wall']):.2f}")


def goal_rows(r: dict) -> list[tuple[str, bool, str]]:
    load = r["load"]
    p50, p99 = pct(load.latencies, 0.5), pct(load.latencies, 0.99)
    rate = load.accepted / r["wall"]
    unreached = sum(n for status, n in r["statuses"].items() if status in ("CREATED", "FAILED"))
    errors = load.errors + unreached
    return [
        (f"p99 <= {GOAL_P99_RATIO:g}x p50", p99 <= GOAL_P99_RATIO * p50, f"{p99 / p50:.1f}x"),
        (f"p99 <= {GOAL_P99_MS:g} ms", p99 <= GOAL_P99_MS, f"{p99:.0f} ms"),
        ("no keep-alive stall", r["stall_reused"] - r["stall_fresh"] < STALL_MS,
         f"{r['stall_reused']:.1f} vs {r['stall_fresh']:.1f} ms"),
        (f">= {GOAL_ALERTS_S:g} accepted alerts/s", rate >= GOAL_ALERTS_S, f"{rate:.0f}/s"),
        (f">= {GOAL_BROKER_S:g} orders/s to the broker", r["broker_rate"] >= GOAL_BROKER_S, f"{r['broker_rate']:.0f}/s"),
        ("0 errors", errors == 0, f"{errors}"),
        (f"ahead of OpenAlgo ~{OPENALGO_ALERTS_S:g}/s", rate > OPENALGO_ALERTS_S, f"{rate / OPENALGO_ALERTS_S:.1f}x"),
    ]


def print_goals(results: list[dict]):
    print("\ngoals" + "".join(f" | {r['backend']:>22}" for r in results))
    table = [goal_rows(r) for r in results]
    for i, (label, _, _) in enumerate(table[0]):
        cells = "".join(f" | {('MET ' if row[i][1] else 'MISSED ') + row[i][2]:>22}" for row in table)
        print(f"  {label:<32}{cells}")
    if len(results) == 2:
        rates = {r["backend"]: r["load"].accepted / r["wall"] for r in results}
        ratio = rates["postgres"] / rates["sqlite"]
        print(f"  PostgreSQL + Redis >= SQLite: {'MET' if ratio >= 1 else 'MISSED'} "
              f"(accepted alerts/s ratio postgres/sqlite {ratio:.2f})")


def main():
    args = parse_args()
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    tmp = Path(tempfile.mkdtemp(prefix="orderdesk-flow-"))
    print(f"orderdesk flow benchmark: {stack_shape()}; {args.clients} clients, {args.seconds:g} s load"
          f"{' (qcluster and orderwatcher paused during it: --web-only)' if args.web_only else ''}; tmp {tmp}")
    results = []
    try:
        for backend in backends:
            results.append(measure(backend, args, tmp))
            print_backend(results[-1], args.clients)
        print_goals(results)
    finally:
        if args.keep:
            print(f"kept {tmp}" + (f" and database {PG_DB}" if "postgres" in backends else ""))
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
