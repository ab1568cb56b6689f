"""The guard under real concurrency on PostgreSQL: threads released together by a Barrier
through the real intake, each on its own connection. Deselected on SQLite.

Run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/test."""

import json
import random
import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test import Client

from brokers.models import Behaviour, PaperInstrument, PaperOrder
from orders import lifecycle
from orders.models import Alert, EventKind, Order, Position, Source, Status, Strategy
from orders.services import register_alert
from orders.submission import submit_order
from orders.validation import validate_alert
from orders.watcher import OrderWatcher
from risk import guard
from risk.models import GuardLock
from tests.desk import queued
from tests.factories import TEST_SECRET, StrategyFactory
from tests.processes import run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DUPLICATE = "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER"


def body(strategy="demo", side="BUY", execution_type="ENTRY", symbol="RELIANCE-EQ", qty=10, alert_id=None,
         legs=None):
    data = {"strategy": strategy, "secret": TEST_SECRET, "execution_type": execution_type, "exchange": "NSE",
            "legs": legs or [{"symbol": symbol, "side": side, "qty": qty, "order_type": "MARKET", "product": "MIS"}]}
    if alert_id is not None:
        data["alert_id"] = alert_id
    return data


def through_webhook(data) -> list[dict]:
    response = Client().post("/api/webhook/", data=json.dumps(data), content_type="text/plain; charset=utf-8")
    assert response.status_code == 201, response.content
    return response.json()["orders"]


def through_service(data) -> list[dict]:
    strategy = Strategy.objects.get(name=data["strategy"])
    result = register_alert(strategy=strategy, request=validate_alert(data), source=Source.WEBHOOK,
                            actor="webhook", payload={})
    return [{"command_id": o.command_id, "status": o.status, "tag": o.tag} for o in result.orders]


def outcome(results) -> tuple[list, list]:
    assert not [r for r in results if isinstance(r, Exception)], results
    replies = [reply for orders in results for reply in orders]
    passed = [r for r in replies if r["status"] == Status.CREATED]
    blocked = [r for r in replies if r["status"] == Status.FAILED]
    assert len(passed) + len(blocked) == len(replies), replies
    return passed, blocked


def assert_stored_as_replied(replies):
    for reply in replies:
        order = Order.objects.get(command_id=reply["command_id"])
        assert (order.status, order.tag) == (reply["status"], reply["tag"])
        kinds = list(order.events.values_list("kind", flat=True))
        assert kinds == ([EventKind.CREATED] if order.status == Status.CREATED
                         else [EventKind.CREATED, EventKind.BLOCKED])


def all_registered_before_any_lock(monkeypatch, n):
    """The worst interleaving: every intake has inserted its alert and orders before any of
    them takes the instrument lock, so the lock alone must decide."""
    registered = threading.Barrier(n)
    real_lock = guard.lock_instruments

    def lock_after_everyone_registered(*args, **kwargs):
        registered.wait(timeout=20)
        return real_lock(*args, **kwargs)

    monkeypatch.setattr(guard, "lock_instruments", lock_after_everyone_registered)


@pytest.mark.parametrize("alert_ids", ["none", "distinct"])
@pytest.mark.parametrize("intake", [through_webhook, through_service], ids=["webhook", "service"])
@pytest.mark.parametrize("interleaving", ["released-together", "all-registered-before-lock"])
def test_eight_identical_entries_exactly_one_passes(paper_instruments, strategy, monkeypatch, alert_ids, intake,
                                                    interleaving):
    n = 8
    if interleaving == "all-registered-before-lock":
        all_registered_before_any_lock(monkeypatch, n)
    results = run_together(n, lambda i: intake(body(alert_id=None if alert_ids == "none" else f"tv-{i}")))

    passed, blocked = outcome(results)
    assert len(passed) == 1, results
    assert [b["tag"] for b in blocked] == [DUPLICATE] * (n - 1)
    assert Alert.objects.count() == n and Order.objects.count() == n  # every duplicate still registered
    assert_stored_as_replied(passed + blocked)
    assert queued() == [passed[0]["command_id"]]
    assert GuardLock.objects.filter(exchange="NSE", symbol="RELIANCE-EQ").count() == 1


@pytest.mark.parametrize("how", ["broker-rejects-later", "lifecycle"])
def test_after_the_passing_order_fails_at_the_broker_a_new_entry_passes(paper_instruments, strategy, how):
    results = run_together(8, lambda i: through_webhook(body()))
    [winner], blocked = outcome(results)
    assert len(blocked) == 7
    order = Order.objects.get(command_id=winner["command_id"])
    # still live: another one is blocked
    assert through_webhook(body())[0]["tag"] == DUPLICATE

    if how == "broker-rejects-later":
        PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(behaviour=Behaviour.REJECT_LATER)
        assert submit_order(order.command_id) == "accepted"
        order.refresh_from_db()
        assert order.status == Status.SENT_TO_BROKER
        assert through_webhook(body())[0]["tag"] == DUPLICATE  # SENT_TO_BROKER is live too
        OrderWatcher().poll_once()
    else:
        lifecycle.move(order, Status.SENT_TO_BROKER, actor="worker")
        lifecycle.move(order, Status.FAILED, actor="worker", tag="BROKER_REJECTED:RMS:Blocked",
                       kind=EventKind.BROKER_REJECTED)
    order.refresh_from_db()
    assert order.status == Status.FAILED and order.tag.startswith("BROKER_REJECTED:")

    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(behaviour=Behaviour.NORMAL)
    # released: again exactly one of eight passes
    passed, blocked = outcome(run_together(8, lambda i: through_webhook(body())))
    assert len(passed) == 1 and [b["tag"] for b in blocked] == [DUPLICATE] * 7
    assert submit_order(passed[0]["command_id"]) == "accepted"
    assert PaperOrder.objects.filter(client_order_id=passed[0]["command_id"]).count() == 1


@pytest.mark.parametrize("interleaving", ["released-together", "all-registered-before-lock"])
def test_two_opposite_entries_of_two_strategies_one_conflicts(paper_instruments, strategy, monkeypatch,
                                                              interleaving):
    StrategyFactory(name="other")
    if interleaving == "all-registered-before-lock":
        all_registered_before_any_lock(monkeypatch, 2)
    bodies = [body("demo", "BUY"), body("other", "SELL")]
    results = run_together(2, lambda i: through_webhook(bodies[i]))

    passed, blocked = outcome(results)
    assert len(passed) == 1 and len(blocked) == 1, results
    winner = Order.objects.get(command_id=passed[0]["command_id"]).strategy.name
    assert blocked[0]["tag"] == f"GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT {winner}"
    assert_stored_as_replied(passed + blocked)


def test_many_strategies_both_sides_at_once(paper_instruments, strategy):
    """Sixteen intakes, eight strategies, each posting a BUY and a SELL: at the end no two
    strategies have opposite live orders on the symbol, and no strategy has two live orders
    on one side."""
    names = ["demo"] + [StrategyFactory(name=f"s{i}").name for i in range(7)]
    bodies = [body(name, side) for name in names for side in ("BUY", "SELL")]
    passed, blocked = outcome(run_together(len(bodies), lambda i: through_webhook(bodies[i])))
    live = list(Order.objects.filter(status=Status.CREATED).values_list("strategy__name", "side"))
    assert len(live) == len(passed) >= 1
    # no two strategies opposite (one strategy may hold both sides: that is no cross conflict)
    assert not [(a, b) for a in live for b in live if a[0] != b[0] and a[1] != b[1]], live
    assert len(live) == len(set(live))  # no duplicates
    assert all(b["tag"] == DUPLICATE or b["tag"].startswith("GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT ")
               for b in blocked), blocked


def hold(strategy, side, qty, symbol="RELIANCE-EQ"):
    """An executed order, and so an open position, through the real pipeline."""
    [reply] = through_webhook(body(strategy, side, symbol=symbol, qty=qty))
    assert submit_order(reply["command_id"]) == "accepted"
    OrderWatcher().poll_once()
    assert Order.objects.get(command_id=reply["command_id"]).status == Status.EXECUTED


def test_two_exits_that_only_fit_one_at_a_time(paper_instruments, strategy):
    hold("demo", "BUY", 10)
    results = run_together(2, lambda i: through_webhook(body(execution_type="EXIT", side="SELL", qty=6)))
    passed, blocked = outcome(results)
    assert len(passed) == 1 and [b["tag"] for b in blocked] == ["GUARD_BLOCKED:EXIT_EXCEEDS_POSITION"]


def test_eight_exits_of_a_position_of_five_let_exactly_five_through(paper_instruments, strategy):
    hold("demo", "BUY", 5)
    results = run_together(8, lambda i: through_webhook(body(execution_type="EXIT", side="SELL", qty=1)))
    passed, blocked = outcome(results)
    assert len(passed) == 5 and [b["tag"] for b in blocked] == ["GUARD_BLOCKED:EXIT_EXCEEDS_POSITION"] * 3


def test_a_fill_committing_during_the_guard_read_does_not_block_a_fitting_exit(paper_instruments, strategy,
                                                                               monkeypatch):
    """A live exit fills (order update and position update in one transaction) while another
    intake's guard is reading: the guard must see either both sides of that fill or neither,
    never the exit's remainder and the reduced position together (that double count would
    block a fitting exit)."""
    hold("demo", "BUY", 10)
    [first] = through_webhook(body(execution_type="EXIT", side="SELL", qty=6))
    exit_ = Order.objects.get(command_id=first["command_id"])
    lifecycle.move(exit_, Status.SENT_TO_BROKER, actor="worker")
    lifecycle.annotate(exit_, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id="B-1")

    real_day_start = guard.trading_day_start
    fired = threading.Event()

    def fill_in_between():
        def fill():
            try:
                lifecycle.move(Order.objects.get(pk=exit_.pk), Status.EXECUTED, actor="watcher", filled_qty=6,
                               avg_price=Decimal("2950"))
            finally:
                connection.close()

        t = threading.Thread(target=fill)
        t.start()
        t.join(timeout=20)
        fired.set()

    def day_start_then_fill(*args, **kwargs):  # called while the guard prepares its read
        if not fired.is_set() and threading.current_thread() is threading.main_thread():
            fill_in_between()
        return real_day_start(*args, **kwargs)

    monkeypatch.setattr(guard, "trading_day_start", day_start_then_fill)
    # the remaining position is 4 after the fill: an exit of 4 fits, whatever the timing
    [reply] = through_service(body(execution_type="EXIT", side="SELL", qty=4))
    assert fired.is_set()
    assert (reply["status"], reply["tag"]) == (Status.CREATED, ""), reply
    assert Position.objects.get(strategy__name="demo").net_qty == 4


def test_multi_leg_alerts_on_overlapping_new_instruments_do_not_deadlock(paper_instruments, strategy):
    """Intakes whose legs share instruments that have no lock row yet, in every order, many
    rounds: the lock rows are taken (and created) in one fixed order, so PostgreSQL never has
    to break a deadlock by failing an intake."""
    rng = random.Random(4)
    for name in ("a", "b", "c", "d", "e", "f"):
        StrategyFactory(name=name)
    for round_ in range(12):
        pool = [f"NEW{round_}-{k}-EQ" for k in range(4)]  # fresh symbols: no lock rows yet
        bodies = []
        for name in ("a", "b", "c", "d", "e", "f"):
            symbols = rng.sample(pool, 3)
            bodies.append(body(name, legs=[{"symbol": s, "side": "BUY", "qty": 1, "order_type": "MARKET",
                                            "product": "MIS"} for s in symbols]))
        results = run_together(len(bodies), lambda i: through_service(bodies[i]))
        assert not [r for r in results if isinstance(r, Exception)], (round_, results)
        assert GuardLock.objects.filter(symbol__in=pool).count() == len(set().union(
            *[{leg["symbol"] for leg in b["legs"]} for b in bodies]))


def test_the_lock_is_held_until_the_intake_commits(paper_instruments, strategy):
    """A second intake on the instrument waits for the first one's transaction, and then sees
    its order."""
    through_service(body(symbol="SBIN-EQ"))  # the lock row exists
    inside, release = threading.Event(), threading.Event()

    def hold_lock():
        try:
            with transaction.atomic():
                guard.lock_instruments("NSE", ["RELIANCE-EQ"])
                inside.set()
                release.wait(timeout=20)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert inside.wait(timeout=20)
    result = {}
    waiter = threading.Thread(target=lambda: (result.setdefault("r", through_service(body())), connection.close()))
    waiter.start()
    waiter.join(timeout=1)
    assert waiter.is_alive()  # blocked on the lock row
    release.set()
    holder.join(timeout=20)
    waiter.join(timeout=20)
    assert result["r"][0]["status"] == Status.CREATED
