"""What an order costs PostgreSQL and its client, phase by phase, with and without prepared
statements (ORDERDESK_DB_PREPARED), in one run.

    .venv/bin/python benchmarks/pg_statements.py [--n 300] [--rounds 2]

In process, on one connection, against a scratch database `bench_statements` on the local
server (127.0.0.1:5432, dropped afterwards) and Redis database 9/10 (flushed): N webhook
intakes through Django's WSGI handler, then the N submissions to the paper broker
(orders.submission.submit_order), then the N fills as the paper feed announces them
(OrderWatcher.apply_update). For each phase: wall time, the client's CPU, the CPU of the
PostgreSQL backend serving it (from /proc), and the statements Django ran (transaction
control not counted). Each setting runs in its own process, alternating, `--rounds` times;
the ratios are prepared against not. Not a timed test: it prints figures.
"""

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"
DATABASE = "bench_statements"
REDIS = "redis://127.0.0.1:6379/9"
SECRET = "bench-secret-0123456789abcdefghijklmnop"
PHASES = ("intake", "submit", "fill")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="orders per phase (default 300)")
    p.add_argument("--rounds", type=int, default=2, help="runs of each setting, alternating (default 2)")
    p.add_argument("--child", choices=["true", "false"], help=argparse.SUPPRESS)
    return p.parse_args()


def child(n: int) -> dict:
    """One run under this process's ORDERDESK_DB_PREPARED: {phase: figures per order}."""
    import psycopg
    import redis

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        admin.execute(f"CREATE DATABASE {DATABASE}")
    redis.Redis.from_url(REDIS).flushdb()
    redis.Redis.from_url(REDIS[:-1] + "10").flushdb()  # the rate limits' cache
    sys.path.insert(0, str(ROOT))
    os.environ.update(DATABASE_URL=f"{SERVER}/{DATABASE}", DJANGO_SETTINGS_MODULE="orderdesk.settings",
                      SECRET_KEY="bench-statements-" + os.urandom(16).hex(), REDIS_URL=REDIS,
                      PAPER_FILL_DELAY_S="0", WEBHOOK_RATE_PER_IP="100000000/min",
                      WEBHOOK_RATE_PER_STRATEGY="100000000/min")
    import django

    django.setup()
    import logging

    from django.core import signals
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.db import close_old_connections, connection
    from django.test.utils import CaptureQueriesContext

    from brokers.models import PaperInstrument
    from brokers.registry import get_broker
    from orders.models import Order, Strategy
    from orders.submission import submit_order
    from orders.watcher import OrderWatcher

    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    for handler in logging.getLogger().handlers:
        handler.setStream(devnull)
    call_command("migrate", verbosity=0, interactive=False)
    strategy = Strategy(name="bench")
    strategy.set_secret(SECRET)
    strategy.save()
    symbols = [f"B{i}-EQ" for i in range(2 * n + 2)]
    PaperInstrument.objects.bulk_create([PaperInstrument(symbol=s, ref_price=100) for s in symbols])
    # One connection for the whole run, as a worker holds one: its backend's CPU is read.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    app = WSGIHandler()

    def post(i: int):
        body = json.dumps({"strategy": "bench", "secret": SECRET, "alert_id": f"a{i}", "execution_type": "ENTRY",
                           "exchange": "NSE", "legs": [{"symbol": symbols[i], "side": "BUY", "qty": 1,
                                                        "order_type": "MARKET", "product": "MIS"}]}).encode()
        status = []
        app({"REQUEST_METHOD": "POST", "PATH_INFO": "/api/webhook/", "CONTENT_TYPE": "text/plain",
             "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "SERVER_NAME": "localhost",
             "SERVER_PORT": "80", "wsgi.url_scheme": "http", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "localhost"},
            lambda s, h, e=None: status.append(s))
        if not status[0].startswith("201"):
            raise SystemExit(f"intake answered {status[0]}")

    def backend_cpu_s() -> float:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def phase(run, items) -> dict:
        run(items[0])  # warm: the statements' shapes, and their preparation
        items = items[1:]
        t0, c0, b0 = time.perf_counter(), time.process_time(), backend_cpu_s()
        with CaptureQueriesContext(connection) as captured:
            for item in items:
                run(item)
        b1, c1, t1 = backend_cpu_s(), time.process_time(), time.perf_counter()
        k = len(items)
        return {"wall": (t1 - t0) / k * 1e3, "client": (c1 - c0) / k * 1e3, "server": (b1 - b0) / k * 1e3,
                "statements": sum(1 for q in captured.captured_queries
                                  if q["sql"].split(" ", 1)[0] not in ("SAVEPOINT", "RELEASE")) / k}

    figures = {"intake": phase(post, list(range(n + 1)))}
    figures["submit"] = phase(submit_order, list(Order.objects.order_by("id").values_list("command_id", flat=True)))
    broker = get_broker()
    time.sleep(0.2)
    entries = broker.advance()
    figures["fill"] = phase(OrderWatcher(broker).apply_update, entries)
    if Order.objects.exclude(status="EXECUTED").exists():
        raise SystemExit("not every order was executed")
    connection.close()
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    return figures


def main():
    args = parse_args()
    if args.child:
        print(json.dumps(child(args.n)))
        return
    runs: dict[str, list[dict]] = {"true": [], "false": []}
    for _ in range(args.rounds):
        for prepared in ("false", "true"):
            out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--child", prepared],
                                 env={**os.environ, "ORDERDESK_DB_PREPARED": prepared}, capture_output=True,
                                 text=True, check=True)
            runs[prepared].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"orderdesk on PostgreSQL, in process, one connection: {args.n} orders per phase, "
          f"{args.rounds} runs of each setting, medians (ms per order)")
    print(f"{'phase':8} {'ORDERDESK_DB_PREPARED':>22} {'wall':>7} {'client':>7} {'server':>7} {'statements':>10}")
    for name in PHASES:
        row = {}
        for prepared in ("false", "true"):
            row[prepared] = {k: statistics.median(r[name][k] for r in runs[prepared]) for k in runs[prepared][0][name]}
            f = row[prepared]
            print(f"{name:8} {prepared:>22} {f['wall']:7.2f} {f['client']:7.2f} {f['server']:7.2f} "
                  f"{f['statements']:10.1f}")
        ratio = {k: row["true"][k] / row["false"][k] if row["false"][k] else float("nan") for k in row["true"]}
        print(f"{'':8} {'prepared / not':>22} {ratio['wall']:6.2f}x {ratio['client']:6.2f}x "
              f"{ratio['server']:6.2f}x")


if __name__ == "__main__":
    main()
