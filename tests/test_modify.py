"""Modifying open orders: price, trigger and quantity through the paper broker and the fake
Noren server; the refusals; the working terms the guard, the fill suffix and EXECUTED use."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from brokers.models import PaperOrder
from orders.models import EventKind, Order, OrderModification, Status
from orders.queue import MODIFY_TASK
from orders.watcher import OrderWatcher
from risk.services import set_limits
from tests.factories import trail

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]


@pytest.fixture
def api(client):
    user = User.objects.create_user("ops", password="pw-ops-not-used")
    user.user_permissions.add(Permission.objects.get(codename="modify_order"))
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.create(user=user).key}"
    return client


def modify(api, order, **body):
    return api.post(f"/api/orders/{order.command_id}/modify/", body, content_type="application/json")


def working(desk, settings, **leg_fields) -> Order:
    settings.PAPER_FILL_DELAY_S = 3600
    order = desk.entry(**leg_fields)
    desk.send()
    order.refresh_from_db()
    assert order.status == Status.SENT_TO_BROKER and order.broker_order_id
    return order


def test_a_limit_orders_price_and_qty_change_at_the_paper_broker(desk, api, settings):
    order = working(desk, settings, order_type="LIMIT", price="2900", qty=10)
    reply = modify(api, order, price="2910.5", qty=6)
    assert reply.status_code == 202, reply.content
    assert reply.json()["requested"] == "qty 6, price 2910.5"
    assert [f for f, _ in desk.run_queue()] == [MODIFY_TASK]
    paper = PaperOrder.objects.get(client_order_id=order.command_id)
    assert (paper.qty, paper.price, paper.fill_price) == (6, Decimal("2910.5"), Decimal("2910.5"))
    order.refresh_from_db()
    assert (order.qty, order.price) == (10, Decimal("2900"))  # the registered details never change
    assert (order.working_qty, order.working_price, order.open_qty) == (6, Decimal("2910.5"), 6)
    assert [e[0] for e in trail(order)][-2:] == [EventKind.MODIFY_REQUESTED, EventKind.MODIFIED]
    row = OrderModification.objects.get()
    assert (row.actor, row.outcome, row.qty, row.price) == ("api:ops", "SENT", 6, Decimal("2910.5"))
    PaperOrder.objects.update(due_at=timezone.now())
    desk.watch()
    order.refresh_from_db()
    assert (order.status, order.filled_qty, order.avg_price) == (Status.EXECUTED, 6, Decimal("2910.5"))


def test_an_sl_orders_trigger_changes(desk, api, settings):
    order = working(desk, settings, order_type="SL-M", trigger_price="2990", side="BUY")
    assert modify(api, order, trigger_price="2985").status_code == 202
    desk.run_queue()
    assert PaperOrder.objects.get().trigger_price == Decimal("2985")
    assert Order.objects.get(pk=order.pk).working_trigger_price == Decimal("2985")


@pytest.mark.parametrize("body, status, words", [
    ({"price": "2910"}, 400, "a MARKET order has no price to change"),
    ({}, 400, "give price, trigger_price and/or qty"),
    ({"qty": 0}, 400, "must be greater than 0"),
    ({"price": "1e99999999999"}, 400, "must be a number"),
    ({"colour": "red"}, 400, "unknown field(s): colour"),
], ids=["market", "nothing", "zero qty", "huge price", "unknown field"])
def test_invalid_changes_are_refused_before_anything_is_recorded(desk, api, settings, body, status, words):
    order = working(desk, settings)
    reply = modify(api, order, **body)
    assert reply.status_code == status and words in reply.content.decode()
    assert not OrderModification.objects.exists() and desk.run_queue() == []


def test_ended_queued_and_partly_filled_orders(desk, api, settings):
    done = desk.through(desk.entry(symbol="SBIN-EQ", order_type="LIMIT", price="800"))
    assert modify(api, done, price="801").status_code == 409
    queued = desk.entry(symbol="INFY-EQ", order_type="LIMIT", price="1800")
    assert modify(api, queued, price="1801").status_code == 409  # not at the broker yet
    limit = working(desk, settings, symbol="TCS-EQ", order_type="LIMIT", price="4100", qty=10)
    PaperOrder.objects.filter(client_order_id=limit.command_id).update(filled_qty=4, avg_price=Decimal("4100"))
    desk.watch()
    reply = modify(api, Order.objects.get(pk=limit.pk), qty=4)
    assert reply.status_code == 400 and "must be above the 4 already filled" in reply.json()["detail"]


def test_a_modification_the_broker_refuses_is_recorded_with_its_words(desk, api, settings):
    order = working(desk, settings, order_type="LIMIT", price="2900")
    assert modify(api, order, price="2905").status_code == 202
    PaperOrder.objects.update(status="COMPLETE", filled_qty=10, avg_price=Decimal("2900"), changed_at=timezone.now())
    desk.run_queue()
    refused = Order.objects.get(pk=order.pk).events.last()
    assert (refused.kind, refused.detail) == (EventKind.MODIFY_REFUSED, f"order {order.broker_order_id} is COMPLETE")
    assert OrderModification.objects.get().outcome == "REFUSED"
    assert Order.objects.get(pk=order.pk).working_price is None


def test_modifying_needs_the_permission(desk, client, settings):
    order = working(desk, settings, order_type="LIMIT", price="2900")
    assert client.post(f"/api/orders/{order.command_id}/modify/", {"price": "1"}).status_code == 401
    user = User.objects.create_user("viewer", password="pw-viewer-not-used")
    headers = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=user).key}"}
    assert client.post(f"/api/orders/{order.command_id}/modify/", {"price": "1"}, **headers).status_code == 403


def test_the_guard_counts_a_live_exits_working_quantity(desk, api, settings):
    desk.through(desk.entry(symbol="RELIANCE-EQ", qty=10))  # long 10
    settings.PAPER_FILL_DELAY_S = 3600
    first_exit = desk.exit(symbol="RELIANCE-EQ", qty=10, order_type="LIMIT", price="3100")
    desk.send()
    blocked = desk.exit(symbol="RELIANCE-EQ", qty=6)
    assert (blocked.tag, blocked.events.last().detail) == (
        "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION", "exit 6 + live exits 10 > position 10")
    assert modify(api, Order.objects.get(pk=first_exit.pk), qty=4).status_code == 202
    desk.run_queue()
    assert desk.exit(symbol="RELIANCE-EQ", qty=6).status == Status.CREATED  # 4 still working + 6 = 10


# --- the fake Noren server ----------------------------------------------------------------------

def test_shoonya_modify_order_sends_the_total_qty_and_the_terms_as_placed(shoonya_legacy, desk, api, settings):
    shoonya_legacy.fill_delay_s = 3600
    order = desk.entry(symbol="SBIN-EQ", qty=10, order_type="LIMIT", price="815")
    desk.send()
    order.refresh_from_db()
    assert modify(api, order, price="816.25").status_code == 202
    desk.run_queue()
    (call,) = shoonya_legacy.calls_to("ModifyOrder")
    assert call.jdata == {"ordersource": "API", "uid": "FT4242", "actid": "FT4242", "norenordno": order.broker_order_id,
                          "exch": "NSE", "tsym": "SBIN-EQ", "qty": "10", "prctyp": "LMT", "prc": "816.25"}
    assert Order.objects.get(pk=order.pk).working_price == Decimal("816.25")
    shoonya_legacy.complete(order.command_id)
    OrderWatcher().poll_once()
    executed = Order.objects.get(pk=order.pk)
    assert (executed.status, executed.avg_price) == (Status.EXECUTED, Decimal("816.25"))


def test_the_order_page_lists_its_modifications_and_working_terms(desk, api, settings, admin_client):
    order = working(desk, settings, order_type="LIMIT", price="2900", qty=10)
    modify(api, order, price="2905", qty=8)
    desk.run_queue()
    page = admin_client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    assert "api:ops" in page and "SENT" in page and "2905" in page
    assert admin_client.post(f"/admin/orders/order/{order.pk}/change/", {}).status_code == 403


def test_the_risk_limits_judge_new_terms_as_they_would_a_new_orders(desk, api, settings, strategy):
    order = working(desk, settings, order_type="LIMIT", price="2950", qty=10)
    set_limits(strategy, actor="test", price_band_pct=Decimal(5), max_qty=8)  # tightened after it was placed
    reply = modify(api, order, price="3245")
    assert reply.status_code == 400
    assert reply.json()["detail"].startswith("RISK_BLOCKED:PRICE_BAND 3245.00 is 10.00% from 2950.00 > 5.00%")
    reply = modify(api, order, qty=12)
    assert (reply.status_code, reply.json()["detail"]) == (400, "RISK_BLOCKED:QTY_LIMIT qty 12 > 8 "
                                                                "(BUY 12 RELIANCE-EQ; limit 8 per order)")
    set_limits(None, actor="test", max_notional=Decimal(30000))
    reply = modify(api, order, price="3010")  # in the band, but 10 x 3010 > 30000 for the account
    assert reply.json()["detail"].startswith("RISK_BLOCKED:NOTIONAL_LIMIT account 30100.00 > 30000.00 (10 x 3010.00")
    assert not OrderModification.objects.exists() and desk.run_queue() == []
    assert modify(api, order, qty=9).status_code == 202  # smaller: passes though still over the new cap
    assert modify(api, order, price="2900").status_code == 202  # in the band, and cheaper
    assert [m.requested() for m in OrderModification.objects.order_by("pk")] == ["qty 9", "price 2900"]
