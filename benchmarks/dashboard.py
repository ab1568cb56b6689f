"""The dashboard's blotter refresh with 5,000 orders today, in process (Django's test client,
the full middleware, a signed-in trader), on a temporary SQLite database with the production
settings. Prints the server time per refresh (median and p90 of the runs), its queries, and a
no-op page (the login page) measured in the same run. Goal: < 200 ms with 5,000 orders today.

    .venv/bin/python benchmarks/dashboard.py [--orders 5000] [--runs 30]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 200


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="orderdesk-bench-dashboard-")
    sys.path.insert(0, str(ROOT))
    os.environ.update(DJANGO_SETTINGS_MODULE="orderdesk.settings", DATABASE_URL=f"sqlite:///{folder}/bench.sqlite3",
                      SECRET_KEY="bench-dashboard-" + os.urandom(16).hex(), INSTRUMENT_EXCHANGES="")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("migrate", verbosity=0, interactive=False)
    from orders.models import Alert, Order, Status, Strategy

    strategy = Strategy.objects.create(name="bench", secret_digest="x")
    now = timezone.now()
    statuses = [Status.EXECUTED, Status.EXECUTED, Status.FAILED, Status.SENT_TO_BROKER]
    for start in range(0, args.orders, 1000):
        alerts = Alert.objects.bulk_create(
            Alert(strategy=strategy, source="webhook", alert_id=f"b{n}", received_at=now, actor="bench", payload={})
            for n in range(start, min(args.orders, start + 1000)))
        Order.objects.bulk_create(
            Order(alert=alert, leg=1, strategy=strategy, source="webhook", execution_type="ENTRY", exchange="NSE",
                  symbol=f"SYM{n % 50}-EQ", side="BUY", qty=10, order_type="MARKET", product="MIS",
                  status=statuses[n % 4], tag="GUARD_BLOCKED:DUPLICATE_POSITION" if n % 4 == 2 else "",
                  tag_family="GUARD_BLOCKED" if n % 4 == 2 else "", tag_code="DUPLICATE_POSITION" if n % 4 == 2 else "",
                  created_at=now, updated_at=now)
            for n, alert in enumerate(alerts, start=start))
    client = Client()
    client.force_login(User.objects.create_superuser("bench", password="bench-password-0123456789"))

    def timed(url, **headers):
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            assert client.get(url, **headers).status_code == 200
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), sorted(times)[int(len(times) * 0.9) - 1]

    fragment = {"HTTP_X_DASHBOARD": "fragment"}
    series = {"blotter refresh": ("/dashboard/blotter/", fragment),
              "blotter, filtered by tag code": ("/dashboard/blotter/?tag_code=DUPLICATE_POSITION", fragment),
              "whole dashboard": ("/", {}),
              "login page (baseline)": ("/login/", {})}
    client.logout()
    login_page = timed("/login/")
    client.force_login(User.objects.get(username="bench"))
    print(f"orderdesk dashboard benchmark: {args.orders} orders today, {args.runs} runs per series, SQLite")
    print(f"{'series':34} {'p50 ms':>8} {'p90 ms':>8} {'queries':>8}")
    for name, (url, headers) in series.items():
        p50, p90 = login_page if url == "/login/" else timed(url, **headers)
        with CaptureQueriesContext(connection) as queries:
            client.get(url, **headers)
        print(f"{name:34} {p50:8.1f} {p90:8.1f} {len(queries.captured_queries):8d}")
    refresh = timed("/dashboard/blotter/", **fragment)[0]
    print(f"blotter refresh p50 {refresh:.1f} ms, {refresh / login_page[0]:.1f}x the login page: "
          f"goal < {GOAL_MS} ms {'MET' if refresh < GOAL_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
