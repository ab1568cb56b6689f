"""The dashboard through Django's test client: access, the manual order form through the intake
(idempotent, field errors, explain), the blotter and its filters in a bounded number of
queries, the timeline, cancel, close and the kill switch. tests/test_browser.py drives it in
Chromium."""


import re

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.models import PaperOrder
from orders.models import EventKind, Order, Status
from risk.models import KillSwitch, KillSwitchChange
from tests.factories import OrderFactory, StrategyFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]

FRAGMENT = {"HTTP_X_DASHBOARD": "fragment"}


def user_with(*codenames, staff=False) -> User:
    user = User.objects.create_user(f"u{User.objects.count()}", password="pw-dashboard-0123456789", is_staff=staff)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def trader(client, strategy):
    client.force_login(user_with("view_order", "place_manual_order", "cancel_order", "modify_order",
                                 "change_killswitch"))
    return client


def order_form(**overrides) -> dict:
    form = {"strategy": "demo", "execution_type": "ENTRY", "exchange": "NSE", "alert_id": "dash-test-1",
            "leg-0-symbol": "RELIANCE-EQ", "leg-0-side": "BUY", "leg-0-qty": "10", "leg-0-order_type": "MARKET",
            "leg-0-product": "MIS", "action": "place"}
    form.update(overrides)
    return form


def test_signing_in_and_who_may_see_it(client, strategy):
    assert client.get("/")["Location"].startswith("/login/")
    assert "Username" in client.get("/login/").content.decode()
    User.objects.create_user("nobody", password="pw-nobody-0123456789")
    reply = client.post("/login/", {"username": "nobody", "password": "pw-nobody-0123456789"})
    assert reply.status_code == 302
    assert client.get("/").status_code == 403  # signed in, but neither staff nor orders.view_order
    client.force_login(user_with("view_order"))
    page = client.get("/").content.decode()
    assert "Blotter" in page and "Place order" not in page  # no form without orders.place_manual_order
    assert client.post("/dashboard/place/", order_form()).status_code == 403


def test_a_manual_order_goes_through_the_intake_once(trader, run_queue):
    page = trader.get("/").content.decode()
    for label in ("Strategy", "Execution type", "Exchange", "Symbol", "Side", "Quantity", "Order type", "Price",
                  "Trigger price", "Product", "Add leg", "Place order", "Explain"):
        assert label in page
    reply = trader.post("/dashboard/place/", order_form(), **FRAGMENT)
    assert reply.status_code == 200
    [order] = Order.objects.all()
    assert (order.source, order.status) == ("dashboard", Status.CREATED)
    assert order.events.get(kind=EventKind.CREATED).actor.startswith("dashboard:u")
    assert order.command_id in reply.content.decode() and 'data-terminal="0"' in reply.content.decode()
    again = trader.post("/dashboard/place/", order_form(), **FRAGMENT)  # a double click: the same alert_id
    assert Order.objects.count() == 1 and "Already placed" in again.content.decode()
    run_queue()
    assert PaperOrder.objects.filter(client_order_id=order.command_id).count() == 1


def test_field_errors_are_shown_next_to_the_fields_never_a_500(trader):
    reply = trader.post("/dashboard/place/", order_form(**{"leg-0-qty": "ten", "leg-0-order_type": "LIMIT"}),
                        **FRAGMENT)
    assert reply.status_code == 400
    page = reply.content.decode()
    assert 'data-field="qty"' in page and "must be a whole number" in page
    assert 'data-field="price"' in page and "is required for LIMIT orders" in page
    assert not Order.objects.exists()
    bad = trader.post("/dashboard/place/", order_form(strategy="nope", **{"leg-0-price": "1e99999999999"}))
    assert bad.status_code == 400 and not Order.objects.exists()


def test_explain_shows_what_the_checks_would_say_and_places_nothing(trader):
    reply = trader.post("/dashboard/place/", order_form(execution_type="EXIT", action="explain"), **FRAGMENT)
    page = reply.content.decode()
    assert "GUARD_BLOCKED:NO_POSITION" in page and "EXECUTION_GUARD" in page
    assert not Order.objects.exists()


def test_the_blotter_filters_and_stays_a_bounded_number_of_queries(trader, strategy):
    for i in range(30):
        OrderFactory(strategy=strategy, symbol="SBIN-EQ" if i % 3 else "INFY-EQ")
    blocked = OrderFactory(strategy=strategy, symbol="TCS-EQ")
    from orders import lifecycle

    lifecycle.move(blocked, Status.FAILED, actor="guard", tag="GUARD_BLOCKED:DUPLICATE_POSITION", kind="BLOCKED")
    with CaptureQueriesContext(connection) as few:
        trader.get("/dashboard/blotter/", **FRAGMENT)
    for _ in range(60):
        OrderFactory(strategy=strategy)
    with CaptureQueriesContext(connection) as many:
        page = trader.get("/dashboard/blotter/?tag_code=DUPLICATE_POSITION", **FRAGMENT).content.decode()
    assert len(many.captured_queries) == len(few.captured_queries) <= 8
    assert "TCS-EQ" in page and "SBIN-EQ" not in page and "blocked by a guard rule" in page


def test_the_timeline_cancel_and_close(trader, desk, settings, strategy):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S = 3600
    pending = desk.entry("BUY", "SBIN-EQ", 5, price="800")
    desk.send()
    page = trader.get(f"/dashboard/orders/{pending.command_id}/").content.decode()
    assert "CLAIMED" in page and "BROKER_ACCEPTED" in page and "Cancel" in page
    trader.post(f"/dashboard/orders/{pending.command_id}/cancel/")
    assert pending.events.filter(kind=EventKind.CANCEL_REQUESTED, actor__startswith="dashboard:").exists()
    reply = trader.post("/dashboard/close/", {"strategy": "demo", "symbol": "RELIANCE-EQ", "exchange": "NSE"},
                        follow=True)
    assert "Square-off: SELL 10 RELIANCE-EQ CREATED" in reply.content.decode()


def test_the_kill_switch_control_records_who(trader):
    trader.post("/dashboard/kill-switch/", {"mode": "HALTED"})
    assert KillSwitch.objects.get(is_global=True).mode == "HALTED"
    assert KillSwitchChange.objects.get().actor.startswith("dashboard:")


def test_the_summary_shows_positions_pnl_and_health(trader, desk, strategy):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    StrategyFactory(name="other")
    page = trader.get("/dashboard/summary/", **FRAGMENT).content.decode()
    assert "RELIANCE-EQ" in page and "Square off strategy" in page and "Close all" in page
    assert "EXECUTED 1" in page and "<svg" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere


FORM_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["", "0", "-1", "1e99999999999", "NaN", "LIMIT", "BUY"]))


@given(fields=st.dictionaries(st.sampled_from(sorted(order_form())), FORM_TEXT, max_size=8))
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_whatever_the_form_holds_the_answer_is_never_a_500(trader, fields):
    reply = trader.post("/dashboard/place/", order_form(**{"alert_id": "", **fields}), **FRAGMENT)
    assert reply.status_code in (200, 400), reply.content[:500]


def test_a_control_never_sends_the_browser_to_another_site(trader):
    reply = trader.post("/dashboard/kill-switch/", {"mode": "ACTIVE", "next": "https://evil.example/"})
    assert reply["Location"] == "/"
