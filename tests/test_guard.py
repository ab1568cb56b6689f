"""The execution guard through the real intake (webhook -> blockers -> queue -> paper -> watcher):
every code with its exact tag, its audit row, and what was (not) queued or sent."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from brokers.models import PaperOrder
from orders import lifecycle
from orders.models import EventKind, Order, Position, Status
from risk import guard
from risk.killswitch import set_mode
from risk.models import GuardLock
from tests.desk import (
    assert_blocked,
    assert_passed,
    leg,
    position,
    queued,
)
from tests.factories import AlertFactory, OrderFactory, StrategyFactory, trail

pytestmark = pytest.mark.django_db

# --- seed case 3 --------------------------------------------------------------------------

def test_seed_case_3_registered_risk_passes_guard_fails(desk):
    set_mode("ACTIVE", actor="test")  # risk (the kill switch) passes explicitly
    first = desk.entry()
    blocked = desk.entry()

    assert_passed(first)
    assert_blocked(blocked, "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER", "a live ENTRY BUY RELIANCE-EQ of this strategy")
    assert queued() == [first.command_id]  # nothing of the blocked order is queued

    desk.send()
    desk.watch()  # the watcher leaves the FAILED order as it is
    blocked.refresh_from_db()
    assert (blocked.status, blocked.tag) == (Status.FAILED, "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")
    assert len(trail(blocked)) == 2
    assert list(PaperOrder.objects.values_list("client_order_id", flat=True)) == [first.command_id]


def test_webhook_reply_carries_the_tag(desk, alert_body, post_alert):
    desk.entry()
    reply = post_alert(alert_body()).json()["orders"][0]
    assert (reply["status"], reply["tag"]) == ("FAILED", "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")


# --- duplicates ---------------------------------------------------------------------------

@pytest.mark.parametrize("live_status", [Status.CREATED, Status.SENT_TO_BROKER])
def test_duplicate_live_order(desk, live_status):
    live = desk.entry()
    if live_status == Status.SENT_TO_BROKER:
        desk.send()
        live.refresh_from_db()
        assert live.status == Status.SENT_TO_BROKER
    assert_blocked(desk.entry(qty=3), "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER",
                   "a live ENTRY BUY RELIANCE-EQ of this strategy")


def test_duplicate_ignores_other_side_symbol_strategy_and_terminal_orders(desk, other):
    live = desk.entry()
    assert_passed(desk.entry(symbol="SBIN-EQ"))  # another symbol
    assert_passed(desk.entry(side="BUY", strategy="other"))  # another strategy, same side: no conflict
    lifecycle.move(live, Status.FAILED, actor="test", tag="X")  # no longer live: the guard is released
    assert_passed(desk.entry())


def test_duplicate_position(desk):
    held = desk.hold(qty=10)
    assert position() == (10, Decimal("2950"), 0)
    assert_blocked(desk.entry(qty=1), "GUARD_BLOCKED:DUPLICATE_POSITION", "open position +10 RELIANCE-EQ MIS")
    assert held.status == Status.EXECUTED


def test_duplicate_position_short(desk):
    desk.hold("SELL", 4)
    assert_blocked(desk.entry("SELL"), "GUARD_BLOCKED:DUPLICATE_POSITION", "open position -4 RELIANCE-EQ MIS")
    assert_passed(desk.entry("BUY"))  # the other direction is not a duplicate (same strategy)


def test_live_order_is_checked_before_the_position(desk, strategy):
    strategy.block_duplicates = False
    strategy.save()
    desk.hold("BUY", 10)
    desk.entry("BUY")
    strategy.block_duplicates = True
    strategy.save()
    assert_blocked(desk.entry("BUY"), "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")


def test_a_live_exit_of_the_same_side_is_a_duplicate_for_an_entry(desk):
    """The issue's rule is 'a live order on the same strategy, symbol and side', whatever
    its execution type: a live BUY EXIT (closing a short) blocks a BUY ENTRY."""
    desk.hold("SELL", 10)
    desk.exit("BUY", qty=10)
    assert_blocked(desk.entry("BUY"), "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER",
                   "a live EXIT BUY RELIANCE-EQ of this strategy")


def test_duplicates_allowed_when_block_duplicates_is_off(desk, strategy):
    strategy.block_duplicates = False
    strategy.save()
    first = desk.entry()
    assert_passed(desk.entry())  # while the first is live
    desk.through(first)  # both execute
    assert_passed(desk.entry())  # while the position is open
    assert position()[0] == 20


# --- cross-strategy -----------------------------------------------------------------------

@pytest.mark.parametrize("live_status", [Status.CREATED, Status.SENT_TO_BROKER])
def test_cross_strategy_conflict_with_a_live_order(desk, other, live_status):
    desk.entry("SELL", strategy="other")
    if live_status == Status.SENT_TO_BROKER:
        desk.send()
    assert_blocked(desk.entry("BUY"), "GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT other", "its live SELL RELIANCE-EQ")


def test_cross_strategy_conflict_with_an_open_position(desk, other):
    desk.hold("SELL", 5, strategy="other")
    assert position("other") == (-5, Decimal("2950"), 0)
    assert_blocked(desk.entry("BUY"), "GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT other",
                   "its open position -5 RELIANCE-EQ MIS")
    assert_passed(desk.entry("SELL"))  # same direction as the other strategy: fine


def test_cross_strategy_conflict_with_a_position_in_another_product(desk, other):
    desk.hold("BUY", 5, strategy="other", product="CNC")
    assert_blocked(desk.entry("SELL", product="MIS"), "GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT other",
                   "its open position +5 RELIANCE-EQ CNC")


def test_cross_strategy_allowed_when_the_strategy_allows_it(desk, strategy, other):
    strategy.allow_cross_strategy = True
    strategy.save()
    desk.entry("SELL", strategy="other")
    assert_passed(desk.entry("BUY"))
    desk.hold("SELL", 5, strategy="other", symbol="SBIN-EQ")
    assert_passed(desk.entry("BUY", symbol="SBIN-EQ"))
    # the setting is the entering strategy's: "other" still may not go against demo
    desk.entry("BUY", symbol="TCS-EQ")
    assert_blocked(desk.entry("SELL", symbol="TCS-EQ", strategy="other"), "GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT demo",
                   "its live BUY TCS-EQ")


def test_cross_strategy_allowed_but_duplicate_still_blocks(desk, strategy, other):
    strategy.allow_cross_strategy = True
    strategy.save()
    desk.entry("SELL", strategy="other")
    desk.entry("BUY")
    assert_blocked(desk.entry("BUY"), "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")


def test_closed_position_of_another_strategy_is_no_conflict(desk, other):
    desk.hold("SELL", 5, strategy="other")
    desk.hold("BUY", 5, strategy="other", execution_type="EXIT")
    assert position("other")[0] == 0
    assert_passed(desk.entry("BUY"))


def test_duplicate_comes_before_cross_strategy(desk, other):
    other.allow_cross_strategy = True
    other.save()
    desk.entry("BUY")
    desk.entry("SELL", strategy="other")
    assert_blocked(desk.entry("BUY"), "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")


# --- EXIT checks --------------------------------------------------------------------------

def test_exit_without_a_position(desk):
    assert_blocked(desk.exit("SELL"), "GUARD_BLOCKED:NO_POSITION",
                   "no long MIS position in RELIANCE-EQ for SELL to close (net +0)")


def test_exit_whose_side_does_not_close_the_position(desk):
    desk.hold("BUY", 10)
    assert_blocked(desk.exit("BUY", qty=5), "GUARD_BLOCKED:NO_POSITION",
                   "no short MIS position in RELIANCE-EQ for BUY to close (net +10)")


def test_exit_of_another_strategys_position_or_another_product(desk, other):
    desk.hold("BUY", 10, strategy="other")
    desk.hold("BUY", 10, product="CNC")
    assert_blocked(desk.exit("SELL", product="MIS"), "GUARD_BLOCKED:NO_POSITION")


def test_exit_larger_than_the_position(desk):
    desk.hold("BUY", 10)
    assert_blocked(desk.exit("SELL", qty=11), "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION",
                   "exit 11 + live exits 0 > position 10")
    assert position()[0] == 10  # never resized


def test_exit_fitting_alone_but_not_with_another_live_exit(desk):
    desk.hold("BUY", 10)
    first = desk.exit("SELL", qty=6)
    assert_passed(first)
    assert_blocked(desk.exit("SELL", qty=5), "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION",
                   "exit 5 + live exits 6 > position 10")
    assert_passed(desk.exit("SELL", qty=4))  # 4 + 6 fits exactly


def test_live_exit_counts_only_its_unfilled_remainder(desk):
    desk.hold("BUY", 10)
    exit_ = desk.exit("SELL", qty=6)
    desk.send()
    exit_.refresh_from_db()
    # the broker fills 4 of the 6: the position is 6 now, the live exit has 2 left
    lifecycle.annotate(exit_, kind=EventKind.FILL, actor="watcher", filled_qty=4, avg_price=Decimal("2950"))
    assert position()[0] == 6
    assert_blocked(desk.exit("SELL", qty=5), "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION",
                   "exit 5 + live exits 2 > position 6")
    assert_passed(desk.exit("SELL", qty=4))


def test_a_failed_exit_no_longer_counts(desk):
    desk.hold("BUY", 10)
    exit_ = desk.exit("SELL", qty=10)
    lifecycle.move(exit_, Status.FAILED, actor="test", tag="X")
    assert_passed(desk.exit("SELL", qty=10))


def test_exit_that_fits_passes_and_closes_the_position(desk):
    desk.hold("BUY", 10, price="100")
    exit_ = desk.exit("SELL", qty=10, price="104.5")
    assert_passed(exit_)
    desk.through(exit_)
    assert position() == (0, Decimal(0), Decimal("45"))
    assert_blocked(desk.exit("SELL", qty=1), "GUARD_BLOCKED:NO_POSITION")  # nothing left to close
    assert_passed(desk.entry("BUY"))  # flat again: a new entry is no duplicate


def test_exit_of_a_short(desk):
    desk.hold("SELL", 8)
    assert_blocked(desk.exit("SELL", qty=1), "GUARD_BLOCKED:NO_POSITION")
    assert_blocked(desk.exit("BUY", qty=9), "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION")
    desk.through(desk.exit("BUY", qty=8))
    assert position()[0] == 0


def test_exit_ignores_entries_and_cross_strategy(desk, other):
    """EXIT checks are only about our own position: another strategy's opposite order or a
    live order of ours on the same side does not stop an exit."""
    desk.hold("BUY", 10)
    desk.entry("BUY", strategy="other")
    desk.hold("SELL", 3, strategy="other", symbol="SBIN-EQ")
    assert_passed(desk.exit("SELL", qty=10))


def test_exit_allowed_while_an_entry_of_the_same_side_is_live(desk, strategy):
    strategy.block_duplicates = False
    strategy.save()
    desk.hold("BUY", 10)
    desk.entry("SELL")  # a live SELL ENTRY is not an exit: it does not count against the position
    assert_passed(desk.exit("SELL", qty=10))


# --- order of checks, legs of one alert, leg policy ----------------------------------------

def test_disabled_strategy_comes_first(desk, strategy):
    strategy.enabled = False
    strategy.save()
    set_mode("HALTED", actor="test")
    assert_blocked(desk.exit(), "GUARD_BLOCKED:STRATEGY_DISABLED")


def test_kill_switch_comes_before_the_guard(desk):
    desk.entry()
    set_mode("REDUCING", actor="test")
    assert_blocked(desk.entry(), "RISK_BLOCKED:KILL_SWITCH_REDUCING", "kill switch REDUCING")


def test_legs_of_one_alert_count_as_live_for_later_legs(desk, strategy):
    strategy.leg_policy = "PER_LEG"
    strategy.save()
    first, second, third = desk.post("ENTRY", [leg(qty=1), leg(qty=2), leg("SBIN-EQ", qty=3)])
    assert_passed(first)
    assert_blocked(second, "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")
    assert_passed(third)


def test_exit_legs_of_one_alert_add_up(desk, strategy):
    strategy.leg_policy = "PER_LEG"
    strategy.save()
    desk.hold("BUY", 10)
    first, second = desk.post("EXIT", [leg(side="SELL", qty=7), leg(side="SELL", qty=7)])
    assert_passed(first)
    assert_blocked(second, "GUARD_BLOCKED:EXIT_EXCEEDS_POSITION", "exit 7 + live exits 7 > position 10")


def two_legs_one_blocked(desk):
    """A 2-leg ENTRY whose second leg (SBIN-EQ) duplicates a live order."""
    blocker = desk.entry(symbol="SBIN-EQ")
    return blocker, desk.post("ENTRY", [leg("RELIANCE-EQ"), leg("SBIN-EQ"), leg("INFY-EQ")])


def test_all_or_none_fails_every_leg_and_sends_nothing(desk, strategy):
    assert strategy.leg_policy == "ALL_OR_NONE"  # the default
    blocker, (first, second, third) = two_legs_one_blocked(desk)
    batch = "GUARD_BLOCKED:BATCH leg 2: GUARD_BLOCKED:DUPLICATE_LIVE_ORDER"
    assert_blocked(first, batch, "another leg of this alert was blocked: leg 2: GUARD_BLOCKED:DUPLICATE_LIVE_ORDER "
                                 "(a live ENTRY BUY SBIN-EQ of this strategy)")
    assert_blocked(second, "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER", "a live ENTRY BUY SBIN-EQ of this strategy")
    assert_blocked(third, batch)
    assert queued() == [blocker.command_id]
    desk.send()
    assert list(PaperOrder.objects.values_list("client_order_id", flat=True)) == [blocker.command_id]


def test_all_or_none_names_every_blocked_leg(desk, other):
    desk.entry(symbol="SBIN-EQ")
    desk.entry("SELL", symbol="INFY-EQ", strategy="other")
    first, second, third = desk.post("ENTRY", [leg("RELIANCE-EQ"), leg("SBIN-EQ"), leg("INFY-EQ")])
    assert_blocked(first, "GUARD_BLOCKED:BATCH leg 2: GUARD_BLOCKED:DUPLICATE_LIVE_ORDER; "
                          "leg 3: GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT other")
    assert_blocked(second, "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")
    assert_blocked(third, "GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT other")


def test_all_or_none_batch_leg_does_not_count_as_live(desk):
    two_legs_one_blocked(desk)
    assert_passed(desk.entry("BUY", symbol="RELIANCE-EQ"))  # leg 1 failed with the batch: not live


def test_all_or_none_exit_alert(desk):
    desk.hold("BUY", 10)
    first, second = desk.post("EXIT", [leg(side="SELL", qty=4), leg(side="BUY", qty=1)])
    assert_blocked(first, "GUARD_BLOCKED:BATCH leg 2: GUARD_BLOCKED:NO_POSITION")
    assert_blocked(second, "GUARD_BLOCKED:NO_POSITION")


def test_all_or_none_batch_tag_is_cut_but_the_detail_keeps_every_reason(desk, settings):
    desk.hold("BUY", 10)
    legs = [leg(side="SELL", qty=1)] + [leg(f"X{n:02d}-EQ", side="SELL", qty=1) for n in range(2, 21)]
    assert len(legs) == settings.MAX_LEGS_PER_ALERT
    first, *rest = desk.post("EXIT", legs)
    first.refresh_from_db()
    assert len(first.tag) == 255 and first.tag.startswith("GUARD_BLOCKED:BATCH leg 2: GUARD_BLOCKED:NO_POSITION; ")
    assert first.tag.endswith("...")
    detail = first.events.get(kind=EventKind.BLOCKED).detail
    for n, order in enumerate(rest, start=2):
        assert_blocked(order, "GUARD_BLOCKED:NO_POSITION")
        assert f"leg {n}: GUARD_BLOCKED:NO_POSITION (no long MIS position in X{n:02d}-EQ for SELL to close" in detail
    assert not queued()


def test_per_leg_sends_the_legs_that_pass(desk, strategy):
    strategy.leg_policy = "PER_LEG"
    strategy.save()
    blocker, (first, second, third) = two_legs_one_blocked(desk)
    assert_passed(first)
    assert_blocked(second, "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER")
    assert_passed(third)
    assert queued() == [blocker.command_id, first.command_id, third.command_id]
    desk.send()
    assert set(PaperOrder.objects.values_list("client_order_id", flat=True)) == {
        blocker.command_id, first.command_id, third.command_id}


def test_every_leg_blocked_keeps_its_own_tag(desk):
    first, second = desk.post("EXIT", [leg(side="SELL"), leg("SBIN-EQ", side="SELL")])
    assert_blocked(first, "GUARD_BLOCKED:NO_POSITION")
    assert_blocked(second, "GUARD_BLOCKED:NO_POSITION")


def test_repeated_alert_id_is_not_checked_again(desk, alert_body, post_alert):
    first = post_alert(alert_body(alert_id="tv-1"))
    again = post_alert(alert_body(alert_id="tv-1"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["orders"] == first.json()["orders"]  # the same CREATED order, not a duplicate block
    assert Order.objects.count() == 1 and len(queued()) == 1


# --- locks and bounded reads --------------------------------------------------------------

SYMBOLS = ["RELIANCE-EQ", "SBIN-EQ", "INFY-EQ", "TCS-EQ", "HDFCBANK-EQ"]


def crowd(n: int) -> None:
    """Other strategies until there are n live orders and n open positions on every symbol the
    measured alerts use (all BUY/long: they do not block demo's BUY entries)."""
    while Position.objects.filter(symbol=SYMBOLS[0]).count() < n:
        alert = AlertFactory(strategy=StrategyFactory())
        for i, symbol in enumerate(SYMBOLS):
            OrderFactory(alert=alert, leg=i + 1, symbol=symbol, side="BUY")
            Position.objects.create(strategy=alert.strategy, exchange="NSE", symbol=symbol, product="MIS",
                                    net_qty=5, avg_price=Decimal("100"))


def release(strategy) -> None:
    for order in Order.objects.filter(strategy=strategy, status=Status.CREATED):
        lifecycle.move(order, Status.FAILED, actor="test", tag="X")


def test_guard_reads_are_a_bounded_number_of_queries(desk, strategy, monkeypatch, django_assert_max_num_queries):
    if connection.vendor == "postgresql":  # the lock rows exist, as after the first alert on an instrument
        GuardLock.objects.bulk_create([GuardLock(exchange="NSE", symbol=symbol) for symbol in SYMBOLS])
    guard_queries = []
    real_check = guard.check_legs

    def measured(*args):
        with CaptureQueriesContext(connection) as ctx:
            verdicts = real_check(*args)
        guard_queries.append(len(ctx.captured_queries))
        return verdicts

    monkeypatch.setattr("risk.guard.check_legs", measured)
    intake = {}
    for existing in (2, 50):
        crowd(existing)
        for legs in ([leg()], [leg(s) for s in SYMBOLS]):
            # strategy, alert, symbol master, orders, creation events, kill switch, market holiday,
            # risk limits, (locks), guard read, every leg's queued task (+ the test's savepoint pair)
            with django_assert_max_num_queries(14), CaptureQueriesContext(connection) as passing:
                orders = desk.post("ENTRY", legs)
            assert [o.status for o in orders] == [Status.CREATED] * len(legs), [o.tag for o in orders]
            with CaptureQueriesContext(connection) as blocked:
                orders = desk.post("ENTRY", legs)  # the same again: every leg a duplicate
            assert [o.status for o in orders] == [Status.FAILED] * len(legs)
            intake[existing, len(legs)] = (len(passing.captured_queries), len(blocked.captured_queries))
            release(strategy)
    # the guard itself: one statement for the live orders and positions, and on PostgreSQL one
    # for the instrument locks, whatever the legs and the crowd
    assert guard_queries == [2 if connection.vendor == "postgresql" else 1] * 8, guard_queries
    # a whole intake does not grow with the live orders and positions already there
    assert intake[2, 1] == intake[50, 1] and intake[2, 5] == intake[50, 5], intake
    # a passing leg costs no statement (one INSERT queues every leg's task); a blocked leg its
    # move to FAILED: the update, which checks the fresh order's audit head, and the audit row,
    # in a savepoint (SQLite), or both in one statement (PostgreSQL)
    assert intake[2, 5][0] == intake[2, 1][0], intake
    assert intake[2, 5][1] - intake[2, 1][1] == 4 * (1 if connection.vendor == "postgresql" else 4), intake


# --- the trading day ----------------------------------------------------------------------

def yesterday(strategy_name="demo", symbol="RELIANCE-EQ", product="MIS"):
    """Make the position's last fill a day old (Asia/Kolkata)."""
    Position.objects.filter(strategy__name=strategy_name, symbol=symbol, product=product).update(
        updated_at=timezone.now() - timedelta(days=1, hours=1))


def test_an_intraday_position_from_a_past_trading_day_no_longer_counts(desk):
    """The broker squared yesterday's MIS position off with orders that are not ours."""
    desk.hold(qty=10)
    yesterday()
    assert_passed(desk.entry())
    assert_blocked(desk.exit(symbol="RELIANCE-EQ", product="MIS"), "GUARD_BLOCKED:NO_POSITION")


def test_a_delivery_position_from_a_past_trading_day_still_counts(desk):
    desk.hold(qty=10, product="CNC")
    yesterday(product="CNC")
    assert_blocked(desk.entry(product="CNC"), "GUARD_BLOCKED:DUPLICATE_POSITION")


def test_live_orders_and_positions_are_read_in_one_statement(desk, other):
    """One statement is one snapshot: a fill committing between two reads would show a live
    exit's remainder together with the position that fill already reduced."""
    desk.hold(qty=10)
    desk.entry(symbol="SBIN-EQ", strategy="other")
    alert = AlertFactory()
    with CaptureQueriesContext(connection) as ctx:
        live, held = guard._exposures("NSE", ["RELIANCE-EQ", "SBIN-EQ"], alert)
    assert len(ctx.captured_queries) == 1
    assert [(e.strategy_name, e.symbol, e.side, e.remaining_qty) for e in live] == [("other", "SBIN-EQ", "BUY", 10)]
    assert [(name, symbol, product, net) for _, name, symbol, product, net in held] == [
        ("demo", "RELIANCE-EQ", "MIS", 10)]
