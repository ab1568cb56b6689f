"""Races on PostgreSQL: real threads and processes, real row locks, no mocks.

Run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/test; deselected on SQLite."""

import os
import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from django.test import Client

from brokers.models import PaperOrder
from orders import lifecycle
from orders.models import Alert, EventKind, Fill, Order, Position, Status
from orders.submission import submit_order
from tests.factories import OrderFactory, RegisteredOrderFactory, StrategyFactory
from tests.processes import BASE_DIR, database_url, run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("threads", [2, 8])
def test_claim_race_sends_the_order_to_the_broker_once(paper_instruments, threads):
    order = OrderFactory()
    results = run_together(threads, lambda i: submit_order(order.command_id))

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sorted(results).count("accepted") == 1, results
    assert all(r == "accepted" or r == "claim lost" or r.startswith("not claimable") for r in results), results
    assert PaperOrder.objects.filter(client_order_id=order.command_id).count() == 1  # one place call
    order.refresh_from_db()
    assert order.status == Status.SENT_TO_BROKER and order.broker_order_id
    assert order.events.filter(kind=EventKind.CLAIMED).count() == 1
    assert order.events.filter(kind=EventKind.BROKER_ACCEPTED).count() == 1


def test_claim_race_losers_touch_nothing_when_all_saw_created(paper_instruments, monkeypatch):
    """Force the worst interleaving: every thread has read the order as CREATED before any
    claims it, so the compare-and-set alone must decide."""
    import orders.submission as submission

    n = 4
    order = OrderFactory()
    all_read = threading.Barrier(n)
    real_move = submission.lifecycle.move

    def move_after_everyone_read(o, to, **kw):
        if to == Status.SENT_TO_BROKER:
            all_read.wait(timeout=10)
        return real_move(o, to, **kw)

    monkeypatch.setattr(submission.lifecycle, "move", move_after_everyone_read)
    results = run_together(n, lambda i: submit_order(order.command_id))

    assert sorted(results) == ["accepted"] + ["claim lost"] * (n - 1), results
    assert PaperOrder.objects.filter(client_order_id=order.command_id).count() == 1
    assert order.events.filter(kind=EventKind.CLAIMED).count() == 1


def test_two_watcher_processes_only_one_polls():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERDESK_")}
    env.update(DATABASE_URL=database_url(), WATCHER_INTERVAL_S="0.2", WATCHER_RECONCILE_S="0.2",
               PYTHONUNBUFFERED="1")
    env.pop("REDIS_URL", None)
    command = [sys.executable, "manage.py", "orderwatcher", "--seconds", "4", "--no-wait"]
    procs = [subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True) for _ in range(2)]
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=30)
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)
    assert [p.returncode for p in procs] == [0, 0], outputs

    def passes(out):
        return int(out.strip().splitlines()[-1].removeprefix("passes="))

    polled = [out for out in outputs if passes(out) >= 1]
    refused = [out for out in outputs if "another watcher holds the lease" in out]
    assert len(polled) == 1 and len(refused) == 1, outputs
    assert passes(polled[0]) >= 5, outputs  # it kept the lease for its whole run
    assert passes(refused[0]) == 0, outputs


@pytest.mark.parametrize("forced", [False, True], ids=["released-together", "all-inside-before-insert"])
def test_duplicate_alert_id_race_registers_once(paper_instruments, strategy, alert_body, monkeypatch, forced):
    """8 deliveries of one alert_id through the webhook at once. `forced`: every request has
    opened its intake transaction before any inserts the alert, so the unique constraint and
    the IntegrityError path of the intake must produce the single registration."""
    import orders.services as services

    threads = 8
    if forced:
        inside = threading.Barrier(threads)
        real_create = services.Alert.objects.create

        def create_after_everyone_is_inside(**fields):
            inside.wait(timeout=10)
            return real_create(**fields)

        monkeypatch.setattr(services.Alert.objects, "create", create_after_everyone_is_inside)
    legs = [
        {"symbol": "RELIANCE-EQ", "side": "BUY", "qty": 10, "order_type": "MARKET", "product": "MIS"},
        {"symbol": "SBIN-EQ", "side": "SELL", "qty": 5, "order_type": "MARKET", "product": "MIS"},
    ]
    body = alert_body(alert_id="same-alert-raced", legs=legs)

    def deliver(i):
        import json

        response = Client().post("/api/webhook/", data=json.dumps(body), content_type="text/plain; charset=utf-8")
        return response.status_code, response.json()

    results = run_together(threads, deliver)

    assert not [r for r in results if isinstance(r, Exception)], results
    codes = sorted(code for code, _ in results)
    assert codes == [200] * (threads - 1) + [201], results
    command_ids = {tuple(o["command_id"] for o in reply["orders"]) for _, reply in results}
    assert len(command_ids) == 1, results
    [ids] = command_ids
    assert len(ids) == 2
    assert Alert.objects.filter(alert_id="same-alert-raced").count() == 1
    assert sorted(Order.objects.values_list("command_id", flat=True)) == sorted(ids)
    assert {(e.order.command_id, e.kind) for e in
            Order.objects.get(command_id=ids[0]).events.all()} == {(ids[0], EventKind.CREATED)}


def test_first_fills_of_one_new_position_at_once_make_one_row_with_every_fill():
    """apply_fill inserts a missing position without get_or_create: the strategy's row lock
    makes concurrent first fills of one position queue, never collide."""
    strategy = StrategyFactory(name="demo")
    orders = [RegisteredOrderFactory(strategy=strategy, status=Status.SENT_TO_BROKER, broker_order_id=f"B{i}",
                                     symbol="SBIN-EQ", side="BUY", qty=i + 1) for i in range(6)]

    def fill(i):
        order = Order.objects.get(pk=orders[i].pk)
        return lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=order.qty, avg_price=Decimal(100 + i))

    assert run_together(len(orders), fill) == [True] * len(orders)
    assert Position.objects.get(strategy=strategy, symbol="SBIN-EQ").net_qty == sum(o.qty for o in orders) == 21
    assert Fill.objects.filter(strategy=strategy).count() == len(orders)
