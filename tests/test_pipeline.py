"""The seed's test cases end to end: HTTP webhook -> queued submission -> paper broker -> watcher."""

import pytest

from brokers.models import Behaviour, PaperInstrument, PaperOrder
from orders.models import Order
from orders.watcher import OrderWatcher
from tests.factories import trail

pytestmark = pytest.mark.django_db


def test_case_1_registered_allowed_executed(strategy, alert_body, post_alert, run_queue):
    response = post_alert(alert_body())
    assert response.status_code == 201
    [reply] = response.json()["orders"]
    assert reply["status"] == "CREATED" and reply["tag"] == ""

    tasks = run_queue()
    assert ("orders.tasks.submit_order", (reply["command_id"],)) in tasks
    order = Order.objects.get(command_id=reply["command_id"])
    assert order.status == "SENT_TO_BROKER"
    paper = PaperOrder.objects.get(client_order_id=order.command_id)
    assert order.broker_order_id == paper.broker_order_id

    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "EXECUTED"
    assert order.filled_qty == 10 and order.avg_price == paper.fill_price
    assert trail(order) == [
        ("CREATED", "", "CREATED", "", "webhook"),
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "", "worker"),
        ("BROKER_ACCEPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "", "worker"),
        ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "", "watcher"),
    ]


def test_case_4_broker_rejects_at_placement(strategy, alert_body, post_alert, run_queue):
    legs = [{"symbol": "NOSUCH-EQ", "side": "BUY", "qty": 1, "order_type": "MARKET", "product": "MIS"}]
    command_id = post_alert(alert_body(legs=legs)).json()["orders"][0]["command_id"]
    run_queue()
    order = Order.objects.get(command_id=command_id)
    assert order.status == "FAILED"
    assert order.tag == "BROKER_REJECTED:Invalid Trading Symbol"
    assert order.broker_order_id is None
    OrderWatcher().poll_once()  # the watcher confirms: nothing changes, no new row
    assert trail(order) == [
        ("CREATED", "", "CREATED", "", "webhook"),
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "", "worker"),
        ("BROKER_REJECTED", "SENT_TO_BROKER", "FAILED", "BROKER_REJECTED:Invalid Trading Symbol", "worker"),
    ]


def test_case_4_broker_rejects_later(strategy, alert_body, post_alert, run_queue):
    PaperInstrument.objects.filter(symbol="SBIN-EQ").update(behaviour=Behaviour.REJECT_LATER)
    legs = [{"symbol": "SBIN-EQ", "side": "SELL", "qty": 5, "order_type": "MARKET", "product": "MIS"}]
    command_id = post_alert(alert_body(legs=legs)).json()["orders"][0]["command_id"]
    run_queue()
    order = Order.objects.get(command_id=command_id)
    assert order.status == "SENT_TO_BROKER" and order.broker_order_id
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert order.status == "FAILED"
    assert order.tag == "BROKER_REJECTED:RED:Margin Shortfall:INSUFFICIENT BALANCE"
    assert [e[0] for e in trail(order)] == ["CREATED", "CLAIMED", "BROKER_ACCEPTED", "BROKER_REJECTED"]


def test_case_3_shape_disabled_strategy_registered_then_failed(strategy, alert_body, post_alert, run_queue):
    strategy.enabled = False
    strategy.save()
    response = post_alert(alert_body())
    assert response.status_code == 201
    [reply] = response.json()["orders"]
    assert reply["status"] == "FAILED" and reply["tag"] == "GUARD_BLOCKED:STRATEGY_DISABLED"
    assert run_queue() == []  # nothing was enqueued
    order = Order.objects.get(command_id=reply["command_id"])
    assert trail(order) == [
        ("CREATED", "", "CREATED", "", "webhook"),
        ("BLOCKED", "CREATED", "FAILED", "GUARD_BLOCKED:STRATEGY_DISABLED", "guard"),
    ]
    assert not PaperOrder.objects.exists()


def test_intake_is_a_bounded_handful_of_queries(strategy, alert_body, post_alert, django_assert_max_num_queries):
    # strategy, alert, symbol master (one read, loaded or not), orders, creation events, kill
    # switch, market holiday, risk limits (none set: one read), instrument locks (PostgreSQL
    # only: one upsert, whatever the legs), live orders and positions (one statement), queued
    # task (+ the test's savepoint pair)
    with django_assert_max_num_queries(13):
        assert post_alert(alert_body()).status_code == 201
    # a blocked leg: its move to FAILED (the audit head's read, the update, the audit row) instead of a task
    with django_assert_max_num_queries(17):
        reply = post_alert(alert_body(execution_type="EXIT")).json()
    assert reply["orders"][0]["tag"] == "GUARD_BLOCKED:NO_POSITION"
    two_legs = [{"symbol": s, "side": "BUY", "qty": 1, "order_type": "MARKET", "product": "MIS"}
                for s in ("SBIN-EQ", "INFY-EQ")]
    with django_assert_max_num_queries(14):  # one more queued task per extra leg, nothing else
        assert post_alert(alert_body(legs=two_legs)).status_code == 201
