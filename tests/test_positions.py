"""Positions from our own fills (orders.positions), and the broker's position snapshot the
watcher keeps (BrokerPosition)."""

from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from brokers import paper
from brokers.base import BrokerUnavailable
from brokers.models import Behaviour, PaperInstrument, PaperOrder
from orderdesk import statements
from orders import lifecycle
from orders.models import BrokerPosition, EventKind, OrderEvent, Position, Status
from orders.positions import Book, fill_increment, positions_from_orders
from orders.watcher import OrderWatcher
from tests.desk import assert_blocked, leg, position
from tests.factories import OrderFactory, StrategyFactory

pytestmark = pytest.mark.django_db

D = Decimal


def sent(**fields):
    order = OrderFactory(**fields)
    lifecycle.move(order, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.annotate(order, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id=f"B-{order.command_id}")
    return order


def filled(qty, price, side="BUY", **fields):
    """An order the broker executed in full at `price` (through lifecycle, as the watcher does)."""
    order = sent(qty=qty, side=side, **fields)
    assert lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=qty, avg_price=D(price))
    return order


def book(strategy=None, symbol="RELIANCE-EQ", product="MIS", exchange="NSE"):
    row = Position.objects.get(symbol=symbol, product=product, exchange=exchange,
                               **({"strategy": strategy} if strategy else {}))
    return row.net_qty, row.avg_price, row.realized_pnl


# --- the arithmetic -----------------------------------------------------------------------

@pytest.mark.parametrize("fills, expected", [
    ([(10, "100")], (10, "100", "0")),
    ([(10, "100"), (5, "103"), (5, "101.5")], (20, "101.125", "0")),  # weighted average, exact
    ([(10, "100"), (-4, "110")], (6, "100", "40")),  # reducing keeps the average, realizes the gain
    ([(10, "100"), (-10, "95")], (0, "0", "-50")),  # flat: no average
    ([(10, "100"), (-15, "90")], (-5, "90", "-100")),  # flipping: the rest opens at the fill price
    ([(-8, "50"), (3, "45"), (-2, "52")], (-7, "50.571429", "15")),  # (50*5 + 52*2) / 7, to the field's 6 places
    ([(-8, "50"), (8, "55")], (0, "0", "-40")),
])
def test_book_average_cost(fills, expected):
    b = Book()
    for qty, price in fills:
        b = b.add(qty, D(price))
    net, avg, pnl = expected
    assert (b.net_qty, b.avg_price, b.realized_pnl) == (net, D(avg), D(pnl))


def test_fill_increment_from_cumulative_figures():
    order = OrderFactory(qty=10)
    assert fill_increment(order, 0, None) is None
    assert fill_increment(order, 4, D("100")) == (4, D("100"))
    order.filled_qty, order.avg_price = 4, D("100")  # what lifecycle stored
    # 10 at an average of 101.2 after 4 at 100: the 6 new ones cost (1012 - 400) / 6 = 102
    assert fill_increment(order, 10, D("101.2")) == (6, D("102"))
    assert fill_increment(order, 4, D("100")) is None  # no progress
    assert fill_increment(order, 3, D("100")) is None  # the broker never takes a fill back: ignored


def test_fill_without_a_reported_average_uses_the_limit_price():
    order = OrderFactory(qty=5, order_type="LIMIT", price=D("99.5"))
    assert fill_increment(order, 5, None) == (5, D("99.5"))


# --- incremental positions through lifecycle ------------------------------------------------

def test_several_fills_at_different_prices_average_exactly():
    strategy = StrategyFactory(name="demo")
    order = sent(qty=20, alert__strategy=strategy)
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=10, avg_price=D("100"))
    assert book() == (10, D("100"), 0)
    # cumulative: 15 filled at an average of 101 -> these 5 at 103
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=15, avg_price=D("101"))
    assert book() == (15, D("101"), 0)
    lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=20, avg_price=D("101.125"))
    assert book() == (20, D("101.125"), 0)
    filled(20, "103.125", alert__strategy=strategy)  # another order adds 20 more
    assert book() == (40, D("102.125"), 0)
    assert Position.objects.count() == 1


def test_buy_then_sell_to_flat_realizes_the_pnl():
    strategy = StrategyFactory(name="demo")
    filled(10, "100", alert__strategy=strategy)
    filled(4, "110.25", side="SELL", alert__strategy=strategy, execution_type="EXIT")
    assert book() == (6, D("100"), D("41"))
    filled(6, "98", side="SELL", alert__strategy=strategy, execution_type="EXIT")
    assert book() == (0, D(0), D("29"))  # 41 - 12
    filled(3, "50", side="SELL", alert__strategy=strategy)  # a new short after flat
    assert book() == (-3, D("50"), D("29"))


def test_positions_are_per_strategy_exchange_symbol_and_product():
    a, b = StrategyFactory(name="a"), StrategyFactory(name="b")
    filled(10, "100", alert__strategy=a)
    filled(5, "100", alert__strategy=b)
    filled(7, "100", alert__strategy=a, product="CNC")
    filled(2, "100", alert__strategy=a, exchange="BSE", symbol="RELIANCE")
    filled(1, "100", alert__strategy=a, symbol="SBIN-EQ", side="SELL")
    assert sorted(Position.objects.values_list("strategy__name", "exchange", "symbol", "product", "net_qty")) == [
        ("a", "BSE", "RELIANCE", "MIS", 2), ("a", "NSE", "RELIANCE-EQ", "CNC", 7),
        ("a", "NSE", "RELIANCE-EQ", "MIS", 10),
        ("a", "NSE", "SBIN-EQ", "MIS", -1), ("b", "NSE", "RELIANCE-EQ", "MIS", 5)]


def test_a_rejected_or_unfilled_failure_makes_no_position():
    order = sent()
    lifecycle.move(order, Status.FAILED, actor="watcher", tag="BROKER_REJECTED:x", filled_qty=0, avg_price=None)
    assert not Position.objects.exists()


def test_a_repeated_report_of_the_same_fill_counts_once():
    order = sent(qty=10)
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=4, avg_price=D("100"))
    lifecycle.move(order, Status.FAILED, actor="watcher", tag="BROKER_CANCELLED:x filled 4/10",
                   filled_qty=4, avg_price=D("100"))
    assert book()[0] == 4
    lifecycle.move(order, Status.FAILED, actor="watcher", filled_qty=4)  # re-confirming: a no-op
    assert book()[0] == 4


def test_a_lowered_fill_report_is_ignored_and_cannot_count_twice():
    """A lagging book (or an older history row) that reports fewer fills than we stored must
    not lower the order's filled_qty: the next report of the real figure would add the
    difference to the position a second time."""
    order = sent(qty=10)
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=5, avg_price=D("100"))
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=3, avg_price=D("100"))
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=5, avg_price=D("100"))
    order.refresh_from_db()
    assert (order.filled_qty, book()[0]) == (5, 5)
    lifecycle.move(order, Status.FAILED, actor="watcher", tag="BROKER_CANCELLED:x filled 2/10", filled_qty=2)
    order.refresh_from_db()
    assert (order.status, order.filled_qty, order.avg_price, book()[0]) == (Status.FAILED, 5, D("100"), 5)


def test_position_and_fill_commit_together(monkeypatch):
    """apply_fill runs in the fill's transaction: if the audit row cannot be written the fill,
    the status and the position all roll back."""
    order = sent(qty=10)

    run = statements.PreparedInsert.run

    def broken(prepared):
        if isinstance(prepared.objs[0], OrderEvent):
            raise RuntimeError("disk full")
        run(prepared)

    monkeypatch.setattr(statements.PreparedInsert, "run", broken)  # the audit row is written after the position
    with pytest.raises(RuntimeError):
        lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=10, avg_price=D("100"))
    monkeypatch.undo()
    order.refresh_from_db()
    assert (order.status, order.filled_qty) == (Status.SENT_TO_BROKER, 0)
    assert not Position.objects.exists()


def test_a_lost_compare_and_set_changes_no_position():
    order = sent(qty=10)
    stale = type(order).objects.get(pk=order.pk)
    lifecycle.move(order, Status.FAILED, actor="worker", tag="X")
    assert lifecycle.move(stale, Status.EXECUTED, actor="watcher", filled_qty=10, avg_price=D("100")) is False
    assert not Position.objects.exists()


@pytest.mark.parametrize("then", ["same fill again", "completion"])
def test_a_stale_copy_cannot_count_a_fill_twice(then):
    """Two writers holding copies of one order read before either wrote (two watchers when a
    slow pass outlived the lease): the position takes the increment from the writer's copy,
    so the compare-and-set must fail a copy whose filled_qty is stale."""
    order = sent(qty=10)
    first, second = (type(order).objects.get(pk=order.pk) for _ in range(2))
    assert lifecycle.annotate(first, kind=EventKind.FILL, actor="watcher", filled_qty=4, avg_price=D("100"))
    if then == "same fill again":
        lifecycle.annotate(second, kind=EventKind.FILL, actor="watcher", filled_qty=4, avg_price=D("100"))
    else:
        lifecycle.move(second, Status.EXECUTED, actor="watcher", filled_qty=10, avg_price=D("100"))
    order.refresh_from_db()
    assert book()[0] == order.filled_qty


# --- through the pipeline (paper broker + watcher) -------------------------------------------

def make_due(order):
    PaperOrder.objects.filter(client_order_id=order.command_id).update(due_at=timezone.now())


def test_partly_filled_then_cancelled_order_keeps_its_fill(desk, settings):
    settings.PAPER_FILL_DELAY_S = 3600
    PaperInstrument.objects.filter(symbol="INFY-EQ").update(behaviour=Behaviour.CANCEL_AFTER_PARTIAL)
    order = desk.entry("BUY", symbol="INFY-EQ", qty=7)
    desk.send()
    watcher = OrderWatcher()
    watcher.poll_once()
    assert not Position.objects.exists()  # nothing filled yet
    make_due(order)
    watcher.poll_once()
    assert position(symbol="INFY-EQ") == (3, D("1875.25"), 0)  # the half fill, while still live
    make_due(order)
    watcher.poll_once()
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, f"BROKER_CANCELLED:{paper.CANCEL_REASON} filled 3/7")
    assert position(symbol="INFY-EQ") == (3, D("1875.25"), 0)  # the cancelled order keeps its fill
    # and the guard sees it
    assert_blocked(desk.entry("BUY", symbol="INFY-EQ"), "GUARD_BLOCKED:DUPLICATE_POSITION",
                   "open position +3 INFY-EQ MIS")
    assert_blocked(desk.exit("SELL", symbol="INFY-EQ", qty=4), "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION")
    PaperInstrument.objects.filter(symbol="INFY-EQ").update(behaviour=Behaviour.NORMAL)
    settings.PAPER_FILL_DELAY_S = 0
    desk.through(desk.exit("SELL", symbol="INFY-EQ", qty=3))
    assert position(symbol="INFY-EQ") == (0, D(0), 0)


def test_fills_at_different_prices_through_the_pipeline(desk, strategy):
    strategy.block_duplicates = False
    strategy.save()
    for price in ("100", "103", "101.5"):
        desk.entry("BUY", qty=5 if price != "100" else 10, price=price)
    desk.send()
    desk.watch()
    assert position() == (20, D("101.125"), 0)
    desk.through(desk.exit("SELL", qty=20, price="102"))
    assert position() == (0, D(0), D("17.5"))  # (102 - 101.125) * 20


def mixed_sequence(desk, settings):
    """Two strategies, two products, adds, partial exits, a flip, a partly filled cancelled
    order, a rejected one."""
    from orders.models import Strategy

    Strategy.objects.filter(name__in=["demo", "other"]).update(block_duplicates=False, allow_cross_strategy=True)
    steps = [
        ("ENTRY", "demo", "BUY", 10, "100", "RELIANCE-EQ", "MIS"),
        ("ENTRY", "demo", "BUY", 6, "104", "RELIANCE-EQ", "MIS"),
        ("EXIT", "demo", "SELL", 4, "110", "RELIANCE-EQ", "MIS"),
        ("ENTRY", "other", "SELL", 5, "2000", "INFY-EQ", "MIS"),
        ("ENTRY", "demo", "BUY", 3, "250.75", "RELIANCE-EQ", "CNC"),
        ("EXIT", "other", "BUY", 2, "1990.5", "INFY-EQ", "MIS"),
        ("ENTRY", "demo", "SELL", 20, "108", "RELIANCE-EQ", "MIS"),  # flips demo short 8
        ("EXIT", "demo", "BUY", 5, "101", "RELIANCE-EQ", "MIS"),
    ]
    for execution_type, strategy, side, qty, price, symbol, product in steps:
        [order] = desk.post(execution_type, [leg(symbol, side, qty, product, price)], strategy)
        desk.through(order)
    # a partly filled, then cancelled order
    settings.PAPER_FILL_DELAY_S = 3600
    PaperInstrument.objects.filter(symbol="SBIN-EQ").update(behaviour=Behaviour.CANCEL_AFTER_PARTIAL)
    [partial] = desk.post("ENTRY", [leg("SBIN-EQ", "SELL", 9, "MIS", "800")], "demo")
    desk.send()
    watcher = OrderWatcher()
    for _ in range(2):
        make_due(partial)
        watcher.poll_once()
    partial.refresh_from_db()
    assert (partial.status, partial.filled_qty) == (Status.FAILED, 4)
    # a rejected one
    PaperInstrument.objects.filter(symbol="TCS-EQ").update(behaviour=Behaviour.REJECT_LATER)
    [rejected] = desk.post("ENTRY", [leg("TCS-EQ", "BUY", 2, "MIS")], "demo")
    desk.send()
    make_due(rejected)
    watcher.poll_once()
    rejected.refresh_from_db()
    assert rejected.status == Status.FAILED


def test_positions_from_orders_agrees_with_the_incremental_rows(desk, other, settings):
    mixed_sequence(desk, settings)
    rows = {(p.strategy_id, p.exchange, p.symbol, p.product): (p.net_qty, p.avg_price, p.realized_pnl)
            for p in Position.objects.all()}
    derived = {key: (b.net_qty, b.avg_price, b.realized_pnl) for key, b in positions_from_orders().items()}
    assert rows == derived
    # 10@100 + 6@104: avg 101.5; -4@110: +34; -20@108 closes 12 (+78) and opens 8 short at 108;
    # +5@101: +35
    assert position() == (-3, D("108"), D("147"))
    assert position(product="CNC") == (3, D("250.75"), 0)
    assert position("other", "INFY-EQ") == (-3, D("2000"), D("19"))
    assert position(symbol="SBIN-EQ") == (-4, D("800"), 0)
    assert position(symbol="TCS-EQ") is None


def test_positions_from_orders_when_fills_of_two_orders_interleave():
    """positions_from_orders replays each order's whole fill at its average price, in the
    order the orders last changed: the net quantity always agrees with the incremental rows;
    the average and realized P&L (average cost depends on the order of fills) only when no
    order's fills interleave with another's. The incremental rows follow the real order."""
    strategy = StrategyFactory(name="demo")
    filled(10, "100", alert__strategy=strategy)
    slow = sent(qty=10, alert__strategy=strategy)
    lifecycle.annotate(slow, kind=EventKind.FILL, actor="watcher", filled_qty=5, avg_price=D("110"))
    filled(5, "120", side="SELL", alert__strategy=strategy, execution_type="EXIT")
    lifecycle.move(slow, Status.FAILED, actor="watcher", tag="BROKER_CANCELLED:x filled 5/10")
    # real order: +10@100, +5@110 (avg 103.333333), -5@120 (+83.333335)
    assert book() == (10, D("103.333333"), D("83.3333"))
    [derived] = positions_from_orders().values()
    assert derived.net_qty == 10
    assert (derived.avg_price, derived.realized_pnl) == (D("105"), D("100"))  # replayed as +10, -5, +5


# --- the broker's snapshot ------------------------------------------------------------------

def snapshot():
    return {(p.exchange, p.symbol, p.product): (p.net_qty, p.net_avg_price, p.realized_pnl, p.unrealized_pnl,
                                                 p.last_price) for p in BrokerPosition.objects.all()}


def test_the_watcher_stores_the_brokers_positions_each_pass(desk, other, strategy):
    strategy.block_duplicates = False
    strategy.save()
    desk.through(desk.entry("BUY", qty=10, price="2900"))
    desk.through(desk.entry("SELL", qty=3, symbol="SBIN-EQ", strategy="other"))
    assert snapshot() == {
        ("NSE", "RELIANCE-EQ", "MIS"): (10, D("2900"), 0, D("500"), D("2950")),  # (2950 - 2900) * 10
        ("NSE", "SBIN-EQ", "MIS"): (-3, D("815.5"), 0, 0, D("815.5")),
    }
    first_taken = set(BrokerPosition.objects.values_list("taken_at", flat=True))
    assert len(first_taken) == 1

    desk.through(desk.exit("SELL", qty=10, price="2960"))
    PaperInstrument.objects.filter(symbol="SBIN-EQ").update(ref_price=D("800"))
    desk.watch()
    assert snapshot() == {
        ("NSE", "RELIANCE-EQ", "MIS"): (0, D("2900"), D("600"), 0, D("2950")),
        ("NSE", "SBIN-EQ", "MIS"): (-3, D("815.5"), 0, D("46.5"), D("800")),  # short gains as the price falls
    }
    assert BrokerPosition.objects.count() == 2  # replaced, not appended
    assert set(BrokerPosition.objects.values_list("taken_at", flat=True)) != first_taken


def test_a_failed_position_read_keeps_the_previous_snapshot(desk, monkeypatch):
    desk.through(desk.entry("BUY", qty=10))
    before = list(BrokerPosition.objects.values_list("id", "net_qty", "taken_at"))
    assert before

    def down(self):
        raise BrokerUnavailable("PositionBook: Session Expired")

    monkeypatch.setattr(paper.PaperBroker, "positions", down)
    assert OrderWatcher().poll_once() is True  # the order book was still reconciled
    assert list(BrokerPosition.objects.values_list("id", "net_qty", "taken_at")) == before


def test_snapshot_is_account_wide_not_per_strategy(desk, other, strategy):
    strategy.allow_cross_strategy = True
    strategy.save()
    desk.through(desk.entry("BUY", qty=10, strategy="other"))
    desk.through(desk.entry("SELL", qty=4))
    assert snapshot()[("NSE", "RELIANCE-EQ", "MIS")][0] == 6
    assert position() == (-4, D("2950"), 0) and position("other") == (10, D("2950"), 0)


def test_snapshot_of_an_empty_book(desk):
    desk.watch()
    assert not BrokerPosition.objects.exists()


@pytest.mark.parametrize("position_exists", [False, True], ids=["first fill", "a position already held"])
def test_a_fill_is_a_handful_of_statements(data_statements, position_exists):
    """The move (one UPDATE on a current copy), the position (read, then INSERT or UPDATE),
    the fill and the event; on PostgreSQL also the strategy's lock."""
    strategy = StrategyFactory()
    if position_exists:
        filled(5, "100", strategy=strategy)
    order = sent(qty=10, strategy=strategy)
    with data_statements() as counted:
        assert lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=10, avg_price=D("100")) is True
    lock = 1 if connection.vendor == "postgresql" else 0
    assert counted.by_kind == {"SELECT": 1 + lock, "UPDATE": 1 + position_exists,
                               "INSERT": 3 - position_exists}, counted.sql
    assert book(strategy)[0] == 10 + 5 * position_exists
