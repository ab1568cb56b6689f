"""The cost of one watcher pass on a busy day: it should follow what changed, not the day's size.

    .venv/bin/python benchmarks/watcher_pass.py [--open 10000] [--done 7000] [--changed 10] [--rounds 7]

A temporary SQLite file with the production settings and the paper broker. First a small
day (1% of the sizes below: the baseline), then the full one: `--done` orders already
EXECUTED today and `--open` orders working at the broker (SENT_TO_BROKER, OPEN paper
orders). Each round makes `--changed` of the working orders due at the paper broker, then
times one full pass (OrderWatcher.poll_once: housekeeping, book read, reconciliation, the
position snapshot), and separately a pass in which nothing changed, and one tick of the
paper feed with nothing due. Prints medians, and the full day's against the small day's.
Target (issue 12): a pass with 10,000 open orders and 10 changed < 100 ms. Not a timed
test: it prints figures.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 100


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--open", type=int, default=10_000, help="working orders (default 10000)")
    p.add_argument("--done", type=int, default=7_000, help="orders already EXECUTED today (default 7000)")
    p.add_argument("--changed", type=int, default=10, help="orders that fill before each timed pass")
    p.add_argument("--rounds", type=int, default=7)
    return p.parse_args()


def setup_django(tmpdir: str):
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = f"sqlite:///{tmpdir}/bench.sqlite3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "orderdesk.settings"
    os.environ.setdefault("SECRET_KEY", "bench-watcher-" + os.urandom(16).hex())
    os.environ.pop("REDIS_URL", None)
    os.environ["ORDERDESK_BROKER"] = "paper"
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)  # the changed orders' lifecycle lines would go to this terminal
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def build_day(n_open: int, n_done: int):
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from brokers.models import Behaviour, PaperOrder
    from orders.models import Alert, Order, Status, Strategy

    strategy = Strategy.objects.filter(name="bench").first()
    if strategy is None:
        strategy = Strategy(name="bench")
        strategy.set_secret("bench-secret-0123456789abcdefghijklmnop")
        strategy.save()
    now = timezone.now()
    alert = Alert.objects.create(strategy=strategy, source="webhook", alert_id=f"day-{Alert.objects.count()}",
                                 actor="bench", payload={})
    start = Order.objects.count()
    symbols = ["RELIANCE-EQ", "SBIN-EQ", "INFY-EQ", "TCS-EQ", "HDFCBANK-EQ"]
    orders, paper = [], []
    for i in range(start, start + n_open + n_done):
        working = i - start < n_open
        broker_id = f"26120{i:010d}"
        symbol = symbols[i % len(symbols)]
        orders.append(Order(alert=alert, leg=i + 1, strategy=strategy, source="webhook", execution_type="ENTRY",
                            exchange="NSE", symbol=symbol, side="BUY", qty=10, order_type="MARKET", product="MIS",
                            status=Status.SENT_TO_BROKER if working else Status.EXECUTED, broker_order_id=broker_id,
                            filled_qty=0 if working else 10, avg_price=None if working else Decimal("100"),
                            sent_at=now, created_at=now))
        paper.append(PaperOrder(broker_order_id=broker_id, client_order_id=orders[-1].command_id, exchange="NSE",
                                symbol=symbol, side="BUY", qty=10, order_type="MARKET", product="MIS",
                                fill_price=Decimal("100"), behaviour=Behaviour.NORMAL,
                                status="OPEN" if working else "COMPLETE", filled_qty=0 if working else 10,
                                avg_price=None if working else Decimal("100"), placed_at=now,
                                due_at=now + timedelta(days=1)))
    Order.objects.bulk_create(orders, batch_size=2000)
    PaperOrder.objects.bulk_create(paper, batch_size=2000)
    # A day that began hours ago: the orders were placed, and last changed, over the morning.
    PaperOrder.objects.filter(broker_order_id__in=[p.broker_order_id for p in paper]).update(
        placed_at=now - timedelta(hours=3), changed_at=now - timedelta(hours=2))
    # The executed orders are written without their fills: a position reconciliation now would
    # only report that (it runs in the passes as it falls due, as in production).
    from orders.models import Reconciliation

    Reconciliation.objects.create(at=now)


def make_due(k: int):
    from django.utils import timezone

    from brokers.models import PaperOrder

    ids = list(PaperOrder.objects.filter(status="OPEN").order_by("id").values_list("id", flat=True)[:k])
    PaperOrder.objects.filter(id__in=ids).update(due_at=timezone.now())
    return ids


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main():
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="orderdesk-bench-watcher-")
    setup_django(tmp)
    build_day(args.open // 100, args.done // 100)
    small = measure(args.rounds, args.changed)
    t0 = time.perf_counter()
    build_day(args.open - small["open"], args.done - small["done"])
    print(f"built {args.open} working and {args.done} executed orders in {time.perf_counter() - t0:.1f}s")
    full = measure(args.rounds, args.changed)
    print(f"\none watcher pass, median of {args.rounds}:      small day ({small['open']} + {small['done']})"
          f"   full day ({full['open']} + {full['done']})   full / small")
    for key, label in (("changed", f"{args.changed} changed"), ("idle", "none changed"), ("tick", "paper feed tick")):
        print(f"  {label:<28} {small[key]:12.2f} ms {full[key]:16.2f} ms {full[key] / small[key]:12.2f}x")
    verdict = "met" if full["changed"] < TARGET_MS else "MISSED"
    print(f"target: {args.changed} changed among {full['open']} working orders < {TARGET_MS} ms: {verdict}")


def measure(rounds: int, k: int) -> dict:
    from brokers import registry
    from brokers.registry import get_broker
    from orders.models import Order, Status
    from orders.watcher import OrderWatcher

    registry._broker.cache_clear()  # as a process starting on this day: its first read is the whole book
    watcher = OrderWatcher()
    watcher.poll_once()  # warm: the first pass also compiles, caches and reads the whole book
    changed, idle, ticks = [], [], []
    for _ in range(rounds):
        make_due(k)
        before = Order.objects.filter(status=Status.EXECUTED).count()
        changed.append(timed(watcher.poll_once))
        after = Order.objects.filter(status=Status.EXECUTED).count()
        assert after - before == k, (before, after)
        idle.append(timed(watcher.poll_once))
        ticks.append(timed(get_broker().advance))
    return {"changed": statistics.median(changed), "idle": statistics.median(idle), "tick": statistics.median(ticks),
            "open": Order.objects.filter(status=Status.SENT_TO_BROKER).count(),
            "done": Order.objects.filter(status=Status.EXECUTED).count()}


if __name__ == "__main__":
    main()
