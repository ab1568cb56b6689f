"""Broker fill -> EXECUTED: with the push feed, and with the REST poll at 1 s, in one run.

    .venv/bin/python benchmarks/feed.py [--orders 40] [--fill-delay 0.3] [--spacing 0.1]

A temporary SQLite file with the production settings. For the paper broker and for the fake
Noren server (the Shoonya adapter over HTTP and its websocket), in turn: the feed listener
(orders.feed.listen, as `manage.py orderwatcher` runs it, with the REST reconciliation at
60 s so that only the feed can explain an EXECUTED), then the watcher polling every second
with the feed off. Each time, `--orders` orders are submitted as a worker does, `--spacing`
apart; the broker fills each `--fill-delay` after placement. The latency of an order is
from the broker's fill (the paper order's due time; the fake's fill step) to its EXECUTED
audit row. Prints p50/p99 per broker and mode. Target (issue 12): p50 <= 100 ms with the
feed. Not a timed test: it prints figures.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_P50_MS = 100


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=40, help="orders per broker and mode (default 40)")
    p.add_argument("--fill-delay", type=float, default=0.3, help="seconds from placement to the broker's fill")
    p.add_argument("--spacing", type=float, default=0.1, help="seconds between two submissions")
    return p.parse_args()


def setup_django(tmpdir: str):
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = f"sqlite:///{tmpdir}/bench.sqlite3"
    os.environ["DJANGO_SETTINGS_MODULE"] = "orderdesk.settings"
    os.environ.setdefault("SECRET_KEY", "bench-feed-" + os.urandom(16).hex())
    os.environ.pop("REDIS_URL", None)
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Run:
    """One broker and one mode: listen (feed) or poll, submit orders, collect latencies."""

    def __init__(self, args, broker: str, mode: str, fake=None):
        self.args, self.broker, self.mode, self.fake = args, broker, mode, fake
        self.stop = threading.Event()

    def configure(self):
        from django.conf import settings

        from brokers import registry

        settings.ORDERDESK_BROKER = self.broker
        settings.PAPER_FILL_DELAY_S = self.args.fill_delay
        settings.ORDER_FEED = self.mode == "feed"
        settings.WATCHER_INTERVAL_S = 1
        settings.WATCHER_RECONCILE_S = 60
        if self.fake is not None:
            self.fake.fill_delay_s = self.args.fill_delay
            for name, value in self.fake.settings().items():
                setattr(settings, name, value)
        registry._broker.cache_clear()

    def start_listening(self):
        from orders import feed, feedstate, leases
        from orders.watcher import run_watcher

        owner = leases.new_owner("bench")
        if self.mode == "feed":
            target = feed.listen
            args = (owner, self.stop)
        else:
            target = self._poll
            args = (owner,)
        self.thread = threading.Thread(target=target, args=args, daemon=True)
        self.thread.start()
        if self.mode == "feed":
            deadline = time.monotonic() + 10
            while not feedstate.healthy():
                if time.monotonic() > deadline:
                    raise SystemExit("the feed did not connect")
                time.sleep(0.02)
        self._run_watcher = run_watcher

    def _poll(self, owner):
        from orders.watcher import run_watcher

        while not self.stop.is_set():
            run_watcher(owner, 2)

    def submit_all(self) -> list[str]:
        from orders.models import Alert, Order, Strategy
        from orders.lifecycle import register
        from orders.submission import submit_order

        strategy, _ = Strategy.objects.get_or_create(name="bench")
        alert = Alert.objects.create(strategy=strategy, source="webhook", alert_id=f"{self.broker}-{self.mode}",
                                     actor="bench", payload={})
        ids = []
        for leg in range(1, self.args.orders + 1):
            [order] = register([Order(alert=alert, leg=leg, strategy=strategy, source="webhook",
                                      execution_type="ENTRY", exchange="NSE", symbol="RELIANCE-EQ", side="BUY",
                                      qty=1, order_type="MARKET", product="MIS")], "bench")
            assert submit_order(order.command_id) == "accepted"
            ids.append(order.command_id)
            time.sleep(self.args.spacing)
        return ids

    def latencies(self, ids: list[str]) -> list[float]:
        from brokers.models import PaperOrder
        from orders.models import EventKind, OrderEvent

        deadline = time.monotonic() + 30
        while OrderEvent.objects.filter(order__command_id__in=ids, kind=EventKind.EXECUTED).count() < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.broker}/{self.mode}: not every order reached EXECUTED")
            time.sleep(0.05)
        executed = dict(OrderEvent.objects.filter(order__command_id__in=ids, kind=EventKind.EXECUTED)
                        .values_list("order__command_id", "at"))
        if self.fake is not None:
            filled = {cid: self.fake.order_for(cid).stepped_at for cid in ids}
        else:
            filled = {cid: due.timestamp() for cid, due in
                      PaperOrder.objects.filter(client_order_id__in=ids).values_list("client_order_id", "due_at")}
        return [(executed[cid].timestamp() - filled[cid]) * 1000 for cid in ids]

    def __call__(self) -> list[float]:
        self.configure()
        self.start_listening()
        try:
            return self.latencies(self.submit_all())
        finally:
            self.stop.set()
            self.thread.join(timeout=10)


def main():
    args = parse_args()
    setup_django(tempfile.mkdtemp(prefix="orderdesk-bench-feed-"))
    from brokers.fake_noren import FakeNoren

    results = {}
    with FakeNoren() as fake:
        for broker in ("paper", "shoonya"):
            for mode in ("feed", "poll"):
                results[(broker, mode)] = Run(args, broker, mode, fake if broker == "shoonya" else None)()
                time.sleep(1.5)  # the run's lease released, the next listener starts clean
    print(f"\nbroker fill -> EXECUTED, {args.orders} orders each (fill {args.fill_delay:g}s after placement):")
    print("  broker               mode              p50 ms    p99 ms")
    for (broker, mode), values in results.items():
        label = "paper" if broker == "paper" else "fake Noren (shoonya)"
        how = "push feed" if mode == "feed" else "REST poll at 1 s"
        print(f"  {label:<20} {how:<16} {statistics.median(values):8.1f} {pct(values, 0.99):9.1f}")
    for broker in ("paper", "shoonya"):
        p50 = statistics.median(results[(broker, "feed")])
        ratio = statistics.median(results[(broker, "poll")]) / p50
        print(f"  {broker}: feed p50 {p50:.1f} ms, target <= {TARGET_P50_MS} ms: "
              f"{'met' if p50 <= TARGET_P50_MS else 'MISSED'}; the poll's p50 is {ratio:.1f}x the feed's")


if __name__ == "__main__":
    main()
