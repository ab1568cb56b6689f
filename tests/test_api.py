"""The read API: GET /api/orders/ and /api/orders/<command_id>/."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from orders import lifecycle
from orders.models import EventKind, Status
from tests.factories import (
    AlertFactory,
    OrderFactory,
    RegisteredOrderFactory,
    StrategyFactory,
)

pytestmark = pytest.mark.django_db

LIST = "/api/orders/"


def detail_url(order):
    return f"/api/orders/{order.command_id}/"


@pytest.fixture
def user():
    return User.objects.create_user("trader", password="pw-not-used-here")


@pytest.fixture
def api(client, user):
    client.force_login(user)
    return client


def executed(**fields):
    order = RegisteredOrderFactory(**fields)
    lifecycle.move(order, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.annotate(order, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id="B-1")
    lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=order.qty, avg_price=Decimal("2950.05"))
    return order


def failed(**fields):
    order = RegisteredOrderFactory(**fields)
    lifecycle.move(order, Status.FAILED, actor="guard", tag="GUARD_BLOCKED:STRATEGY_DISABLED", kind=EventKind.BLOCKED)
    return order


def command_ids(response):
    assert response.status_code == 200, response.content
    return {o["command_id"] for o in response.json()["results"]}


@pytest.mark.parametrize("url", [LIST, "/api/orders/abc/"])
def test_anonymous_is_refused(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"


def test_token_auth(client, user):
    order = RegisteredOrderFactory()
    token = Token.objects.create(user=user)
    assert command_ids(client.get(LIST, headers={"authorization": f"Token {token.key}"})) == {order.command_id}
    assert client.get(LIST, headers={"authorization": "Token not-a-token"}).status_code == 401


def test_session_auth(api):
    order = RegisteredOrderFactory()
    assert command_ids(api.get(LIST)) == {order.command_id}


def test_read_only(api):
    order = RegisteredOrderFactory()
    assert api.post(LIST, {}).status_code == 405
    assert api.delete(detail_url(order)).status_code == 405
    assert api.patch(detail_url(order), {"status": "FAILED"}, content_type="application/json").status_code == 405


def test_filters(api):
    alpha, beta = StrategyFactory(name="alpha"), StrategyFactory(name="beta")
    done = executed(alert=AlertFactory(strategy=alpha), symbol="SBIN-EQ")
    blocked = failed(alert=AlertFactory(strategy=beta), symbol="SBIN-EQ")
    new = RegisteredOrderFactory(alert=AlertFactory(strategy=alpha), symbol="INFY-EQ")

    assert command_ids(api.get(LIST)) == {done.command_id, blocked.command_id, new.command_id}
    assert command_ids(api.get(LIST, {"status": "FAILED"})) == {blocked.command_id}
    assert command_ids(api.get(LIST, {"status": "CREATED"})) == {new.command_id}
    assert command_ids(api.get(LIST, {"strategy": "alpha"})) == {done.command_id, new.command_id}
    assert command_ids(api.get(LIST, {"symbol": "sbin-eq"})) == {done.command_id, blocked.command_id}
    assert command_ids(api.get(LIST, {"strategy": "alpha", "symbol": "SBIN-EQ"})) == {done.command_id}
    assert command_ids(api.get(LIST, {"tag": "GUARD_BLOCKED"})) == {blocked.command_id}
    assert command_ids(api.get(LIST, {"strategy": "nobody"})) == set()
    assert api.get(LIST, {"status": "BOGUS"}).status_code == 400


def test_pagination_newest_first(api):
    alert = AlertFactory()
    orders = OrderFactory.create_batch(51, alert=alert)
    first = api.get(LIST).json()
    assert first["count"] == 51 and first["previous"] is None
    assert len(first["results"]) == 50
    assert first["results"][0]["command_id"] == orders[-1].command_id
    second = api.get(first["next"]).json()
    assert second["next"] is None
    assert [o["command_id"] for o in second["results"]] == [orders[0].command_id]


def test_detail_with_the_audit_trail_in_order(api):
    order = executed(symbol="RELIANCE-EQ", qty=3, order_type="LIMIT", price=Decimal("2950.05"))
    body = api.get(detail_url(order)).json()

    assert {k: body[k] for k in ("command_id", "symbol", "qty", "order_type", "price", "status", "broker_order_id",
                                 "filled_qty", "avg_price", "strategy", "alert_id")} == {
        "command_id": order.command_id, "symbol": "RELIANCE-EQ", "qty": 3, "order_type": "LIMIT",
        "price": "2950.0500", "status": "EXECUTED", "broker_order_id": "B-1", "filled_qty": 3,
        "avg_price": "2950.0500", "strategy": order.strategy.name, "alert_id": order.alert.alert_id,
    }
    assert [(e["kind"], e["from_status"], e["to_status"], e["tag"], e["actor"]) for e in body["events"]] == [
        ("CREATED", "", "CREATED", "", "webhook"),
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "", "worker"),
        ("BROKER_ACCEPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "", "worker"),
        ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "", "watcher"),
    ]
    times = [datetime.fromisoformat(e["at"]) for e in body["events"]]
    # ISO 8601 in IST, as traders read them (stored in UTC)
    assert times == sorted(times) and all(t.utcoffset() == timedelta(hours=5, minutes=30) for t in times)
    assert body["events"][0]["at"].endswith("+05:30")


def test_detail_of_a_failed_order_carries_its_tag(api):
    order = failed()
    body = api.get(detail_url(order)).json()
    assert (body["status"], body["tag"]) == ("FAILED", "GUARD_BLOCKED:STRATEGY_DISABLED")
    assert body["events"][-1]["tag"] == "GUARD_BLOCKED:STRATEGY_DISABLED"


def test_unknown_command_id_is_404(api):
    RegisteredOrderFactory()
    assert api.get("/api/orders/no-such-order/").status_code == 404


@pytest.mark.parametrize("path", ["%00", "a%00b", "%C3%A9t%C3%A9", "x%20y"])
def test_a_command_id_that_cannot_exist_is_404_not_500(api, path):
    RegisteredOrderFactory()
    assert api.get(f"/api/orders/{path}/").status_code == 404


def test_tag_family_and_code_are_set_by_the_lifecycle_and_filter_the_list(api):
    from orders.models import tag_parts

    assert tag_parts("GUARD_BLOCKED:DUPLICATE_POSITION") == ("GUARD_BLOCKED", "DUPLICATE_POSITION")
    assert tag_parts("RISK_BLOCKED:QTY_LIMIT qty 100 > 50") == ("RISK_BLOCKED", "QTY_LIMIT")
    assert tag_parts("GUARD_BLOCKED:BATCH leg 1: RISK_BLOCKED:QTY_LIMIT qty 9 > 5") == ("GUARD_BLOCKED", "BATCH")
    assert tag_parts("BROKER_REJECTED:RED:Margin Shortfall") == ("BROKER_REJECTED", "")
    assert tag_parts("") == ("", "")
    duplicate = RegisteredOrderFactory(symbol="SBIN-EQ")
    lifecycle.move(duplicate, Status.FAILED, actor="guard", tag="GUARD_BLOCKED:DUPLICATE_POSITION")
    no_position = RegisteredOrderFactory(symbol="SBIN-EQ")
    lifecycle.move(no_position, Status.FAILED, actor="guard", tag="GUARD_BLOCKED:NO_POSITION")
    rejected = RegisteredOrderFactory(symbol="INFY-EQ")
    lifecycle.move(rejected, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.move(rejected, Status.FAILED, actor="worker", tag="BROKER_REJECTED:Invalid Trading Symbol")
    duplicate.refresh_from_db()
    assert (duplicate.tag_family, duplicate.tag_code) == ("GUARD_BLOCKED", "DUPLICATE_POSITION")
    assert command_ids(api.get(LIST, {"tag_code": "DUPLICATE_POSITION"})) == {duplicate.command_id}
    assert command_ids(api.get(LIST, {"tag_family": "GUARD_BLOCKED"})) == {duplicate.command_id,
                                                                           no_position.command_id}
    assert command_ids(api.get(LIST, {"tag_family": "BROKER_REJECTED"})) == {rejected.command_id}
    row = api.get(detail_url(rejected)).json()
    assert (row["tag_family"], row["tag_code"]) == ("BROKER_REJECTED", "")


@pytest.mark.no_audit_check  # a hostile tag is written by hand
def test_csv_export_streams_every_matching_order_with_formula_cells_neutralised(api, admin_client):
    import csv as csvlib
    import io

    alpha = StrategyFactory(name="alpha")
    rows = [RegisteredOrderFactory(alert=AlertFactory(strategy=alpha), symbol=f"S{i}-EQ") for i in range(60)]  # > one page
    hostile = failed(alert=AlertFactory(strategy=alpha), symbol="SBIN-EQ")
    from orders.models import Order

    Order.objects.filter(pk=hostile.pk).update(tag="=cmd|' /C calc'!A0")  # as if a broker had sent it
    other = RegisteredOrderFactory(alert=AlertFactory(strategy=StrategyFactory(name="beta")), symbol="INFY-EQ")
    response = api.get(LIST, {"format": "csv", "strategy": "alpha"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response.streaming
    table = list(csvlib.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(table) == 61 and {r["command_id"] for r in table} == {o.command_id for o in rows + [hostile]}
    assert other.command_id not in {r["command_id"] for r in table}
    [bad] = [r for r in table if r["command_id"] == hostile.command_id]
    assert bad["tag"] == "'=cmd|' /C calc'!A0" and bad["strategy"] == "alpha"
    assert table[0]["created_at"].endswith("+05:30")
    failed_only = api.get(LIST, {"format": "csv", "status": "FAILED"})
    assert [r["command_id"] for r in csvlib.DictReader(io.StringIO(b"".join(
        failed_only.streaming_content).decode()))] == [hostile.command_id]
    exported = admin_client.post("/admin/orders/order/", {"action": "export_csv",
                                                         "_selected_action": [rows[0].pk, other.pk]})
    lines = b"".join(exported.streaming_content).decode().strip().split("\r\n")
    assert lines[0].startswith("command_id,alert_id,leg,strategy") and len(lines) == 3
