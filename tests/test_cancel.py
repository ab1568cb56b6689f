"""Cancelling orders: queued, open, partly filled, in doubt and ended orders; cancel-all; the
permission; the admin action; the paper broker and the fake Noren server."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from brokers.fake_noren import Behaviour as FakeBehaviour
from brokers.models import Behaviour, PaperInstrument, PaperOrder
from orders.models import EventKind, Fill, Order, Position, Status
from orders.queue import CANCEL_TASK
from orders.watcher import OrderWatcher
from tests.desk import leg, queued
from tests.factories import trail

# Transactional: a cancel that waits for a broker id goes out from the order's committed event.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]


@pytest.fixture
def canceller():
    user = User.objects.create_user("ops", password="pw-ops-not-used")
    user.user_permissions.add(Permission.objects.get(codename="cancel_order"))
    return user


@pytest.fixture
def api(client, canceller):
    token = Token.objects.create(user=canceller)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def cancel(api, order):
    return api.post(f"/api/orders/{order.command_id}/cancel/")


def kinds(order):
    return [e[0] for e in trail(order)]


def test_a_queued_order_fails_at_once_and_the_worker_loses_its_claim(desk, api):
    order = desk.entry()
    reply = cancel(api, order)
    assert reply.status_code == 200, reply.content
    assert reply.json() == {"command_id": order.command_id, "status": "FAILED",
                            "tag": "CANCELLED:not sent, by api:ops", "cancel": "cancelled"}
    order.refresh_from_db()
    assert (order.status, order.tag, order.tag_family) == (Status.FAILED, "CANCELLED:not sent, by api:ops",
                                                           "CANCELLED")
    assert trail(order)[-1] == ("CANCEL_REQUESTED", "CREATED", "FAILED", "CANCELLED:not sent, by api:ops", "api:ops")
    desk.send()  # the queued submission runs: its claim loses
    assert not PaperOrder.objects.exists()
    assert Order.objects.get(pk=order.pk).status == Status.FAILED


def test_an_open_order_is_cancelled_at_the_broker_and_ends_when_the_broker_says_so(desk, api, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    order = desk.entry()
    desk.send()
    order.refresh_from_db()
    assert order.status == Status.SENT_TO_BROKER and order.broker_order_id
    reply = cancel(api, order)
    assert reply.json()["cancel"] == "requested" and reply.json()["status"] == "SENT_TO_BROKER"
    assert [f for f, _ in desk.run_queue()] == [CANCEL_TASK]  # the broker call is a worker's
    desk.watch()
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, "BROKER_CANCELLED:Canceled by user filled 0/10")
    assert kinds(order)[-3:] == ["CANCEL_REQUESTED", "CANCEL_SENT", "FAILED"]
    assert trail(order)[-3][-1] == "api:ops"


def test_a_partly_filled_order_keeps_its_fill(desk, api, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    PaperInstrument.objects.filter(symbol="SBIN-EQ").update(behaviour=Behaviour.CANCEL_AFTER_PARTIAL)
    order = desk.entry(symbol="SBIN-EQ", qty=10)
    desk.send()
    PaperOrder.objects.update(due_at=timezone.now())
    desk.watch()  # half filled, and working
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == (Status.SENT_TO_BROKER, 5)
    assert cancel(api, order).json()["cancel"] == "requested"
    desk.run_queue()
    desk.watch()
    order.refresh_from_db()
    assert (order.status, order.tag, order.filled_qty) == (
        Status.FAILED, "BROKER_CANCELLED:Canceled by user filled 5/10", 5)
    assert Fill.objects.get(order=order).qty == 5
    assert Position.objects.get(symbol="SBIN-EQ").net_qty == 5


def test_an_in_doubt_order_is_cancelled_once_its_broker_id_is_known(desk, api, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    PaperInstrument.objects.filter(symbol="INFY-EQ").update(behaviour=Behaviour.TIMEOUT_ON_PLACE)
    order = desk.entry(symbol="INFY-EQ")
    desk.send()
    order.refresh_from_db()
    assert order.status == Status.SENT_TO_BROKER and order.broker_order_id is None  # in doubt
    assert cancel(api, order).json()["cancel"] == "waiting_for_broker_id"
    assert desk.run_queue() == []  # nothing to send yet
    Order.objects.filter(pk=order.pk).update(sent_at=timezone.now() - timedelta(seconds=60))
    desk.watch()  # adopted from the book: the cancel goes out
    assert [f for f, _ in desk.run_queue()] == [CANCEL_TASK]
    desk.watch()
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, "BROKER_CANCELLED:Canceled by user filled 0/10")
    assert kinds(order)[-4:] == ["CANCEL_REQUESTED", "BROKER_ID_ADOPTED", "CANCEL_SENT", "FAILED"]


def test_an_ended_order_cannot_be_cancelled(desk, api):
    order = desk.through(desk.entry())
    reply = cancel(api, order)
    assert reply.status_code == 409
    assert reply.json() == {"detail": f"order {order.command_id} is EXECUTED: nothing to cancel"}
    assert kinds(order)[-1] == "EXECUTED"


def test_a_cancel_the_broker_refuses_is_recorded_with_its_message(desk, api, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    order = desk.entry()
    desk.send()
    order.refresh_from_db()
    assert cancel(api, order).json()["cancel"] == "requested"
    PaperOrder.objects.update(status="COMPLETE", filled_qty=10, avg_price=Decimal("2950"), changed_at=timezone.now())
    desk.run_queue()
    refused = Order.objects.get(pk=order.pk).events.last()
    assert (refused.kind, refused.detail) == (EventKind.CANCEL_REFUSED,
                                              f"order {order.broker_order_id} is COMPLETE")
    desk.watch()
    assert Order.objects.get(pk=order.pk).status == Status.EXECUTED  # the broker's truth stands


def test_cancel_all_acts_on_the_matching_open_orders(desk, api, other, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    sent_one = desk.entry(symbol="SBIN-EQ")
    working = desk.through(desk.entry(symbol="INFY-EQ"), status=Status.SENT_TO_BROKER)
    still_queued = desk.entry(symbol="TCS-EQ")
    elsewhere = desk.entry(symbol="HDFCBANK-EQ", strategy=other.name)
    reply = api.post("/api/orders/cancel-all/", {"strategy": "demo"}, content_type="application/json")
    assert reply.status_code == 200, reply.content
    acted = {o["command_id"]: o["cancel"] for o in reply.json()["orders"]}
    assert acted == {sent_one.command_id: "requested", working.command_id: "requested",
                     still_queued.command_id: "cancelled"}
    assert Order.objects.get(pk=elsewhere.pk).status == Status.CREATED
    symbol_only = api.post("/api/orders/cancel-all/", {"symbol": "hdfcbank-eq"}, content_type="application/json")
    assert [o["command_id"] for o in symbol_only.json()["orders"]] == [elsewhere.command_id]
    assert api.post("/api/orders/cancel-all/", {"strategy": ["x"]},
                    content_type="application/json").status_code == 400


def test_cancelling_needs_the_permission(desk, client):
    order = desk.entry()
    assert client.post(f"/api/orders/{order.command_id}/cancel/").status_code == 401
    viewer = User.objects.create_user("viewer", password="pw-viewer-not-used")
    token = Token.objects.create(user=viewer)
    reply = client.post(f"/api/orders/{order.command_id}/cancel/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert reply.status_code == 403 and "orders.cancel_order" in reply.json()["detail"]
    assert client.post("/api/orders/cancel-all/", HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 403
    assert Order.objects.get(pk=order.pk).status == Status.CREATED
    assert cancel(client, Order(command_id="0" * 32)).status_code == 401


def test_the_admin_action_cancels_and_says_what_happened(desk, admin_client, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    queued_order, at_broker = desk.entry(symbol="SBIN-EQ"), desk.entry(symbol="INFY-EQ")
    desk.send()
    fresh = desk.entry(symbol="TCS-EQ")
    reply = admin_client.post("/admin/orders/order/", {
        "action": "cancel_orders", "_selected_action": [queued_order.pk, at_broker.pk, fresh.pk]}, follow=True)
    text = reply.content.decode()
    assert "Cancel: " in text and "1 cancelled before they were sent" in text and "2 sent to the broker" in text
    assert trail(Order.objects.get(pk=fresh.pk))[-1][-1].startswith("admin:")
    assert queued() == [fresh.command_id]  # its submission is still queued, and loses its claim
    desk.run_queue()
    desk.watch()
    assert Order.objects.get(pk=at_broker.pk).tag == "BROKER_CANCELLED:Canceled by user filled 0/10"
    assert not PaperOrder.objects.filter(symbol="TCS-EQ").exists()


# --- the fake Noren server ----------------------------------------------------------------------

def test_shoonya_cancel_order_then_canceled_in_the_book(shoonya_legacy, desk, api):
    shoonya_legacy.set_behaviour(FakeBehaviour.PARTIAL, symbol="SBIN-EQ", fill_qty=3)
    order = desk.entry(symbol="SBIN-EQ", qty=10)
    desk.send()
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == (Status.SENT_TO_BROKER, 3)
    assert cancel(api, order).json()["cancel"] == "requested"
    desk.run_queue()
    (call,) = shoonya_legacy.calls_to("CancelOrder")
    assert call.jdata == {"ordersource": "API", "uid": "FT4242", "norenordno": order.broker_order_id}
    OrderWatcher().poll_once()
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, "BROKER_CANCELLED:CANCELED filled 3/10")
    assert cancel(api, order).status_code == 409  # ended: answered before any broker call
    assert len(shoonya_legacy.calls_to("CancelOrder")) == 1


def test_shoonya_refuses_to_cancel_a_completed_order(shoonya_legacy, desk, api):
    order = desk.entry(symbol="SBIN-EQ", qty=10)
    desk.send()
    order.refresh_from_db()
    assert cancel(api, order).json()["cancel"] == "requested"
    shoonya_legacy.complete(order.command_id)  # filled before the cancel reached it
    desk.run_queue()
    refused = Order.objects.get(pk=order.pk).events.last()
    assert (refused.kind, refused.detail) == (EventKind.CANCEL_REFUSED, "Rejected : ORA:Order is in COMPLETE status")


def test_a_two_leg_alert_can_be_cancelled_leg_by_leg(desk, api, strategy):
    strategy.leg_policy = "PER_LEG"
    strategy.save()
    first, second = desk.post("ENTRY", [leg("SBIN-EQ", qty=1), leg("INFY-EQ", qty=1)])
    assert cancel(api, first).json()["cancel"] == "cancelled"
    assert Order.objects.get(pk=second.pk).status == Status.CREATED
