"""The OrderWatcher against the paper broker (real submissions) and a fake order book."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from brokers import paper
from brokers.base import BookEntry, Broker, BrokerUnavailable, normalize_status
from brokers.models import Behaviour, PaperInstrument, PaperOrder
from orders import lifecycle
from orders.models import EventKind, Order, Position, Status
from orders.queue import SUBMIT_TASK, enqueue_submissions
from orders.submission import submit_order
from orders.watcher import OrderWatcher
from tests.factories import OrderFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trading_day_began_an_hour_ago")]


class FakeBroker(Broker):
    """An order book we write by hand; counts reads, can fail them or run a hook first."""

    def __init__(self, entries=(), fail=None, on_read=None):
        self.entries, self.fail, self.on_read, self.reads = list(entries), fail, on_read, 0

    def order_book(self):
        self.reads += 1
        if self.on_read:
            self.on_read()
        if self.fail:
            raise self.fail
        return list(self.entries)


def entry(order, raw, filled=0, avg=None, reason=""):
    return BookEntry(f"B-{order.command_id}", order.command_id, normalize_status(raw), raw, filled, avg, reason)


def placed(symbol="RELIANCE-EQ", behaviour=None, **fields) -> Order:
    """A real submission of a new order through the paper broker."""
    if behaviour:
        PaperInstrument.objects.filter(symbol=symbol).update(behaviour=behaviour)
    order = OrderFactory(symbol=symbol, **fields)
    submit_order(order.command_id)
    order.refresh_from_db()
    return order


def sent(broker_id=True, **fields) -> Order:
    """CREATED -> SENT_TO_BROKER by the claim, with the broker id stored unless told not to
    (no broker id and no broker call: a worker that crashed between claim and call)."""
    order = OrderFactory(**fields)
    lifecycle.move(order, Status.SENT_TO_BROKER, actor="worker")
    if broker_id:
        lifecycle.annotate(order, kind=EventKind.BROKER_ACCEPTED, actor="worker",
                           broker_order_id=f"B-{order.command_id}")
    return order


def backdate(order, seconds, field="sent_at"):
    Order.objects.filter(pk=order.pk).update(**{field: timezone.now() - timedelta(seconds=seconds)})


def make_due(order):
    PaperOrder.objects.filter(client_order_id=order.command_id).update(due_at=timezone.now())


def poll(order=None, watcher=None, times=1):
    watcher = watcher or OrderWatcher()
    for _ in range(times):
        watcher.poll_once()
    if order is not None:
        order.refresh_from_db()
    return order


def kinds(order):
    return list(order.events.values_list("kind", flat=True))


@pytest.mark.parametrize("order_type, price, avg", [
    ("MARKET", None, Decimal("2950")),
    ("LIMIT", Decimal("2940.5"), Decimal("2940.5")),
])
def test_complete_executes_with_fills_from_the_book(order_type, price, avg):
    order = poll(placed(qty=10, order_type=order_type, price=price))
    assert (order.status, order.filled_qty, order.avg_price, order.tag) == (Status.EXECUTED, 10, avg, "")
    assert order.events.last().actor == "watcher"


def test_late_reject_fails_with_the_papers_reason_verbatim():
    order = poll(placed(symbol="SBIN-EQ", behaviour=Behaviour.REJECT_LATER))
    assert (order.status, order.tag) == (Status.FAILED, f"BROKER_REJECTED:{paper.LATE_REJECT_REASON}")
    assert kinds(order)[-1] == EventKind.BROKER_REJECTED


def test_cancel_after_partial_fill_keeps_the_fill(settings):
    settings.PAPER_FILL_DELAY_S = 3600
    order = placed(symbol="INFY-EQ", behaviour=Behaviour.CANCEL_AFTER_PARTIAL, qty=7)
    watcher = OrderWatcher()
    assert poll(order, watcher).filled_qty == 0  # not due yet: OPEN, nothing filled
    make_due(order)
    assert (poll(order, watcher).status, order.filled_qty) == (Status.SENT_TO_BROKER, 3)
    assert kinds(order)[-1] == EventKind.FILL
    assert poll(order, watcher).status == Status.SENT_TO_BROKER  # the rest is not due yet
    make_due(order)
    poll(order, watcher)
    assert order.status == Status.FAILED
    assert order.tag == f"BROKER_CANCELLED:{paper.CANCEL_REASON} filled 3/7"
    assert (order.filled_qty, order.avg_price) == (3, Decimal("1875.25"))
    assert kinds(order)[-2:] == [EventKind.FILL, EventKind.FAILED]


@pytest.mark.parametrize("raw, filled, status, tag", [
    ("CANCELED", 4, Status.FAILED, "BROKER_CANCELLED:cut filled 4/10"),  # Noren's spelling
    ("CANCELLED", 4, Status.FAILED, "BROKER_CANCELLED:cut filled 4/10"),
    ("EXPIRED", 0, Status.FAILED, "BROKER_EXPIRED:cut filled 0/10"),
    ("REJECTED", 0, Status.FAILED, "BROKER_REJECTED:cut"),
    ("COMPLETE", 10, Status.EXECUTED, ""),
    ("SOMETHING NEW", 4, Status.SENT_TO_BROKER, ""),  # not understood: left alone
])
def test_book_statuses(raw, filled, status, tag):
    order = sent(qty=10)
    before = order.events.count()
    poll(order, OrderWatcher(broker=FakeBroker([entry(order, raw, filled, Decimal("101.5"), "cut")])))
    assert (order.status, order.tag) == (status, tag)
    if status == Status.SENT_TO_BROKER:
        assert (order.filled_qty, order.events.count()) == (0, before)
    else:
        assert (order.filled_qty, order.avg_price) == (filled, Decimal("101.5"))


def test_a_partial_fill_is_one_event_however_precise_the_brokers_average():
    """The stored average has 4 decimal places; a broker average with more (CDS, or many fills)
    must not look like fill progress on every pass."""
    order = sent(qty=10)
    poll(order, OrderWatcher(broker=FakeBroker([entry(order, "OPEN", 3, Decimal("100.123456"))])), times=4)
    assert [e.kind for e in order.events.all()].count(EventKind.FILL) == 1
    assert (order.filled_qty, order.avg_price) == (3, Decimal("100.1235"))


@pytest.mark.parametrize("filled, avg", [(3, Decimal("100")), (5, None)])
def test_a_lagging_report_of_fewer_fills_or_no_average_changes_nothing(filled, avg):
    order = sent(qty=10)
    lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=5, avg_price=Decimal("100"))
    before = order.events.count()
    poll(order, OrderWatcher(broker=FakeBroker([entry(order, "OPEN", filled, avg)])), times=3)
    assert (order.filled_qty, order.avg_price, order.events.count()) == (5, Decimal("100"), before)


def test_in_doubt_order_is_adopted_from_the_book_after_the_read_timeout(settings):
    settings.BROKER_READ_TIMEOUT_S = 10
    order = placed(behaviour=Behaviour.TIMEOUT_ON_PLACE)
    assert (order.status, order.broker_order_id) == (Status.SENT_TO_BROKER, None)
    assert order.tag.startswith("BROKER_IN_DOUBT:")
    watcher = OrderWatcher()
    for seconds in (0, 14):  # the worker may still be waiting for the reply: hands off
        backdate(order, seconds)
        assert poll(order, watcher).broker_order_id is None
    backdate(order, 16)
    poll(order, watcher)
    [paper_order] = PaperOrder.objects.filter(client_order_id=order.command_id)  # never resent
    assert (order.broker_order_id, order.tag, order.status) == (paper_order.broker_order_id, "", Status.EXECUTED)
    adopted = order.events.get(kind=EventKind.BROKER_ID_ADOPTED)
    assert (adopted.actor, adopted.tag, adopted.to_status) == ("watcher", "", Status.SENT_TO_BROKER)


def test_order_missing_from_the_book_fails_as_unknown_only_after_grace_and_three_good_reads(settings):
    settings.IN_DOUBT_GRACE_S, settings.IN_DOUBT_MIN_READS = 60, 3
    order = sent(broker_id=False)  # claimed, never placed: no PaperOrder
    broker = FakeBroker()
    backdate(order, 30)  # in doubt, but within the grace period
    assert poll(order, OrderWatcher(broker), times=3).status == Status.SENT_TO_BROKER
    backdate(order, 61)
    watcher = OrderWatcher(broker)
    broker.fail = BrokerUnavailable("broker down")
    assert poll(order, watcher, times=5).status == Status.SENT_TO_BROKER  # failed reads don't count
    broker.fail = None
    assert poll(order, watcher, times=2).status == Status.SENT_TO_BROKER
    assert poll(order, watcher).status == Status.FAILED
    assert order.tag.startswith("BROKER_UNKNOWN:")
    assert broker.reads == 3 + 5 + 3


def test_broker_id_stored_while_the_pass_runs_is_not_failed_as_unknown(settings):
    settings.IN_DOUBT_GRACE_S, settings.IN_DOUBT_MIN_READS = 0, 1
    order = sent(broker_id=False)
    backdate(order, 61)

    def late_reply():  # the worker stores the broker's answer while the watcher's pass runs
        lifecycle.annotate(Order.objects.get(pk=order.pk), kind=EventKind.BROKER_ACCEPTED, actor="worker",
                           broker_order_id="LATE")

    poll(order, OrderWatcher(FakeBroker(on_read=late_reply)))
    # The pass loads the orders it acts on after the read: it sees the id, and asks no more.
    assert (order.status, order.broker_order_id, order.events.last().kind) == (
        Status.SENT_TO_BROKER, "LATE", EventKind.BROKER_ACCEPTED)


@pytest.mark.parametrize("error", [BrokerUnavailable("down"), ValueError("garbage reply"), ConnectionError()])
def test_a_failed_read_is_not_a_pass_and_does_not_raise(error):
    order = sent()
    assert OrderWatcher(FakeBroker([entry(order, "COMPLETE", 10)], fail=error)).poll_once() is False
    assert poll(order).status == Status.SENT_TO_BROKER


@pytest.mark.parametrize("paper_status, filled, status", [
    ("OPEN", 0, Status.SENT_TO_BROKER),
    ("COMPLETE", 10, Status.EXECUTED),
])
def test_unknown_order_that_shows_up_at_the_broker_is_recovered(paper_status, filled, status):
    order = sent(broker_id=False, qty=10)
    lifecycle.move(order, Status.FAILED, actor="watcher", tag="BROKER_UNKNOWN:gone")
    PaperOrder.objects.create(
        broker_order_id="LATE1", client_order_id=order.command_id, exchange="NSE", symbol=order.symbol,
        side="BUY", qty=10, order_type="MARKET", product="MIS", fill_price=Decimal("2950"),
        behaviour=Behaviour.NORMAL, status=paper_status, filled_qty=filled,
        avg_price=Decimal("2950") if filled else None, due_at=timezone.now() + timedelta(hours=1),
    )
    poll(order)
    assert (order.status, order.broker_order_id, order.filled_qty) == (status, "LATE1", filled)
    recovered = order.events.last()
    assert (recovered.kind, recovered.actor, recovered.from_status) == (EventKind.RECOVERED, "watcher", Status.FAILED)
    assert poll(order).events.count() == order.events.count()  # nothing more to do


@pytest.mark.parametrize("raw, tag", [
    ("CANCELED", "BROKER_CANCELLED:ioc cut filled 4/10"),
    ("EXPIRED", "BROKER_EXPIRED:ioc cut filled 4/10"),
])
def test_unknown_order_that_the_broker_filled_in_part_then_ended_keeps_its_fill(raw, tag):
    """An order failed as BROKER_UNKNOWN that shows up already cancelled (or expired) after a
    partial fill: the fill is ours, and the position must hold it."""
    order = sent(broker_id=False, qty=10)
    lifecycle.move(order, Status.FAILED, actor="watcher", tag="BROKER_UNKNOWN:gone")
    poll(order, OrderWatcher(FakeBroker([entry(order, raw, 4, Decimal("100"), "ioc cut")])))
    assert (order.status, order.tag, order.broker_order_id) == (Status.FAILED, tag, f"B-{order.command_id}")
    assert (order.filled_qty, order.avg_price) == (4, Decimal("100"))
    assert Position.objects.get(strategy=order.strategy, symbol=order.symbol).net_qty == 4
    kinds = [e.kind for e in order.events.all()]
    assert kinds[-2:] == [EventKind.RECOVERED, EventKind.FAILED]
    assert poll(order).events.count() == len(kinds)  # nothing more to do


def test_unknown_order_that_the_broker_rejected_stays_failed_untouched():
    order = sent(broker_id=False, qty=10)
    lifecycle.move(order, Status.FAILED, actor="watcher", tag="BROKER_UNKNOWN:gone")
    before = order.events.count()
    poll(order, OrderWatcher(FakeBroker([entry(order, "REJECTED", 0, None, "margin")])))
    assert (order.status, order.tag, order.events.count()) == (Status.FAILED, "BROKER_UNKNOWN:gone", before)


def test_a_recovery_that_breaks_is_a_conflict_not_an_exception():
    holder, lost = sent(), sent(broker_id=False)
    lifecycle.move(lost, Status.FAILED, actor="watcher", tag="BROKER_UNKNOWN:gone")
    # The broker reports the lost order under an id another order already has.
    clash = BookEntry(holder.broker_order_id, lost.command_id, normalize_status("OPEN"), "OPEN")
    watcher = OrderWatcher(FakeBroker([clash]))
    assert watcher.poll_once() is True and watcher.poll_once() is True
    lost.refresh_from_db()
    assert lost.status == Status.FAILED
    assert lost.events.filter(kind=EventKind.CONFLICT).count() == 1  # not one per pass


def queued_submissions():
    tasks = (SignedPackage.loads(q.payload) for q in OrmQ.objects.order_by("id"))
    return [t["args"] for t in tasks if t["func"] == SUBMIT_TASK]


def test_lost_created_order_is_re_enqueued_once(settings):
    settings.REQUEUE_CREATED_AFTER_S = 10
    lost, fresh = OrderFactory(), OrderFactory()
    backdate(lost, 11, field="created_at")
    watcher = OrderWatcher(FakeBroker())
    poll(watcher=watcher)
    assert queued_submissions() == [(lost.command_id,)]
    poll(watcher=watcher)  # not again on the very next pass
    assert queued_submissions() == [(lost.command_id,)]
    assert fresh.command_id not in str(queued_submissions())


def test_created_orders_behind_a_busy_queue_are_not_re_enqueued_until_it_drains(settings):
    """Under a burst, orders wait in the queue longer than REQUEUE_CREATED_AFTER_S without
    being lost: resending them would double the queue's work."""
    settings.REQUEUE_CREATED_AFTER_S = 10
    behind = OrderFactory()
    backdate(behind, 11, field="created_at")
    enqueue_submissions([OrderFactory().command_id])  # another order's task still waits
    watcher = OrderWatcher(FakeBroker())
    poll(watcher=watcher)
    assert (behind.command_id,) not in queued_submissions()
    OrmQ.objects.all().delete()  # the queue drained, and this order's task was lost after all
    poll(watcher=watcher)
    assert queued_submissions() == [(behind.command_id,)]


def _raise_for(victim, monkeypatch, broker):
    real_move = lifecycle.move

    def move(order, *args, **kwargs):
        if order.pk == victim.pk:
            raise RuntimeError("boom")
        return real_move(order, *args, **kwargs)

    monkeypatch.setattr(lifecycle, "move", move)


def _changed_behind_our_back(victim, monkeypatch, broker):
    # Another writer moves the order after the watcher listed it: its copy is stale.
    broker.on_read = lambda: lifecycle.move(Order.objects.get(pk=victim.pk), Status.FAILED, actor="worker", tag="X")


@pytest.mark.parametrize("sabotage", [_raise_for, _changed_behind_our_back])
def test_a_conflict_is_recorded_and_the_pass_goes_on(sabotage, monkeypatch):
    orders = [sent() for _ in range(3)]
    broker = FakeBroker([entry(o, "COMPLETE", o.qty, Decimal("10")) for o in orders])
    sabotage(orders[1], monkeypatch, broker)
    assert OrderWatcher(broker).poll_once() is True
    for order in orders:
        order.refresh_from_db()
    assert [o.status for o in orders[::2]] == [Status.EXECUTED, Status.EXECUTED]
    conflict = orders[1].events.last()
    assert (conflict.kind, conflict.actor) == (EventKind.CONFLICT, "watcher")
    assert orders[1].status != Status.EXECUTED


def _pass_queries(watcher):
    with CaptureQueriesContext(connection) as ctx:
        watcher.poll_once()
    return len(ctx.captured_queries)


def test_queries_per_pass_do_not_grow_with_unchanged_orders(settings):
    settings.PAPER_FILL_DELAY_S = 3600  # every order stays OPEN at the broker
    watcher = OrderWatcher()
    watcher.poll_once()  # the minute's read of the broker's funds
    counts = {}
    for n in (2, 20):
        while Order.objects.filter(status=Status.SENT_TO_BROKER).count() < n:
            placed()
        counts[n] = _pass_queries(watcher)
    # lost-task check, the rejected-alert prune check, live orders, unknown-recovery check,
    # the paper broker's book and position reads (5), the position snapshot (delete +
    # insert), the funds' age, protected orders still open, the square-offs (due by time, MTM
    # limits, waiting requests), waiting follow-up entries, external orders that turned out
    # ours, the test's savepoint pair
    assert counts[2] == counts[20] <= 19
    changed = Order.objects.filter(status=Status.SENT_TO_BROKER)[:3]
    for order in changed:
        make_due(order)
    # per changed order: its audit head's read, its update, its strategy's lock (PostgreSQL), its
    # position (read, write; created on first fill: +3), its fill and its audit row, inside a
    # transaction; and the paper broker's own fill of it
    assert _pass_queries(watcher) <= counts[20] + 13 * len(changed)
    assert Order.objects.filter(status=Status.EXECUTED).count() == 3


def test_the_order_book_is_read_once_per_pass():
    with_id, in_doubt, open_ = sent(), sent(broker_id=False), sent()
    backdate(in_doubt, 30)
    unknown = sent(broker_id=False)
    lifecycle.move(unknown, Status.FAILED, actor="watcher", tag="BROKER_UNKNOWN:gone")
    broker = FakeBroker([entry(with_id, "COMPLETE", 10), entry(in_doubt, "OPEN"), entry(open_, "OPEN"),
                         entry(unknown, "OPEN")])
    poll(watcher=OrderWatcher(broker))
    assert broker.reads == 1
    assert [poll(o, OrderWatcher(FakeBroker())).status for o in (with_id, in_doubt, unknown)] == [
        Status.EXECUTED, Status.SENT_TO_BROKER, Status.SENT_TO_BROKER]
    assert in_doubt.broker_order_id and unknown.broker_order_id


# --- orders from a past trading day -------------------------------------------------------

class HistoryBroker(FakeBroker):
    """An empty book, and a single-order history that answers `history` (or raises it)."""

    def __init__(self, history=None):
        super().__init__()
        self.history = history

    def order_status(self, broker_order_id):
        if isinstance(self.history, Exception):
            raise self.history
        return self.history


def test_an_order_from_a_past_day_that_the_broker_no_longer_knows_is_failed_as_unknown():
    order = sent()
    backdate(order, 2 * 24 * 3600)
    poll(order, OrderWatcher(HistoryBroker()))
    assert (order.status, order.tag) == (
        Status.FAILED, "BROKER_UNKNOWN:not in the broker's order book or history after its trading day")


@pytest.mark.parametrize("history", [None, BrokerUnavailable("down")], ids=["today", "history unavailable"])
def test_an_order_missing_from_the_book_is_kept_while_its_day_lasts_or_the_broker_cannot_tell(history):
    order = sent()
    if history is not None:
        backdate(order, 2 * 24 * 3600)
    poll(order, OrderWatcher(HistoryBroker(history)), times=3)
    assert order.status == Status.SENT_TO_BROKER


def test_a_paper_order_that_left_the_days_book_is_read_from_its_history(settings):
    settings.PAPER_FILL_DELAY_S = 3600
    order = placed()
    PaperOrder.objects.filter(client_order_id=order.command_id).update(
        placed_at=timezone.now() - timedelta(days=2), due_at=timezone.now())
    poll(order)
    assert (order.status, order.filled_qty) == (Status.EXECUTED, order.qty)


# --- pushed updates (the feed's path through the same code) ---------------------------------

def test_a_pushed_update_goes_through_the_passes_code():
    order = sent()
    watcher = OrderWatcher(FakeBroker())
    watcher.apply_update(entry(order, "OPEN", 4, Decimal("10")))
    order.refresh_from_db()
    assert (order.status, order.filled_qty, kinds(order)[-1]) == (Status.SENT_TO_BROKER, 4, EventKind.FILL)
    watcher.apply_update(BookEntry(order.broker_order_id, "", normalize_status("COMPLETE"), "COMPLETE", 10,
                                   Decimal("10"), fill_id="B:7"))
    order.refresh_from_db()
    assert order.status == Status.EXECUTED
    assert list(order.fills.values_list("qty", "cum_qty", "broker_fill_id")) == [(4, 4, None), (6, 10, "B:7")]


def test_a_pushed_acknowledgement_adopts_an_order_without_a_broker_id_at_once():
    order = sent(broker_id=False)  # the worker still waits for the broker's reply
    workers_copy = order_copy(order)
    OrderWatcher(FakeBroker()).apply_update(entry(order, "PENDING"))
    order.refresh_from_db()
    assert (order.status, order.broker_order_id) == (Status.SENT_TO_BROKER, f"B-{order.command_id}")
    assert kinds(order)[-1] == EventKind.BROKER_ID_ADOPTED
    # The worker's reply arrives afterwards: it loses the compare-and-set and records nothing.
    assert not lifecycle.annotate(workers_copy, kind=EventKind.BROKER_ACCEPTED, actor="worker",
                                  broker_order_id=order.broker_order_id)
    assert kinds(order)[-1] == EventKind.BROKER_ID_ADOPTED


def order_copy(order, **fields):
    copy = Order.objects.get(pk=order.pk)
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


def test_updates_for_orders_not_ours_or_already_ended_change_nothing():
    ended = sent()
    lifecycle.move(ended, Status.EXECUTED, actor="watcher", filled_qty=10, avg_price=Decimal("10"))
    watcher = OrderWatcher(FakeBroker())
    watcher.apply_update(entry(ended, "CANCELED"))
    watcher.apply_update(BookEntry("NOT-OURS", "someone-else", normalize_status("COMPLETE"), "COMPLETE", 1))
    ended.refresh_from_db()
    assert ended.status == Status.EXECUTED and kinds(ended)[-1] == EventKind.EXECUTED


@pytest.mark.parametrize("report", [("OPEN", 4), ("COMPLETE", 10)], ids=["fill", "complete"])
def test_the_feed_and_a_pass_reporting_the_same_fill_count_it_once_without_a_conflict(report):
    raw, filled = report
    order = sent()
    stale = order_copy(order)  # the pass listed the order before the feed's update landed
    OrderWatcher(FakeBroker()).apply_update(entry(order, raw, filled, Decimal("10")))
    OrderWatcher(FakeBroker())._apply(stale, entry(order, raw, filled, Decimal("10")))
    order.refresh_from_db()
    assert order.filled_qty == filled and order.fills.count() == 1
    assert EventKind.CONFLICT not in kinds(order)
    assert Position.objects.get(symbol=order.symbol).net_qty == filled


def test_a_real_disagreement_after_a_lost_race_is_still_a_conflict():
    order = sent()
    stale = order_copy(order)
    lifecycle.move(order_copy(order), Status.FAILED, actor="worker", tag="BROKER_CANCELLED:by test filled 0/10")
    OrderWatcher(FakeBroker())._apply(stale, entry(order, "COMPLETE", 10, Decimal("10")))
    assert kinds(order)[-1] == EventKind.CONFLICT


def test_a_pass_loads_only_the_orders_whose_entries_changed(settings):
    settings.PAPER_FILL_DELAY_S = 3600
    orders = [placed() for _ in range(6)]
    watcher = OrderWatcher()
    watcher.poll_once()
    make_due(orders[0])
    with CaptureQueriesContext(connection) as ctx:
        watcher.poll_once()
    # The five unchanged working orders are passed over as tuples; only the changed one is loaded.
    loads = [q["sql"] for q in ctx.captured_queries if '"orders_order"."id" IN (' in q["sql"]]
    assert len(loads) == 1 and f'"orders_order"."id" IN ({orders[0].pk})' in loads[0]
    assert Order.objects.get(pk=orders[0].pk).status == Status.EXECUTED
