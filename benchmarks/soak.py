"""Soak: never twice, never lost, while processes are killed at random (issue 17).

    .venv/bin/python benchmarks/soak.py [--alerts 10000] [--clients 16] [--duplicates 0.1]
                                        [--chaos-every 3] [--grace 120] [--json FILE] [--keep]
                                        [--postgres URL] [--database NAME] [--redis URL]

The desk as production runs it, on PostgreSQL (a database of its own, dropped and created) and
the django-q2 Redis broker (a db of its own, flushed): `manage.py up`'s three children started
one by one, as the systemd units in deploy/ run them (gunicorn, `qcluster`, `orderwatcher`
with its push feed), plus a second `qcluster`. (`up` itself stops everything once one child
exits; here, as under systemd, what dies is restarted.) The broker is the Shoonya adapter
against the fake Noren server, run in this process: a fraction of its PlaceOrder replies time
out, are HTTP 500, garbage, `Ok` without an order number, a hang-up or a rejection.

`--alerts` TradingView-style alerts (each a fresh strategy and symbol pair, so the guard lets
every one through) go out from `--clients` keep-alive clients; a `--duplicates` fraction is
delivered twice, close together. A sender that gets no answer or a 503 delivers the same body
again, as a retrying sender does. Meanwhile a chaos thread `kill -9`s, every `--chaos-every`
seconds or so, one of: a django-q2 worker process, a whole cluster's process group, the
orderwatcher's group, a gunicorn worker; it restarts what it killed (gunicorn's and
django-q2's own masters restart their workers).

Printed: alerts sent / accepted / refused (by code), orders, broker place calls, double
submissions (command ids booked more than once at the broker: must be 0), lost alerts
(answered 2xx with no order on record: must be 0), orders the broker booked that we failed
as unknown (must be 0), `verify_audit`'s mismatches (must be 0), orders not terminal after the run and
`--grace` seconds (must be 0, or in doubt with a reason), received -> placed p50/p99 (audit
rows: CREATED -> BROKER_ACCEPTED or BROKER_ID_ADOPTED), kills by kind and wall time. With
`--json FILE` the same figures are written there (tests/test_soak.py runs 1,000 alerts).
Exits 1 when a must-be-0 figure is not 0. Not a timed test: it prints figures.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.flow import (  # noqa: E402 - after the path
    PREPARE,
    PYTHON,
    ROOT,
    SECRET,
    STRATEGY_PREFIX,
    SYMBOLS,
    Client,
    descendants,
    free_port,
    pct,
    strategy_name,
    symbol_name,
)
from brokers.fake_noren import Behaviour, FakeNoren  # noqa: E402

MISBEHAVIOUR = {  # of PlaceOrder replies, for orders without a rule of their own
    Behaviour.ACCEPT: 0.86, Behaviour.TIMEOUT: 0.03, Behaviour.HTTP_500: 0.03, Behaviour.GARBAGE: 0.02,
    Behaviour.OK_WITHOUT_NUMBER: 0.02, Behaviour.HANG_UP: 0.02, Behaviour.REJECT: 0.02,
}
TIMEOUT_SLEEP_S = 2.0  # a TIMEOUT reply comes after this; the adapter gives up after BROKER_READ_TIMEOUT_S
NOT_TERMINAL = ("CREATED", "SENT_TO_BROKER")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alerts", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duplicates", type=float, default=0.1, help="fraction of alerts delivered twice")
    p.add_argument("--chaos-every", type=float, default=3.0, help="seconds between kills, on average")
    p.add_argument("--grace", type=float, default=120.0, help="seconds for the orders to settle after the run")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres",
                   help="an administrative connection to the PostgreSQL server")
    p.add_argument("--database", default="bench_soak", help="dropped and created")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="flushed; the next db holds the counters")
    p.add_argument("--min-kills", type=int, default=0,
                   help="the chaos goes on after the last alert until it has killed this many processes")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--keep", action="store_true", help="keep the database and the service logs")
    return p.parse_args(argv)


# --- the services ----------------------------------------------------------------------------

class Service:
    """One long-running process in a process group of its own, as a systemd unit runs it."""

    def __init__(self, name: str, argv: list[str], env: dict, logs: Path):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self):
        log = open(self.log_path, "ab")  # noqa: SIM115 - held by the child
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """kill -9 of the whole group (django-q2's workers outlive a killed sentinel otherwise)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def children(self) -> list[int]:
        return [pid for pid in descendants(self.proc.pid) if pid != self.proc.pid] if self.alive() else []

    def stop(self):
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.kill()


class Chaos(threading.Thread):
    """Kills one process at random every `every` seconds or so, and restarts what it killed."""

    def __init__(self, services: dict[str, Service], every: float, rng: random.Random, min_kills: int = 0):
        super().__init__(daemon=True)
        self.services, self.every, self.rng, self.min_kills = services, every, rng, min_kills
        self.kills: Counter = Counter()
        self.done = threading.Event()

    def run(self):
        while True:
            pause = self.rng.uniform(0.5, 1.5) * self.every
            if self.done.wait(pause):
                if sum(self.kills.values()) >= self.min_kills:
                    break
                time.sleep(pause)  # the senders are done, the kills keep their pace
            kind = self.rng.choice(["task worker", "cluster", "watcher", "web worker"])
            if kind == "task worker" and (pids := self.services[self.rng.choice(["cluster-1", "cluster-2"])].children()):
                self._kill_pid(self.rng.choice(pids), kind)
            elif kind == "web worker" and (pids := self.services["web"].children()):
                self._kill_pid(self.rng.choice(pids), kind)
            elif kind in ("cluster", "watcher"):
                service = self.services[self.rng.choice(["cluster-1", "cluster-2"]) if kind == "cluster" else "watcher"]
                service.kill()
                self.kills[kind] += 1
                time.sleep(1)
                service.start()
            self.supervise()

    def _kill_pid(self, pid: int, kind: str):
        try:
            os.kill(pid, signal.SIGKILL)
            self.kills[kind] += 1
        except ProcessLookupError:
            pass

    def supervise(self):
        """Restart=always: whatever exited comes back."""
        for service in self.services.values():
            if not service.alive():
                service.start()

    def stop(self):
        self.done.set()
        self.join()
        self.supervise()


# --- the senders ---------------------------------------------------------------------------

def webhook_request(port: int, body: bytes) -> bytes:
    return (f"POST /api/webhook/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Go-http-client/1.1\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def alert_body(n: int) -> bytes:
    return json.dumps({
        "strategy": strategy_name(n // SYMBOLS), "secret": SECRET, "alert_id": f"soak-{n}", "execution_type": "ENTRY",
        "exchange": "NSE",
        "legs": [{"symbol": symbol_name(n % SYMBOLS), "side": "BUY", "qty": 1, "order_type": "MARKET",
                  "product": "MIS"}],
    }).encode()


class Senders:
    """Deliveries from `clients` threads; a delivery without an answer, or answered 503, is
    delivered again (the same body), up to `attempts` times."""

    def __init__(self, port: int, deliveries: list[int], clients: int, attempts: int = 30):
        self.port, self.clients, self.attempts = port, clients, attempts
        self.todo = list(reversed(deliveries))
        self.lock = threading.Lock()
        self.answers: dict[int, list[tuple[int, str]]] = {}  # alert -> (status, code or tag) per final answer
        self.retries = Counter()  # why a delivery was made again
        self.unanswered: list[int] = []

    def run(self):
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _loop(self):
        client = Client(self.port)
        while True:
            with self.lock:
                if not self.todo:
                    break
                n = self.todo.pop()
            request = webhook_request(self.port, alert_body(n))
            for _ in range(self.attempts):
                try:
                    status, body = client.request(request)
                except OSError as exc:
                    self.retries[type(exc).__name__] += 1
                    time.sleep(0.2)
                    continue
                if status == 503:
                    self.retries["503"] += 1
                    time.sleep(0.3)
                    continue
                self._answered(n, status, body)
                break
            else:
                with self.lock:
                    self.unanswered.append(n)
        client.close()

    def _answered(self, n: int, status: int, body: bytes):
        try:
            reply = json.loads(body)
        except ValueError:
            reply = {}
        if 200 <= status < 300:
            failed = [o.get("tag") or "FAILED" for o in reply.get("orders", []) if o.get("status") == "FAILED"]
            what = failed[0].split(" ")[0] if failed else "accepted"
        else:
            what = f"HTTP {status} {reply.get('code') or reply.get('error') or ''}".strip()
        with self.lock:
            self.answers.setdefault(n, []).append((status, what))


# --- setting up and reading the results ---------------------------------------------------------

def database_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


QUEUE = f"soak-{os.getpid()}"  # its own queue: another run on the same Redis db is left alone


def reset(args, drop_only: bool = False):
    client = redis.Redis.from_url(args.redis)
    keys = list(client.scan_iter(match=f"django_q:{QUEUE}:*"))
    if keys:
        client.delete(*keys)
    client.close()
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{args.database}"')


def counters_url(queue_url: str) -> str:
    base, db = queue_url.rsplit("/", 1)
    return f"{base}/{int(db) + 1}"


def environment(args, fake: FakeNoren) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ORDERDESK_", "SHOONYA_", "Q_CLUSTER", "TELEGRAM_")) and k not in (
               "DATABASE_URL", "REDIS_URL", "REDIS_CACHE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(fake.settings())
    env.update({
        "DJANGO_SETTINGS_MODULE": "orderdesk.settings",
        "SECRET_KEY": "soak-key-" + os.urandom(16).hex(),
        "DATABASE_URL": database_url(args.postgres, args.database),
        "REDIS_URL": args.redis, "REDIS_CACHE_URL": counters_url(args.redis),
        "ORDERDESK_Q_NAME": QUEUE, "ORDERDESK_BROKER": "shoonya", "SHOONYA_ALGO_ID": "",
        "BROKER_MAX_ORDERS_PER_S": "0",  # the fake has no rate limit; the real one is 8/s
        "BROKER_READ_TIMEOUT_S": "1", "IN_DOUBT_GRACE_S": "5", "WATCHER_INTERVAL_S": "0.5",
        "INSTRUMENT_EXCHANGES": "", "PYTHONUNBUFFERED": "1",
        "WEBHOOK_RATE_PER_IP": "100000000/min", "WEBHOOK_RATE_PER_STRATEGY": "100000000/min",
    })
    return env


def prepare(env: dict, strategies: int):
    subprocess.run([PYTHON, "manage.py", "shell", "-c", PREPARE.format(
        symbols=SYMBOLS, strategies=strategies, prefix=STRATEGY_PREFIX, secret=SECRET)], cwd=ROOT, env=env, check=True)


def wait_until_serving(port: int, web: Service, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not web.alive():
            raise SystemExit(f"gunicorn exited; see {web.log_path}")
        try:
            client = Client(port)
            status, _ = client.request(f"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            client.close()
            if status in (200, 503):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the web server did not answer within {timeout_s:g} s; see {web.log_path}")


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def settle(url: str, grace_s: float) -> float:
    """Seconds until no order is CREATED or SENT_TO_BROKER without an answer (at most grace_s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < grace_s:
        [(waiting,)] = rows(url, f"SELECT count(*) FROM orders_order WHERE status IN {NOT_TERMINAL}")
        if not waiting:
            break
        time.sleep(1)
    return time.monotonic() - t0


def verify_audit(env: dict) -> tuple[int, str]:
    """`manage.py verify_audit` on the soak's database: (mismatches, its last lines)."""
    done = subprocess.run([PYTHON, "manage.py", "verify_audit"], cwd=ROOT, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return (0 if done.returncode == 0 else max(1, sum(1 for line in lines if ": " in line) - 1)), "\n".join(lines[-5:])


def figures(args, senders: Senders, fake: FakeNoren, url: str, chaos: Chaos, wall: float, settled: float) -> dict:
    answered_2xx = {n for n, answers in senders.answers.items() if any(200 <= s < 300 for s, _ in answers)}
    refused = Counter(what for answers in senders.answers.values() for _, what in answers[:1] if what != "accepted")
    with_orders = {int(a.split("-", 1)[1]) for (a,) in rows(
        url, "SELECT DISTINCT a.alert_id FROM orders_alert a JOIN orders_order o ON o.alert_id = a.id")}
    booked = Counter(o.fields.get("remarks") for o in fake.orders)
    unknown = {c for (c,) in rows(url, "SELECT command_id FROM orders_order WHERE status = 'FAILED'"
                                       " AND tag LIKE 'BROKER_UNKNOWN:%%'")}
    events = rows(url, "SELECT c.at, min(p.at) FROM orders_orderevent c JOIN orders_orderevent p"
                       " ON p.order_id = c.order_id AND p.kind IN ('BROKER_ACCEPTED', 'BROKER_ID_ADOPTED')"
                       " WHERE c.kind = 'CREATED' GROUP BY c.id, c.at")
    placed_ms = [(p - c).total_seconds() * 1000 for c, p in events]
    not_terminal = rows(url, "SELECT command_id, status, tag FROM orders_order"
                             f" WHERE status IN {NOT_TERMINAL} ORDER BY id LIMIT 20")
    [(orders,)] = rows(url, "SELECT count(*) FROM orders_order")
    statuses = dict(rows(url, "SELECT status, count(*) FROM orders_order GROUP BY status"))
    failed = dict(rows(url, "SELECT concat_ws(':', tag_family, NULLIF(tag_code, '')), count(*) FROM orders_order"
                            " WHERE status = 'FAILED' GROUP BY 1 ORDER BY 2 DESC"))
    return {
        "alerts_sent": args.alerts, "deliveries": sum(len(a) for a in senders.answers.values()),
        "accepted": len(answered_2xx), "refused": dict(refused), "unanswered": len(senders.unanswered),
        "redeliveries": dict(senders.retries), "orders": orders, "statuses": statuses, "failed_tags": failed,
        "broker_place_calls": len(fake.calls_to("PlaceOrder")), "broker_orders": sum(booked.values()),
        "double_submissions": sum(1 for n in booked.values() if n > 1),
        "lost_alerts": len(answered_2xx - with_orders),
        "booked_but_unknown": sum(1 for remarks in booked if remarks in unknown),
        "not_terminal": [list(r) for r in not_terminal], "not_terminal_count": sum(
            statuses.get(s, 0) for s in NOT_TERMINAL),
        "received_to_placed_ms": {"p50": round(pct(placed_ms, 0.5), 1), "p99": round(pct(placed_ms, 0.99), 1)},
        "kills": dict(chaos.kills), "restarts": {},
        "wall_s": round(wall, 1), "settle_s": round(settled, 1),
    }


def report(f: dict) -> bool:
    print(f"alerts sent {f['alerts_sent']}, deliveries {f['deliveries']}, accepted {f['accepted']}, "
          f"unanswered {f['unanswered']}, delivered again {f['redeliveries']}")
    print(f"refused or blocked (by code): {f['refused']}")
    print(f"orders {f['orders']} {f['statuses']}; failed by tag {f['failed_tags']}")
    print(f"broker place calls {f['broker_place_calls']}, broker orders {f['broker_orders']}")
    print(f"received -> placed p50 {f['received_to_placed_ms']['p50']} ms, p99 {f['received_to_placed_ms']['p99']} ms")
    print(f"kills {f['kills']}, restarts {f['restarts']}; wall {f['wall_s']} s, settled {f['settle_s']} s later")
    ok = True
    for name in ("double_submissions", "lost_alerts", "booked_but_unknown", "not_terminal_count", "unanswered",
                 "audit_mismatches"):
        good = f[name] == 0
        ok &= good
        print(f"{name.replace('_', ' ')}: {f[name]} (must be 0) {'ok' if good else 'FAILED'}")
    if f["not_terminal"]:
        print(f"not terminal: {f['not_terminal']}")
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    fake = FakeNoren(fill_delay_s=0.3).start()
    fake.set_mix(MISBEHAVIOUR, sleep_s=TIMEOUT_SLEEP_S)
    strategies = -(-args.alerts // SYMBOLS)
    for i in range(min(args.alerts, SYMBOLS)):
        fake.set_last_price(symbol_name(i), 100 + i)
    logs = Path(os.environ.get("SOAK_LOGS") or ROOT / "db" / "soak-logs")
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    reset(args)
    env = environment(args, fake)
    prepare(env, strategies)
    port = free_port()
    manage = [PYTHON, "manage.py"]
    services = {
        "web": Service("web", [PYTHON, "-m", "gunicorn", "-c", "python:orderdesk.gunicorn_conf", "--bind",
                               f"127.0.0.1:{port}"], env, logs),
        "cluster-1": Service("cluster-1", manage + ["qcluster"], env, logs),
        "cluster-2": Service("cluster-2", manage + ["qcluster"], env, logs),
        "watcher": Service("watcher", manage + ["orderwatcher"], env, logs),
    }
    url = env["DATABASE_URL"]
    try:
        for service in services.values():
            service.start()
        wait_until_serving(port, services["web"])
        deliveries = []
        for n in range(args.alerts):
            deliveries.append(n)
            if rng.random() < args.duplicates:
                deliveries.insert(max(0, len(deliveries) - rng.randint(1, args.clients)), n)  # close together
        senders = Senders(port, deliveries, args.clients)
        chaos = Chaos(services, args.chaos_every, rng, args.min_kills)
        t0 = time.monotonic()
        chaos.start()
        senders.run()
        wall = time.monotonic() - t0
        chaos.stop()
        settled = settle(url, args.grace)
        result = figures(args, senders, fake, url, chaos, wall, settled)
        result["restarts"] = {name: s.starts - 1 for name, s in services.items()}
        result["audit_mismatches"], result["audit_report"] = verify_audit(env)
    finally:
        for service in services.values():
            service.stop()
        fake.stop()
    ok = report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if not args.keep:
        reset(args, drop_only=True)
    print(f"service logs: {logs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
