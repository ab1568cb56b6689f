"""A real `manage.py qcluster` process with ORDERDESK_BROKER=shoonya and SHOONYA_BASE_URL at
the fake Noren server takes a webhook order to EXECUTED: its worker logs in by itself
(QuickAuth), places the order over HTTP, and its watcher reads the fill from the book."""

import secrets

import pytest

from brokers.models import BrokerSession
from tests.processes import audit_trail, wait_for_executed

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_qcluster_process_takes_an_order_to_executed_on_shoonya(cluster, fake_noren, strategy, alert_body,
                                                                post_alert):
    fake_noren.fill_delay_s = 0.2
    worker = cluster()
    worker.env.update(ORDERDESK_BROKER="shoonya", BROKER_READ_TIMEOUT_S="5", **fake_noren.settings())

    response = post_alert(alert_body(alert_id=f"shoonya-{secrets.token_hex(4)}"))
    assert response.status_code == 201, response.content
    [reply] = response.json()["orders"]

    worker.start()
    order, took = wait_for_executed(reply["command_id"], worker)
    print(f"EXECUTED {took:.2f}s after the cluster was started")

    assert order.status == "EXECUTED", (order.tag, audit_trail(order))
    fake_order = fake_noren.order_for(order.command_id)
    assert order.broker_order_id == fake_order.norenordno
    assert order.filled_qty == 10 and order.avg_price == fake_order.fill_price
    assert audit_trail(order) == [
        ("CREATED", "", "CREATED", "webhook"),
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "worker"),
        ("BROKER_ACCEPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "worker"),
        ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "watcher"),
    ]
    assert len(fake_noren.calls_to("PlaceOrder")) == 1
    assert fake_noren.calls_to("QuickAuth") and fake_noren.calls_to("OrderBook")
    assert BrokerSession.objects.get().valid
