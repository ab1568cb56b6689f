"""Webhook intake latency, in process, against a no-op DRF view in the same run.

    .venv/bin/python benchmarks/intake.py [--n 2000] [--warmup 200] [--no-two-leg] [--alone]
                                          [--profile 500] [--breakdown 500] [--show-queries] [--keep]

A temporary SQLite file with the production settings (WAL, synchronous=NORMAL, BEGIN
IMMEDIATE, django-q2 ORM broker, INFO logging of the lifecycle), migrated, one strategy
with a known secret. Both views are called through Django's WSGI handler directly (full
middleware stack, request_started/request_finished signals, so per-request connection
handling is as in production) with a TradingView-style text/plain body. Requests are
interleaved (intake, no-op, [2-leg intake], ...) so they share the machine's noise.

Not a timed test: it prints figures. Target (issue 3): intake p50 <= 5 ms and <= 3x no-op.
The "no hash" series stubs out the audit chain's hashing (orders.audit.event_hash): the
difference is the hashing's share of the intake (issue 18: <= 5 %).
"""

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789abcdefghijklmnop"  # >= 24 chars
STRATEGY = "bench"
LIMITS_STRATEGY = "bench-limits"  # every risk limit configured, a day of history (issue 10)
LIMITS_SERIES = "1-leg, limits"
HISTORY_FILLS = 1000
TARGET_LIMITS_RATIO = 1.3
NO_HASH_SERIES = "1-leg, no hash"  # the audit chain's hashing stubbed out (issue 18)
TARGET_HASH_SHARE = 0.05
TARGET_P50_MS = 5.0
TARGET_RATIO = 3.0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="measured requests per series (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="unmeasured requests per series first (default 200)")
    p.add_argument("--no-two-leg", action="store_true", help="skip the 2-leg alert series")
    p.add_argument("--no-limits", action="store_true",
                   help="skip the series on a strategy with every risk limit and 1,000 fills of history")
    p.add_argument("--no-hash-series", action="store_true",
                   help="skip the series with the audit chain's hashing stubbed out (its cost, issue 18)")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="afterwards, cProfile K more 1-leg intakes and print the top functions")
    p.add_argument("--breakdown", type=int, default=0, metavar="K",
                   help="afterwards, time K more 1-leg intakes with light wrappers: exclusive ms per cost centre")
    p.add_argument("--show-queries", action="store_true", help="print the SQL of one intake")
    p.add_argument("--alone", action="store_true",
                   help="no other connection to the database (default: hold one open, as a running qcluster does)")
    p.add_argument("--keep", action="store_true", help="keep the temporary database directory")
    return p.parse_args()


def setup_django(tmpdir: str):
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = f"sqlite:///{tmpdir}/bench.sqlite3"  # absolute path -> sqlite:////tmp/...
    os.environ["DJANGO_SETTINGS_MODULE"] = "orderdesk.settings"
    os.environ.setdefault("SECRET_KEY", "bench-intake-" + os.urandom(16).hex())  # a throwaway database
    os.environ.pop("REDIS_URL", None)  # the embedded default: django-q2 ORM broker
    # Thousands of alerts a minute from one address: the limit is counted, never reached.
    os.environ["WEBHOOK_RATE_PER_IP"] = os.environ["WEBHOOK_RATE_PER_STRATEGY"] = "100000000/min"
    import django

    django.setup()

    from django.conf import settings
    from rest_framework.permissions import AllowAny
    from rest_framework.renderers import JSONRenderer
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from orders.webhook import read_body

    class NoopView(APIView):
        """The floor: DRF dispatch through the same middleware, reads the body, 201."""

        authentication_classes: list = []
        permission_classes = [AllowAny]
        renderer_classes = [JSONRenderer]
        throttle_classes: list = []

        def post(self, request):
            read_body(request._request, settings.WEBHOOK_MAX_BYTES)
            return Response({"ok": True}, status=201)

    from django.urls import include, path

    urls = types.ModuleType("bench_urls")
    urls.urlpatterns = [path("noop/", NoopView.as_view()), path("", include("orderdesk.urls"))]
    sys.modules["bench_urls"] = urls
    settings.ROOT_URLCONF = "bench_urls"

    # Production logs lifecycle lines at INFO to the console; keep the formatting and the
    # write, but into /dev/null instead of this terminal.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)

    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)

    from orders.models import Strategy

    strategy = Strategy(name=STRATEGY)
    strategy.set_secret(SECRET)
    strategy.save()
    with_limits_and_history()

    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def with_limits_and_history():
    """A strategy with every risk limit set (generous: its alerts pass) and a trading day behind
    it: 1,000 winning fills today and an open position valued at the paper broker's price."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from orders.models import Alert, Fill, Order, Position, Strategy
    from risk.models import RiskLimits
    from risk.services import set_limits

    strategy = Strategy(name=LIMITS_STRATEGY)
    strategy.set_secret(SECRET)
    strategy.save()
    set_limits(strategy, actor="bench", daily_loss=Decimal(10**9), max_loss=Decimal(10**9), cooldown_min=5,
               cooldown_after_losses=2, max_qty=10**6, max_notional=Decimal(10**12), max_orders_per_min=10**9,
               max_positions=10**6, price_band_pct=Decimal(50))
    now = timezone.now()
    # Set in the morning, as a trader does: the order rate's per-second buckets hold a whole window.
    RiskLimits.objects.filter(strategy=strategy).update(updated_at=now - timedelta(hours=1))
    alert = Alert.objects.create(strategy=strategy, source="webhook", alert_id="history", actor="bench", payload={})
    order = Order.objects.create(alert=alert, leg=1, strategy=strategy, source="webhook", execution_type="EXIT",
                                 exchange="NSE", symbol="TCS-EQ", side="SELL", qty=HISTORY_FILLS,
                                 order_type="MARKET", product="MIS", status="EXECUTED", filled_qty=HISTORY_FILLS)
    Fill.objects.bulk_create(Fill(order=order, strategy=strategy, qty=1, price=Decimal("4120"), cum_qty=i + 1,
                                  execution_type="EXIT",
                                  realized_pnl=Decimal("1.5"), at=now) for i in range(HISTORY_FILLS))
    Position.objects.create(strategy=strategy, exchange="NSE", symbol="HDFCBANK-EQ", product="MIS", net_qty=10,
                            avg_price=Decimal("1700"))


def hold_cluster_connection(tmpdir: str):
    """A running qcluster always has a connection open on the database (its pusher polls every
    0.05 s). Without one, every request's connection close is the last one: SQLite then
    checkpoints and deletes the WAL, ~1 ms that production does not pay."""
    import sqlite3

    conn = sqlite3.connect(f"{tmpdir}/bench.sqlite3")
    conn.execute("SELECT count(*) FROM django_q_ormq").fetchall()
    return conn


def alert_body(alert_id: str, legs: int, symbols=("RELIANCE-EQ", "SBIN-EQ", "INFY-EQ", "TCS-EQ"),
               strategy: str = STRATEGY) -> bytes:
    """A TradingView-style alert. The profile and breakdown runs pass a fresh symbol each time:
    nothing is live on it, so the alert passes the guard without the untimed settle()."""
    return json.dumps({
        "strategy": strategy,
        "secret": SECRET,
        "alert_id": alert_id,
        "execution_type": "ENTRY",
        "exchange": "NSE",
        "legs": [
            {"symbol": symbols[i % len(symbols)], "side": "BUY" if i % 2 == 0 else "SELL", "qty": 10,
             "order_type": "MARKET", "product": "MIS", "price": None, "trigger_price": None}
            for i in range(legs)
        ],
    }).encode()


class Caller:
    """Calls the WSGI application the way a WSGI server does, and times it."""

    def __init__(self, app):
        self.app = app
        self.status = None

    def _start_response(self, status, headers, exc_info=None):
        self.status = status
        return lambda data: None

    def post(self, path: str, body: bytes) -> tuple[int, float]:
        environ = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "CONTENT_TYPE": "text/plain; charset=utf-8",
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "52.89.214.238",  # one of TradingView's webhook addresses
            "HTTP_HOST": "localhost:8000",
            "HTTP_USER_AGENT": "Go-http-client/1.1",
            "HTTP_ACCEPT_ENCODING": "gzip",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        t0 = time.perf_counter_ns()
        response = self.app(environ, self._start_response)
        try:
            b"".join(response)
        finally:
            response.close()  # request_finished: close_old_connections, as a server does
        elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
        return int(self.status.split(" ", 1)[0]), elapsed_ms


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    s = sorted(values)
    return {"p50": pct(s, 0.50), "p90": pct(s, 0.90), "p99": pct(s, 0.99), "mean": statistics.fmean(s),
            "max": s[-1]}


def settle():
    """Untimed: what workers and the watcher do within a second in production, so that the
    guard sees a realistic handful of live orders and every alert passes it (the path that
    enqueues a submission), instead of thousands of never-sent CREATED orders."""
    from django_q.models import OrmQ

    from orders.models import Order

    Order.objects.filter(status="CREATED").update(status="EXECUTED")  # benchmark shortcut, not lifecycle
    OrmQ.objects.all().delete()


def run(args, caller):
    series = {"intake 1-leg": [], "no-op DRF": []}
    if not args.no_two_leg:
        series["intake 2-leg"] = []
    if not args.no_limits:
        series[LIMITS_SERIES] = []
    if not args.no_hash_series:
        series[NO_HASH_SERIES] = []
    expected = {"intake 1-leg": 201, "no-op DRF": 201, "intake 2-leg": 201, LIMITS_SERIES: 201, NO_HASH_SERIES: 201}
    from orders import audit

    event_hash = audit.event_hash
    noop_body = alert_body("noop", 1)
    counter = 0

    def one(name: str) -> float:
        nonlocal counter
        counter += 1
        if name == "no-op DRF":
            status, ms = caller.post("/noop/", noop_body)
        else:
            legs = 2 if name == "intake 2-leg" else 1
            strategy = LIMITS_STRATEGY if name == LIMITS_SERIES else STRATEGY
            if name == NO_HASH_SERIES:
                audit.event_hash = lambda *args, **kwargs: ""
            try:
                status, ms = caller.post("/api/webhook/", alert_body(f"tv-{counter:08d}", legs, strategy=strategy))
            finally:
                audit.event_hash = event_hash
            settle()
        if status != expected[name]:
            raise SystemExit(f"{name}: HTTP {status}, expected {expected[name]}")
        return ms

    names = list(series)
    for _ in range(args.warmup):
        for name in names:
            one(name)
    import gc

    gc.collect()
    for i in range(args.n):
        # rotate the order too, so no series always runs right after the same neighbour
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            series[name].append(one(name))
    return series


def count_queries(caller, legs: int, show: bool):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settle()  # the alert passes the guard, as in the timed series
    with CaptureQueriesContext(connection) as ctx:
        status, _ = caller.post("/api/webhook/", alert_body(f"tv-q{legs}-{time.time_ns()}", legs))
    assert status == 201, status
    sqls = [q["sql"] for q in ctx.captured_queries]
    commits = sum(1 for s in sqls if s.strip().upper() == "COMMIT")
    begins = sum(1 for s in sqls if s.strip().upper().startswith("BEGIN"))
    statements = len(sqls) - commits - begins
    if show:
        print(f"\nSQL of one {legs}-leg intake:")
        for s in sqls:
            print("   ", s[:160])
    return statements, begins, commits


def profile(caller, k: int):
    import cProfile
    import pstats

    bodies = [alert_body(f"tv-prof-{i:08d}", 1, symbols=[f"PROF{i}-EQ"]) for i in range(k)]
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for body in bodies:
        caller.post("/api/webhook/", body)
    prof.disable()
    wall = (time.perf_counter() - t0) * 1000 / k
    print(f"\ncProfile of {k} 1-leg intakes ({wall:.2f} ms/request under the profiler; "
          "figures are per request, inflated by profiling):")
    stats = pstats.Stats(prof).stats

    def name(key):
        filename, line, func = key
        for marker in ("site-packages/", "/work/main/", "lib/python3"):
            if marker in filename:
                filename = filename.split(marker, 1)[1]
                break
        return f"{filename}:{line}({func})" if line else func

    for title, index, top in (("cumulative", 3, 40), ("own time", 2, 25)):
        rows = sorted(stats.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
        print(f"\n  by {title} (us per request):   own    cumul  calls/req  function")
        for key, (cc, nc, tt, ct, _callers) in rows:
            print(f"  {tt * 1e6 / k:28.0f} {ct * 1e6 / k:8.0f} {nc / k:10.1f}  {name(key)[:110]}")


def breakdown(caller, k: int):
    """Exclusive wall time per cost centre from thin timing wrappers (cProfile inflates the
    ORM's many small calls 2-3x; this does not). Wrappers are installed for good: run last."""
    import collections
    import functools
    import re

    acc, calls, stack = collections.defaultdict(int), collections.defaultdict(int), []

    def wrap(fn, label):
        @functools.wraps(fn)
        def timed(*a, **kw):
            name = label(a) if callable(label) else label
            t0 = time.perf_counter_ns()
            stack.append(0)
            try:
                return fn(*a, **kw)
            finally:
                elapsed = time.perf_counter_ns() - t0
                acc[name] += elapsed - stack.pop()
                calls[name] += 1
                if stack:
                    stack[-1] += elapsed
        return timed

    def patch(owner, attr, label, static=False):
        fn = getattr(owner, attr, None)
        if fn is not None:  # the code under test moves; skip what is gone
            setattr(owner, attr, staticmethod(wrap(fn, label)) if static else wrap(fn, label))

    from django.core.handlers.wsgi import WSGIHandler
    from django.db.backends.sqlite3.base import DatabaseWrapper, SQLiteCursorWrapper
    from django.db.models.query import QuerySet
    from django_q import tasks as q_tasks
    from django_q.signing import SignedPackage

    from orderdesk import statements
    from orders import lifecycle, services, webhook
    from orders.models import Strategy

    def sql_label(a):
        m = re.match(r'(\w+)\s.*?(?:FROM|INTO)\s+"(\w+)"', a[1].lstrip(), re.S)
        return "sqlite3 execute " + (f"{m.group(1)} {m.group(2)}" if m else a[1].strip()[:24])

    patch(WSGIHandler, "__call__", "WSGI + middleware + DRF + response (the rest)")
    for name in ("parse_json", "validate_alert", "redacted", "intake_response", "sender_ip", "read_body"):
        patch(webhook, name, f"webhook.{name}")
    patch(Strategy, "authenticate", "Strategy.authenticate: SELECT + sha256", static=True)
    patch(services, "_register", "services._register: own Python")
    patch(services, "evaluate", "blockers.evaluate")
    patch(services.Submissions, "enqueue", "Submissions.enqueue: own Python")
    patch(services, "Submissions", "Submissions(): async_task's own Python (before the transaction)")
    patch(lifecycle, "register", "lifecycle.register: own Python, hashes + log line")
    patch(QuerySet, "create", lambda a: f"ORM {a[0].model.__name__}.objects.create")
    patch(QuerySet, "bulk_create", lambda a: f"ORM {a[0].model.__name__}.objects.bulk_create")
    patch(statements, "insert", lambda a: f"statements.insert {type(a[0]).__name__}")
    patch(statements, "first", lambda a: f"statements.first {a[0].__name__}")
    patch(q_tasks, "get_broker", "django_q get_broker")
    patch(SignedPackage, "dumps", "django_q SignedPackage.dumps (pickle + sign)", static=True)
    patch(SQLiteCursorWrapper, "execute", sql_label)
    patch(DatabaseWrapper, "_commit", "COMMIT")
    patch(DatabaseWrapper, "get_new_connection", "connect + init PRAGMAs")
    patch(DatabaseWrapper, "_close", "connection close")

    totals = []
    for i in range(k):
        status, ms = caller.post("/api/webhook/", alert_body(f"tv-brk-{i:08d}", 1, symbols=[f"BRK{i}-EQ"]))
        totals.append(ms)
    print(f"\nexclusive wall time per 1-leg intake, {k} requests (mean {statistics.fmean(totals):.3f} ms; "
          "ORM and statements rows exclude the sqlite3 execute rows):")
    for name, ns in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"  {ns / k / 1e6:7.3f} ms  {calls[name] / k:4.1f}/req  {name}")


def main():
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="orderdesk-bench-")
    try:
        caller = Caller(setup_django(tmp))
        held = None if args.alone else hold_cluster_connection(tmp)  # noqa: F841 - kept open
        series = run(args, caller)
        stmts1, begins1, commits1 = count_queries(caller, 1, args.show_queries)
        stmts2 = begins2 = commits2 = None
        if not args.no_two_leg:
            stmts2, begins2, commits2 = count_queries(caller, 2, args.show_queries)

        import django
        from django.db import connection

        sqlite_v = connection.cursor().connection.execute("select sqlite_version()").fetchone()[0]
        print(f"\norderdesk intake benchmark: Python {platform.python_version()}, Django {django.get_version()}, "
              f"SQLite {sqlite_v} (WAL, synchronous=NORMAL, BEGIN IMMEDIATE), django-q2 ORM broker, "
              f"{os.cpu_count()} CPUs,\n"
              + ("no other connection open (--alone)" if args.alone else
                 "a second connection held open as a running qcluster does (--alone: without)"))
        print(f"in-process WSGI, {args.n} measured requests per series after {args.warmup} warm-up, interleaved;"
              f" db {tmp}/bench.sqlite3\n")
        print(f"{'series':<14} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max ms':>8}")
        stats = {name: summary(values) for name, values in series.items()}
        for name, s in stats.items():
            print(f"{name:<14} {s['p50']:8.2f} {s['p90']:8.2f} {s['p99']:8.2f} {s['mean']:8.2f} {s['max']:8.2f}")
        intake, noop = stats["intake 1-leg"], stats["no-op DRF"]
        r50, r99 = intake["p50"] / noop["p50"], intake["p99"] / noop["p99"]
        print(f"\nratio intake/no-op: p50 {r50:.1f}x, p99 {r99:.1f}x")
        if LIMITS_SERIES in stats:
            ratio = stats[LIMITS_SERIES]["p50"] / intake["p50"]
            print(f"every risk limit on a strategy with {HISTORY_FILLS} fills today vs none: p50 {ratio:.2f}x "
                  f"(target <= {TARGET_LIMITS_RATIO}x: {'MET' if ratio <= TARGET_LIMITS_RATIO else 'MISSED'})")
        if NO_HASH_SERIES in stats:
            share = (intake["p50"] - stats[NO_HASH_SERIES]["p50"]) / intake["p50"]
            print(f"the audit chain's hashing: {share * 100:+.1f}% of the 1-leg intake's p50 (with "
                  f"{intake['p50']:.2f} ms, without {stats[NO_HASH_SERIES]['p50']:.2f} ms; target <= "
                  f"{TARGET_HASH_SHARE * 100:g}%: {'MET' if share <= TARGET_HASH_SHARE else 'MISSED'})")
        print(f"queries per intake: 1-leg {stmts1} statements + {begins1} BEGIN + {commits1} COMMIT", end="")
        if stmts2 is not None:
            print(f"; 2-leg {stmts2} statements + {begins2} BEGIN + {commits2} COMMIT")
        else:
            print()
        ok50 = intake["p50"] <= TARGET_P50_MS
        okr = r50 <= TARGET_RATIO
        print(f"target: p50 <= {TARGET_P50_MS:g} ms {'MET' if ok50 else 'MISSED'} ({intake['p50']:.2f} ms); "
              f"p50 <= {TARGET_RATIO:g}x no-op {'MET' if okr else 'MISSED'} ({r50:.1f}x)")
        if args.profile:
            profile(caller, args.profile)
        if args.breakdown:
            breakdown(caller, args.breakdown)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
