"""Orders placed elsewhere and reconciliation (issue 18), against the fake Noren server: an
order placed by hand in the broker's app is external, followed to its end from the book and
the push feed and counted in its own bucket; the broker's positions are compared with ours
plus the external ones, and a difference is told once; a fill reported after an order went
FAILED lands in the fills ledger and the position."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from brokers.fake_noren import Behaviour
from brokers.shoonya import order_update_entry
from orders import external, reconcile
from orders.models import (EventKind, ExternalOrder, Fill, Notification, Order, Position, PositionDifference,
                           Reconciliation, Status)
from orders.watcher import OrderWatcher
from tests.factories import trail

pytestmark = pytest.mark.django_db


@pytest.fixture
def broker(shoonya_legacy, settings):
    settings.RECONCILE_INTERVAL_S = 0  # every pass, unless a test says otherwise
    return shoonya_legacy


@pytest.fixture
def api(client):
    token = Token.objects.create(user=User.objects.create_user("viewer")).key
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token}"
    return client


def send(post_alert, alert_body, run_queue, symbol="RELIANCE-EQ", qty=10, side="BUY", **body) -> Order:
    response = post_alert(alert_body(legs=[{"symbol": symbol, "side": side, "qty": qty, "order_type": "MARKET",
                                            "product": "MIS"}], **body))
    assert response.status_code == 201, response.content
    run_queue()
    return Order.objects.get(command_id=response.json()["orders"][0]["command_id"])


def test_an_order_placed_by_hand_is_external_with_its_fills_and_counts_in_the_account_pnl(broker, api):
    broker.fill_delay_s = 60  # it stays OPEN until completed below
    placed = broker.place_by_hand("SBIN-EQ", side="BUY", qty=5)
    watcher = OrderWatcher()
    watcher.poll_once()
    row = ExternalOrder.objects.get()
    assert (row.broker_order_id, row.status, row.side, row.qty, row.symbol, row.exchange, row.product,
            row.order_type, row.filled_qty) == (placed.norenordno, "OPEN", "BUY", 5, "SBIN-EQ", "NSE", "MIS",
                                                "MARKET", 0)
    broker.complete("")  # the hand order has no remarks
    broker.set_last_price("SBIN-EQ", "820.50")
    watcher.poll_once()
    row.refresh_from_db()
    assert (row.status, row.filled_qty, row.avg_price) == ("COMPLETE", 5, Decimal("815.5"))
    assert not Order.objects.exists() and not Fill.objects.exists()  # never ours: no order, no fills, no guard
    bucket = external.pnl()
    assert bucket["net"] == {("NSE", "SBIN-EQ", "MIS"): 5} and bucket["realized"] == 0
    assert bucket["unrealized"] == Decimal("25.0000")  # 5 x (820.50 - 815.50)
    # The reconciliation view: the broker's +5 is explained by the external order, no difference.
    view = api.get("/api/reconciliation/").json()
    assert view["positions"] == [{"exchange": "NSE", "symbol": "SBIN-EQ", "product": "MIS", "broker_qty": 5,
                                  "ours_qty": 0, "external_qty": 5, "difference": 0}]
    assert view["differences"] == [] and view["external_pnl"]["unrealized"] == "25.0000"
    listed = api.get("/api/external-orders/", {"status": "COMPLETE"}).json()
    assert [o["broker_order_id"] for o in listed["results"]] == [placed.norenordno]
    assert not PositionDifference.objects.exists()


def test_an_external_order_is_followed_from_the_push_feed_too(broker):
    placed = broker.place_by_hand("INFY-EQ", side="SELL", qty=2)
    message = broker.feed.order_message(placed, "New", broker._row(placed, status="OPEN", rpt="New"))
    OrderWatcher().apply_update(order_update_entry(message))
    row = ExternalOrder.objects.get()
    assert (row.broker_order_id, row.side, row.qty, row.status) == (placed.norenordno, "SELL", 2, "OPEN")


def test_our_orders_are_never_external(broker, strategy, alert_body, post_alert, run_queue):
    order = send(post_alert, alert_body, run_queue)
    OrderWatcher().poll_once()
    assert Order.objects.get(pk=order.pk).status == Status.EXECUTED
    OrderWatcher().poll_once()
    assert not ExternalOrder.objects.exists() and not PositionDifference.objects.exists()
    assert Reconciliation.objects.exists()


def test_a_broker_position_that_differs_from_ours_is_told_once_then_resolved(broker, fake_telegram, strategy,
                                                                            alert_body, post_alert, run_queue, api):
    send(post_alert, alert_body, run_queue, symbol="TCS-EQ", qty=3)
    watcher = OrderWatcher()
    watcher.poll_once()
    broker.shift_position("TCS-EQ", 7)  # carried over from yesterday, say
    watcher.poll_once()  # seen once: it may be a fill on its way to the order book
    [diff] = PositionDifference.objects.all()
    assert (diff.broker_qty, diff.ours_qty, diff.external_qty, diff.difference) == (10, 3, 0, 7)
    assert diff.confirmed_at is None and not Notification.objects.filter(text__contains="POSITIONS DIFFER").exists()
    for _ in range(4):  # seen again: told, once
        watcher.poll_once()
    [told] = Notification.objects.filter(text__contains="POSITIONS DIFFER")
    assert told.text == ("⚖️ POSITIONS DIFFER NSE:TCS-EQ MIS: broker +10, ours +3, external +0 (difference +7)")
    diff.refresh_from_db()
    assert diff.confirmed_at is not None and diff.resolved_at is None
    assert [d["symbol"] for d in api.get("/api/reconciliation/").json()["differences"]] == ["TCS-EQ"]
    send(post_alert, alert_body, run_queue, symbol="TCS-EQ", qty=2, side="SELL", execution_type="EXIT")  # both move
    watcher.poll_once()
    watcher.poll_once()
    [diff] = PositionDifference.objects.all()  # the same difference, its parts brought up to date
    assert (diff.broker_qty, diff.ours_qty, diff.difference, diff.resolved_at) == (8, 1, 7, None)
    assert Notification.objects.filter(text__contains="POSITIONS DIFFER").count() == 1
    health = api.get("/api/health/").json()
    assert health["reconciliation"]["differences"] == 1 and "position difference" in " ".join(health["reasons"])
    broker.shift_position("TCS-EQ", -7)
    watcher.poll_once()
    diff.refresh_from_db()
    assert diff.resolved_at is not None
    assert api.get("/api/reconciliation/").json()["differences"] == []


def test_reconciliation_runs_at_a_lease_take_only_when_the_last_is_older_than_the_ttl(broker, settings):
    settings.RECONCILE_INTERVAL_S = 300
    OrderWatcher().poll_once()
    assert Reconciliation.objects.count() == 1  # none before: the first watcher runs it
    second = OrderWatcher()  # the next slice of the chain, within the TTL: not again
    second.poll_once()
    second.poll_once()
    assert Reconciliation.objects.count() == 1
    settings.WATCHER_LEASE_TTL_S = 0
    OrderWatcher().poll_once()  # a lease taken after the TTL
    assert Reconciliation.objects.count() == 2
    settings.RECONCILE_INTERVAL_S = 0
    watcher = OrderWatcher()
    watcher.poll_once()
    watcher.poll_once()  # and every RECONCILE_INTERVAL_S
    assert Reconciliation.objects.count() == 4


@pytest.mark.parametrize("by", ["book", "feed"])
def test_a_late_fill_after_the_cancel_lands_in_the_ledger_and_the_position(
        broker, strategy, alert_body, post_alert, run_queue, by):
    broker.set_behaviour(Behaviour.CANCEL, symbol="HDFCBANK-EQ")
    order = send(post_alert, alert_body, run_queue, symbol="HDFCBANK-EQ", qty=10)
    watcher = OrderWatcher()
    watcher.poll_once()
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == (Status.FAILED, 0)
    assert order.tag == "BROKER_CANCELLED:Canceled by exchange filled 0/10"

    broker.fill_late(order.command_id, 4)
    if by == "book":
        watcher.poll_once()
    else:
        fake_order = broker.order_for(order.command_id)
        watcher.apply_update(order_update_entry(broker.feed.order_message(
            fake_order, "Fill", broker._row(fake_order, rpt="Fill"), fill_qty=4)))
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == (Status.FAILED, 4)  # the status stays
    assert order.tag == "BROKER_CANCELLED:Canceled by exchange filled 4/10"
    assert trail(order)[-1] == (EventKind.FILL, Status.FAILED, Status.FAILED, order.tag, "watcher")
    [fill] = Fill.objects.filter(order=order)
    assert (fill.qty, fill.cum_qty) == (4, 4)
    assert Position.objects.get(symbol="HDFCBANK-EQ").net_qty == 4
    watcher.poll_once()  # reported again: counted once
    assert Fill.objects.filter(order=order).count() == 1
    assert not ExternalOrder.objects.exists()


def test_the_reconciliation_table_adds_ours_across_strategies_and_the_external_ones(broker, desk, other):
    broker.fill_delay_s = 0
    desk.hold(symbol="SBIN-EQ", qty=4)
    desk.hold(symbol="SBIN-EQ", qty=6, strategy="other")
    broker.place_by_hand("SBIN-EQ", side="SELL", qty=1)
    OrderWatcher().poll_once()
    assert reconcile.figures()[("NSE", "SBIN-EQ", "MIS")] == (9, 10, -1)


def test_the_dashboard_shows_the_external_orders_the_reconciliation_and_the_account_pnl(broker, admin_client, desk):
    desk.hold(symbol="SBIN-EQ", qty=2)
    placed = broker.place_by_hand("SBIN-EQ", side="BUY", qty=3)
    broker.set_last_price("SBIN-EQ", "816.50")
    watcher = OrderWatcher()
    watcher.poll_once()
    page = admin_client.get("/dashboard/reconciliation/").content.decode()
    assert placed.norenordno in page and "BUY 3 NSE:SBIN-EQ MARKET MIS" in page
    assert "<td>NSE:SBIN-EQ MIS</td>\n        <td>5</td><td>2</td><td>3</td>" in page
    assert "None: the broker agrees with ours plus the external orders." in page
    summary = admin_client.get("/dashboard/summary/").content.decode()
    assert "external</a> (placed elsewhere)" in summary
    # ours: 2 x (816.50 - 815.50) = 2.00; external: 3 x 1.00 = 3.00; the account: 5.00
    assert '<th colspan="5">account</th><th>0.00</th><th>5.00</th>' in summary


def test_an_entry_without_remarks_waits_while_an_order_of_ours_has_no_broker_id_yet(broker):
    """A broker that dropped our remarks: the entry may be the order a worker is still storing."""
    from orders import lifecycle
    from tests.factories import RegisteredOrderFactory

    ours = RegisteredOrderFactory(symbol="TCS-EQ", qty=1)
    assert lifecycle.move(ours, Status.SENT_TO_BROKER, actor="worker")  # claimed, the broker's answer not stored
    placed = broker.place_by_hand("TCS-EQ", qty=1)
    watcher = OrderWatcher()
    watcher.poll_once()
    assert not ExternalOrder.objects.exists()
    assert lifecycle.annotate(ours, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id="other-id")
    watcher.poll_once()  # nothing of ours in flight now: it is external
    assert ExternalOrder.objects.get().broker_order_id == placed.norenordno


def test_an_external_order_that_turns_out_ours_is_dropped(broker):
    from orders import lifecycle
    from tests.factories import RegisteredOrderFactory

    placed = broker.place_by_hand("TCS-EQ", qty=1)
    watcher = OrderWatcher()
    watcher.poll_once()
    assert ExternalOrder.objects.filter(broker_order_id=placed.norenordno).exists()
    ours = RegisteredOrderFactory(symbol="TCS-EQ", qty=1)  # its worker learns that broker id late
    assert lifecycle.move(ours, Status.SENT_TO_BROKER, actor="worker", broker_order_id=placed.norenordno)
    broker.complete("")
    OrderWatcher().poll_once()
    assert not ExternalOrder.objects.exists()
    assert Order.objects.get(pk=ours.pk).status == Status.EXECUTED
