"""The admin blotter: filters and search, the audit trail inline, read-only orders."""

import pytest
from django.contrib.admin.models import LogEntry

from orders import lifecycle
from orders.models import EventKind, Order, OrderEvent, Status, Strategy, secret_digest
from tests.factories import RegisteredOrderFactory

pytestmark = pytest.mark.django_db

ORDERS = "/admin/orders/order/"


@pytest.fixture
def orders():
    """An accepted order with a broker id, a guard-blocked one and a broker-rejected one."""
    sent = RegisteredOrderFactory(symbol="SBIN-EQ")
    lifecycle.move(sent, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.annotate(sent, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id="24112600001")
    blocked = RegisteredOrderFactory(symbol="INFY-EQ")
    lifecycle.move(blocked, Status.FAILED, actor="guard", tag="GUARD_BLOCKED:STRATEGY_DISABLED", kind=EventKind.BLOCKED)
    rejected = RegisteredOrderFactory(symbol="INFY-EQ")
    lifecycle.move(rejected, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.move(rejected, Status.FAILED, actor="worker", tag="BROKER_REJECTED:Invalid Trading Symbol",
                   kind=EventKind.BROKER_REJECTED)
    return {"sent": sent, "blocked": blocked, "rejected": rejected}


def listed(response):
    assert response.status_code == 200
    return {o.command_id for o in response.context["cl"].result_list}


@pytest.mark.parametrize(
    "query, expected",
    [
        ({}, {"sent", "blocked", "rejected"}),
        ({"status": "FAILED"}, {"blocked", "rejected"}),
        ({"status": "SENT_TO_BROKER"}, {"sent"}),
        ({"tag_family": "GUARD_BLOCKED"}, {"blocked"}),
        ({"tag_family": "BROKER_REJECTED"}, {"rejected"}),
        ({"tag_family": "none"}, {"sent"}),
        ({"tag_code": "STRATEGY_DISABLED"}, {"blocked"}),
        ({"tag_code": "none"}, {"sent", "rejected"}),
        ({"in_doubt": "no"}, {"sent", "blocked", "rejected"}),
        ({"in_doubt": "yes"}, set()),
        ({"q": "24112600001"}, {"sent"}),
        ({"q": "INFY-EQ"}, {"blocked", "rejected"}),
    ],
)
def test_changelist_filters_and_search(admin_client, orders, query, expected):
    assert listed(admin_client.get(ORDERS, query, follow=True)) == {orders[k].command_id for k in expected}


def test_every_failure_tag_the_pipeline_writes_has_its_tag_filter(admin_client, orders):
    session = RegisteredOrderFactory(symbol="TCS-EQ")
    lifecycle.move(session, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.move(session, Status.FAILED, actor="worker", tag="BROKER_SESSION:Shoonya session expired",
                   kind=EventKind.BROKER_REJECTED)
    response = admin_client.get(ORDERS, follow=True)
    [tag_filter] = [f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "tag_family"]
    assert "BROKER_SESSION" in dict(tag_filter.lookup_choices)
    assert listed(admin_client.get(ORDERS, {"tag_family": "BROKER_SESSION"})) == {session.command_id}


def test_search_by_command_id(admin_client, orders):
    assert listed(admin_client.get(ORDERS, {"q": orders["rejected"].command_id})) == {orders["rejected"].command_id}


def test_change_page_shows_the_trail_read_only(admin_client, orders):
    order = orders["rejected"]
    response = admin_client.get(f"{ORDERS}{order.pk}/change/")
    assert response.status_code == 200
    content = response.content.decode()
    for text in ("CLAIMED", "BROKER_REJECTED:Invalid Trading Symbol", order.command_id):
        assert text in content
    assert len(response.context["inline_admin_formsets"][0].formset.forms) == 3
    assert 'name="_save"' not in content


@pytest.mark.parametrize("path", ["/admin/orders/order/add/", "/admin/orders/orderevent/add/"])
def test_orders_and_events_cannot_be_added(admin_client, path):
    assert admin_client.get(path).status_code == 403


def test_orders_and_events_cannot_be_changed_or_deleted(admin_client, orders):
    order = orders["blocked"]
    event = order.events.last()
    form = {"symbol": "TCS-EQ", "qty": "999", "status": "EXECUTED", "tag": "", "events-TOTAL_FORMS": "0",
            "events-INITIAL_FORMS": "0"}
    assert admin_client.post(f"{ORDERS}{order.pk}/change/", form).status_code == 403
    assert admin_client.post(f"/admin/orders/orderevent/{event.pk}/change/", {"tag": "x"}).status_code == 403
    assert admin_client.post(f"{ORDERS}{order.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_client.post(ORDERS, {"action": "delete_selected", "_selected_action": [order.pk], "post": "yes"})
    order.refresh_from_db()
    assert (order.symbol, order.qty, order.status, order.tag) == ("INFY-EQ", 10, "FAILED",
                                                                  "GUARD_BLOCKED:STRATEGY_DISABLED")
    assert Order.objects.count() == 3 and OrderEvent.objects.filter(pk=event.pk, tag=event.tag).exists()


@pytest.mark.parametrize(
    "path",
    ["/admin/orders/orderevent/?kind=BLOCKED", "/admin/orders/alert/", "/admin/orders/rejectedalert/",
     "/admin/orders/watcherlease/", "/admin/orders/strategy/", "/admin/"],
)
def test_other_pages_load(admin_client, orders, path):
    assert admin_client.get(path).status_code == 200


# The strategy page's risk-limits inline (risk/admin.py), empty.
NO_LIMITS_FORM = {"risk_limits-TOTAL_FORMS": "0", "risk_limits-INITIAL_FORMS": "0",
                  "risk_limits-MIN_NUM_FORMS": "0", "risk_limits-MAX_NUM_FORMS": "1"}


def test_creating_a_strategy_shows_its_secret_once_and_stores_a_digest(admin_client):
    form = {"name": "swing", "enabled": "on", "leg_policy": "ALL_OR_NONE", "block_duplicates": "on",
            "exits_outside_window": "on", **NO_LIMITS_FORM}
    response = admin_client.post("/admin/orders/strategy/add/", form, follow=True)
    assert response.status_code == 200
    [message] = [str(m) for m in response.context["messages"] if "secret" in str(m)]
    secret = message.rsplit(": ", 1)[1]
    assert len(secret) >= 32

    strategy = Strategy.objects.get(name="swing")
    assert Strategy.authenticate("swing", secret) == strategy
    assert strategy.secret_digest == secret_digest(secret) != secret
    assert secret not in " ".join(LogEntry.objects.values_list("change_message", flat=True))
    assert secret not in admin_client.get("/admin/orders/strategy/").content.decode()


def test_editing_a_strategy_keeps_its_secret(admin_client, strategy):
    digest = strategy.secret_digest
    form = {"enabled": "", "leg_policy": "PER_LEG", **NO_LIMITS_FORM}
    response = admin_client.post(f"/admin/orders/strategy/{strategy.pk}/change/", form, follow=True)
    assert response.status_code == 200
    assert not any("secret" in str(m) for m in response.context["messages"])
    strategy.refresh_from_db()
    assert (strategy.enabled, strategy.leg_policy, strategy.secret_digest) == (False, "PER_LEG", digest)
    assert admin_client.post(f"/admin/orders/strategy/{strategy.pk}/delete/", {"post": "yes"}).status_code == 403


@pytest.mark.no_audit_check  # the times are set by hand
def test_times_render_in_ist_to_the_second_and_the_trail_to_the_millisecond(admin_client, orders):
    from datetime import UTC, datetime

    order = orders["rejected"]
    moment = datetime(2026, 12, 1, 4, 18, 30, 123456, tzinfo=UTC)  # 09:48:30.123 IST
    type(order).objects.filter(pk=order.pk).update(created_at=moment)
    order.events.update(at=moment)
    listing = admin_client.get(ORDERS, {"status": "FAILED"}).content.decode()
    assert "2026-12-01 09:48:30" in listing
    page = admin_client.get(f"{ORDERS}{order.pk}/change/").content.decode()
    assert "2026-12-01 09:48:30.123" in page


def test_the_index_is_grouped_for_a_trader_with_internals_under_system(admin_client):
    apps = admin_client.get("/admin/").context["app_list"]
    assert [a["name"] for a in apps] == ["Trading", "Risk", "Broker", "System"]
    names = {a["name"]: [m["object_name"] for m in a["models"]] for a in apps}
    assert names["Trading"][:2] == ["Order", "OrderEvent"]
    assert {"Group", "User", "Schedule"} <= set(names["System"])
    assert "Order" not in names["System"] and "KillSwitch" in names["Risk"]


def test_the_blotter_opens_on_today_with_counts_badges_and_the_journey(admin_client, orders):
    response = admin_client.get(ORDERS, follow=True)
    assert "created_at__gte=" in response.redirect_chain[0][0] and "%2B05%3A30" in response.redirect_chain[0][0]
    page = response.content.decode()
    assert "<strong>FAILED</strong> 2" in page and "GUARD_BLOCKED 1" in page and "BROKER_REJECTED 1" in page
    assert "background:#dc3545" in page and "Invalid Trading Symbol" in page
    order = orders["sent"]
    detail = admin_client.get(f"{ORDERS}{order.pk}/change/").content.decode()
    assert "received " in detail and "registered " in detail and "claimed " in detail and "broker ack " in detail
    assert " ms)" in detail
    assert "Alert as received (secret redacted)" in detail  # the admin client is a superuser


def test_the_changelist_query_count_does_not_grow_with_the_rows(admin_client, orders):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for extra in (0, 30):
        for i in range(extra):
            RegisteredOrderFactory(symbol=f"X{i}-EQ")
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(ORDERS, {"status__exact": "CREATED"}).status_code == 200
        counts.append(len(captured.captured_queries))
    assert counts[0] == counts[1], counts


def test_positions_show_last_price_unrealised_pnl_totals_and_the_reconciliation(admin_client, db):
    from decimal import Decimal

    from django.utils import timezone

    from orders.models import BrokerPosition, Position
    from tests.factories import StrategyFactory

    alpha, beta = StrategyFactory(name="alpha"), StrategyFactory(name="beta")
    Position.objects.create(strategy=alpha, exchange="NSE", symbol="SBIN-EQ", product="NRML", net_qty=10,
                            avg_price=Decimal("800"), realized_pnl=Decimal("50"))
    Position.objects.create(strategy=beta, exchange="NSE", symbol="SBIN-EQ", product="NRML", net_qty=5,
                            avg_price=Decimal("810"), realized_pnl=Decimal("0"))
    Position.objects.create(strategy=beta, exchange="NSE", symbol="INFY-EQ", product="NRML", net_qty=-2,
                            avg_price=Decimal("1800"))
    now = timezone.now()
    for symbol, net, last in (("SBIN-EQ", 15, "815.50"), ("INFY-EQ", 0, "1790"), ("TCS-EQ", 3, "4100")):
        BrokerPosition.objects.create(exchange="NSE", symbol=symbol, product="NRML", net_qty=net, net_avg_price=1,
                                      realized_pnl=0, unrealized_pnl=0, last_price=Decimal(last), taken_at=now)
    page = admin_client.get("/admin/orders/position/").content.decode()
    assert "155.00" in page  # alpha: (815.50 - 800) x 10
    assert "<td>alpha</td><td>50.00</td><td>155.00</td>" in page
    assert "<td>beta</td><td>0.00</td><td>47.50</td>" in page  # (815.50-810) x 5 + (1790-1800) x -2
    assert "<th>total</th><th>50.00</th><th>202.50</th>" in page
    # Carried (NRML) positions count whole; MIS and CNC ones from today's fills only.
    rows = admin_client.get("/admin/reconciliation/").context["positions"]
    assert [(r["symbol"], r["ours_qty"], r["broker_qty"], r["external_qty"], r["difference"]) for r in rows] == [
        ("INFY-EQ", -2, 0, 0, 2), ("TCS-EQ", 0, 3, 0, 3), ("SBIN-EQ", 15, 15, 0, 0)]
    assert "MISMATCH" in admin_client.get("/admin/reconciliation/").content.decode()


def test_the_order_feed_state_is_shown_under_broker(admin_client):
    from orders import feedstate, leases

    assert leases.acquire(feedstate.FEED_NAME, "cli:host:1:abc")
    feedstate.record_listening("shoonya", "cli:host:1:abc")
    feedstate.record_connected("shoonya", "cli:host:1:abc")
    apps = {a["name"]: [m["object_name"] for m in a["models"]] for a in admin_client.get("/admin/").context["app_list"]}
    assert "OrderFeedState" in apps["Broker"]
    page = admin_client.get("/admin/orders/orderfeedstate/").content.decode()
    assert "healthy" in page and "shoonya" in page
    feedstate.record_disconnected("no frame and no heartbeat reply for 11s")
    page = admin_client.get("/admin/orders/orderfeedstate/").content.decode()
    assert "down (polling)" in page and "no frame and no heartbeat reply for 11s" in page
