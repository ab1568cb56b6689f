"""The admin blotter and the CSV export with 1M orders and 5M audit rows on PostgreSQL.

    .venv/bin/python benchmarks/blotter.py [--orders 1000000] [--events-per-order 5] [--keep]

Builds a database of its own (bench_blotter, dropped first) with the production settings,
fills it with SQL (generate_series): 10 strategies, 50,000 alerts of 20 legs, the orders
spread over the last 30 days (about a thirtieth today, IST), a mix of statuses and tags, and
N audit rows per order. Then times, in process through Django's test client with a logged-in
superuser (the full middleware and admin), the server's answer to: the order changelist as a
trader opens it (today), filtered by tag code, searched by command id, an order's page, and
the CSV export of today's failures. Prints the median of 5 and the goal (changelist < 300
ms). Not a timed test, not run by CI: it prints figures.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_DB = "bench_blotter"
GOAL_MS = 300


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=1_000_000)
    p.add_argument("--events-per-order", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="keep the bench_blotter database")
    return p.parse_args()


def reset_database(drop_only=False):
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        if not drop_only:
            conn.execute(f"CREATE DATABASE {PG_DB}")


def setup_django():
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DB
    os.environ["DJANGO_SETTINGS_MODULE"] = "orderdesk.settings"
    os.environ.setdefault("SECRET_KEY", "bench-blotter-" + os.urandom(16).hex())
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


FILL_SQL = """
INSERT INTO orders_alert (strategy_id, source, alert_id, client_supplied_id, received_at, sent_at, sender_ip, actor,
                          payload)
SELECT s.ids[1 + (g % 10)], 'webhook', 'bench-' || g, true,
       now() - (random() * interval '30 days'), NULL, '52.89.214.238', 'webhook', '{{}}'::jsonb
  FROM generate_series(1, {alerts}) g, (SELECT array_agg(id ORDER BY id) AS ids FROM orders_strategy) s;

INSERT INTO orders_order (command_id, alert_id, leg, strategy_id, source, execution_type, exchange, symbol, side,
                          qty, order_type, price, trigger_price, product, status, tag, tag_family, tag_code,
                          broker_order_id, filled_qty, avg_price, sent_at, created_at, updated_at)
SELECT substr(md5(a.id::text || '-' || leg), 1, 20), a.id, leg, a.strategy_id, 'webhook',
       CASE WHEN leg % 2 = 0 THEN 'EXIT' ELSE 'ENTRY' END, 'NSE', 'SYM' || ((a.id + leg) % 500) || '-EQ',
       CASE WHEN leg % 2 = 0 THEN 'SELL' ELSE 'BUY' END, 10, 'MARKET', NULL, NULL, 'MIS',
       t.status, t.tag, t.family, t.code,
       CASE WHEN t.status IN ('EXECUTED', 'SENT_TO_BROKER') THEN 'b' || a.id || '-' || leg END,
       CASE WHEN t.status = 'EXECUTED' THEN 10 ELSE 0 END, CASE WHEN t.status = 'EXECUTED' THEN 100 END,
       a.received_at, a.received_at, a.received_at
  FROM orders_alert a, generate_series(1, 20) leg,
       LATERAL (SELECT * FROM (VALUES
         (0, 'EXECUTED', '', '', ''),
         (1, 'FAILED', 'GUARD_BLOCKED:DUPLICATE_POSITION', 'GUARD_BLOCKED', 'DUPLICATE_POSITION'),
         (2, 'FAILED', 'RISK_BLOCKED:QTY_LIMIT qty 100 > 50', 'RISK_BLOCKED', 'QTY_LIMIT'),
         (3, 'FAILED', 'BROKER_REJECTED:RED:Margin Shortfall', 'BROKER_REJECTED', ''),
         (4, 'EXECUTED', '', '', ''), (5, 'EXECUTED', '', '', ''), (6, 'EXECUTED', '', '', ''),
         (7, 'SENT_TO_BROKER', '', '', ''), (8, 'FAILED', 'GUARD_BLOCKED:NO_POSITION', 'GUARD_BLOCKED', 'NO_POSITION'),
         (9, 'EXECUTED', '', '', '')) v(k, status, tag, family, code)
        WHERE v.k = (a.id + leg) % 10) t
 WHERE a.alert_id LIKE 'bench-%' AND leg <= {legs};

INSERT INTO orders_orderevent (order_id, kind, from_status, to_status, tag, actor, detail, at)
SELECT o.id, (ARRAY['CREATED', 'CLAIMED', 'BROKER_ACCEPTED', 'FILL', 'EXECUTED'])[1 + ((e - 1) % 5)], 'CREATED',
       o.status, o.tag, 'worker', '', o.created_at + (e * interval '50 milliseconds')
  FROM orders_order o, generate_series(1, {events}) e;
ANALYZE;
"""


def fill(orders: int, events: int):
    from django.contrib.auth.models import User
    from django.db import connection

    from orders.models import Strategy

    for i in range(10):
        Strategy.objects.create(name=f"bench-{i}", secret_digest="x" * 64)
    User.objects.create_superuser("bench", password="bench-password-0123")
    legs = 20
    alerts = max(1, orders // legs)
    t0 = time.monotonic()
    with connection.cursor() as cursor:
        for statement in FILL_SQL.format(alerts=alerts, legs=legs, events=events).split(";\n"):
            if statement.strip():
                cursor.execute(statement)
    print(f"filled {alerts * legs:,} orders and {alerts * legs * events:,} audit rows in {time.monotonic() - t0:.0f} s")


def timed(client, url: str, n: int = 5, stream: bool = False) -> tuple[float, int]:
    times, status = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(url, follow=True)
        body = b"".join(response.streaming_content) if stream else response.content
        times.append((time.perf_counter() - t0) * 1000)
        status = (response.status_code, len(body))
    return statistics.median(times), status


def main():
    args = parse_args()
    reset_database()
    try:
        setup_django()
        fill(args.orders, args.events_per_order)
        from django.contrib.auth.models import User
        from django.test import Client
        from django.utils import timezone

        from orders.models import Order

        client = Client(HTTP_HOST="localhost")
        client.force_login(User.objects.get(username="bench"))
        today = timezone.localtime().strftime("%Y-%m-%d")
        order = Order.objects.filter(created_at__gte=timezone.now() - timezone.timedelta(days=1)).first()
        rows = [
            ("changelist as opened (today, counts)", "/admin/orders/order/", False),
            ("changelist, tag code DUPLICATE_POSITION", "/admin/orders/order/?tag_code=DUPLICATE_POSITION", False),
            ("changelist, search by command id", f"/admin/orders/order/?q={order.command_id}", False),
            ("an order's page (trail, journey)", f"/admin/orders/order/{order.pk}/change/", False),
            ("CSV: today's failures", f"/api/orders/?format=csv&status=FAILED&created_after={today}T00:00:00%2B05:30",
             True),
        ]
        print(f"\nserver time, median of 5, in process (Django test client, superuser), {Order.objects.count():,} "
              f"orders:")
        for label, url, stream in rows:
            ms, (status, size) = timed(client, url, stream=stream)
            goal = f"  goal < {GOAL_MS} ms: {'MET' if ms < GOAL_MS else 'MISSED'}" if "changelist" in label else ""
            print(f"  {label:<42} {ms:8.1f} ms  (HTTP {status}, {size:,} bytes){goal}")
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            reset_database(drop_only=True)


if __name__ == "__main__":
    main()
