"""orders.lifecycle: the one place an order's state changes."""

import itertools
import logging
from datetime import timedelta

import pytest
from django.db import DataError, connection, transaction
from django.utils import timezone

from orderdesk import statements
from orders import lifecycle
from orders.lifecycle import ALLOWED, IllegalTransition, annotate, move
from orders.models import EventKind, Order, OrderEvent, Status
from tests.factories import OrderFactory, trail

pytestmark = pytest.mark.django_db

S = Status
TERMINAL_RECONFIRM = {(S.EXECUTED, S.EXECUTED), (S.FAILED, S.FAILED)}
ILLEGAL = sorted(set(itertools.product(S.values, repeat=2)) - ALLOWED - TERMINAL_RECONFIRM) + [(S.CREATED, "BOGUS")]
UNKNOWN = "BROKER_UNKNOWN:not in the book"
HOUR_AGO = timezone.now() - timedelta(hours=1)


def order_in(status, **fields):
    return OrderFactory(status=status, created_at=HOUR_AGO, **fields)


def db_row(order):
    return Order.objects.values().get(pk=order.pk)


EXPECTED_KIND = {S.SENT_TO_BROKER: "CLAIMED", S.EXECUTED: "EXECUTED", S.FAILED: "FAILED"}


@pytest.mark.parametrize("frm,to", sorted(ALLOWED))
def test_allowed_move_writes_one_event_and_the_row(frm, to):
    order = order_in(frm)
    assert move(order, to, actor="someone", tag="T:x", detail="why") is True
    row = db_row(order)
    assert (row["status"], row["tag"]) == (to, "T:x")
    assert row["updated_at"] > HOUR_AGO and order.updated_at == row["updated_at"]
    assert (row["sent_at"] is not None) == ((frm, to) == (S.CREATED, S.SENT_TO_BROKER))
    [event] = order.events.all()
    assert (event.kind, event.from_status, event.to_status, event.tag, event.actor, event.detail) == (
        EXPECTED_KIND[to], frm, to, "T:x", "someone", "why")
    assert event.at == row["updated_at"]
    assert order.status == to  # the caller's copy follows


def test_caller_kind_and_unchanged_tag():
    order = order_in(S.SENT_TO_BROKER, tag="KEEP")
    assert move(order, S.FAILED, actor="watcher", kind=EventKind.BROKER_REJECTED)
    assert trail(order) == [("BROKER_REJECTED", S.SENT_TO_BROKER, S.FAILED, "KEEP", "watcher")]


@pytest.mark.parametrize("frm,to", ILLEGAL)
def test_illegal_move_raises_and_writes_nothing(frm, to):
    order = order_in(frm)
    before = db_row(order)
    with pytest.raises(IllegalTransition):
        move(order, to, actor="watcher", tag="X")
    assert db_row(order) == before
    assert not OrderEvent.objects.exists()


@pytest.mark.parametrize("status", [S.EXECUTED, S.FAILED])
def test_reconfirming_a_terminal_state_is_a_noop(status):
    order = order_in(status, tag="FIRST")
    before = db_row(order)
    assert move(order, status, actor="watcher", tag="SECOND") is False
    assert db_row(order) == before
    assert not OrderEvent.objects.exists()


@pytest.mark.parametrize("loser_to", [S.SENT_TO_BROKER, S.FAILED])
def test_compare_and_set_stale_copy_loses(loser_to):
    order = order_in(S.CREATED)
    first, stale = Order.objects.get(pk=order.pk), Order.objects.get(pk=order.pk)
    assert move(first, S.SENT_TO_BROKER, actor="worker:1") is True
    after_winner = db_row(order)
    assert move(stale, loser_to, actor="worker:2", tag="LOSER") is False
    assert db_row(order) == after_winner
    assert trail(order) == [("CLAIMED", S.CREATED, S.SENT_TO_BROKER, "", "worker:1")]
    assert stale.status == S.CREATED  # a loser's copy is not dressed up as the winner's


@pytest.mark.parametrize("to", [S.SENT_TO_BROKER, S.EXECUTED])
def test_recovery_from_broker_unknown_by_the_watcher(to):
    order = order_in(S.FAILED, tag=UNKNOWN)
    assert move(order, to, actor="watcher", tag="BROKER_RECOVERED:x", broker_order_id="B1") is True
    assert (db_row(order)["status"], db_row(order)["broker_order_id"]) == (to, "B1")
    assert trail(order) == [("RECOVERED", S.FAILED, to, "BROKER_RECOVERED:x", "watcher")]


@pytest.mark.parametrize("to", [S.SENT_TO_BROKER, S.EXECUTED])
@pytest.mark.parametrize("tag,actor", [(UNKNOWN, "worker"), (UNKNOWN, "dashboard:admin"),
                                       ("BROKER_REJECTED:nope", "watcher"), ("", "watcher")])
def test_recovery_needs_the_watcher_and_an_unknown_tag(to, tag, actor):
    order = order_in(S.FAILED, tag=tag)
    with pytest.raises(IllegalTransition):
        move(order, to, actor=actor)
    assert db_row(order)["status"] == S.FAILED and not OrderEvent.objects.exists()


def test_recovery_from_a_stale_unknown_copy_loses():
    """Recovered, then failed for real: an old copy still tagged BROKER_UNKNOWN must not reopen it."""
    order = order_in(S.FAILED, tag=UNKNOWN)
    stale = Order.objects.get(pk=order.pk)
    assert move(order, S.SENT_TO_BROKER, actor="watcher", broker_order_id="B1")
    assert move(order, S.FAILED, actor="watcher", tag="BROKER_REJECTED:late")
    assert move(stale, S.EXECUTED, actor="watcher") is False
    assert (db_row(order)["status"], db_row(order)["tag"]) == (S.FAILED, "BROKER_REJECTED:late")
    assert order.events.count() == 2


@pytest.mark.parametrize("status", [S.CREATED, S.EXECUTED, S.FAILED])
def test_annotate_needs_sent_to_broker(status):
    order = order_in(status)
    with pytest.raises(IllegalTransition):
        annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=1)
    assert not OrderEvent.objects.exists()


def test_annotate_writes_an_event_without_moving_the_status():
    order = order_in(S.SENT_TO_BROKER)
    assert annotate(order, kind=EventKind.FILL, actor="watcher", detail="filled 4/10", filled_qty=4) is True
    row = db_row(order)
    assert (row["status"], row["filled_qty"]) == (S.SENT_TO_BROKER, 4) and row["updated_at"] > HOUR_AGO
    assert trail(order) == [("FILL", S.SENT_TO_BROKER, S.SENT_TO_BROKER, "", "watcher")]


def test_annotate_broker_id_is_compare_and_set():
    order = order_in(S.SENT_TO_BROKER)
    stale = Order.objects.get(pk=order.pk)
    assert annotate(order, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id="B1") is True
    for copy in (stale, order):
        assert annotate(copy, kind=EventKind.BROKER_ID_ADOPTED, actor="watcher", broker_order_id="B2") is False
    assert db_row(order)["broker_order_id"] == "B1"
    assert [e[0] for e in trail(order)] == ["BROKER_ACCEPTED"]


def test_annotate_on_a_stale_live_copy_of_a_finished_order_loses():
    order = order_in(S.SENT_TO_BROKER)
    stale = Order.objects.get(pk=order.pk)
    move(order, S.EXECUTED, actor="watcher")
    assert annotate(stale, kind=EventKind.FILL, actor="watcher", filled_qty=3) is False
    assert db_row(order)["filled_qty"] == 0 and order.events.count() == 1


@pytest.mark.parametrize("field,value", [("status", S.EXECUTED), ("qty", 99), ("symbol", "SBIN-EQ"),
                                         ("sent_at", HOUR_AGO), ("updated_at", HOUR_AGO), ("command_id", "x")])
@pytest.mark.parametrize("call", ["move", "annotate"])
def test_only_state_fields_can_change(call, field, value):
    order = order_in(S.SENT_TO_BROKER)
    before = db_row(order)
    with pytest.raises(ValueError):
        if call == "move":
            move(order, S.FAILED, actor="watcher", **{field: value})
        else:
            annotate(order, kind=EventKind.FILL, actor="watcher", **{field: value})
    assert db_row(order) == before and not OrderEvent.objects.exists()


def test_long_tags_are_truncated_in_row_and_event():
    order = order_in(S.CREATED)
    move(order, S.FAILED, actor="guard", tag="GUARD_BLOCKED:" + "x" * 500)
    assert len(db_row(order)["tag"]) == 255 and order.events.get().tag == db_row(order)["tag"]


def test_every_transition_logs_command_id_from_to_tag_actor(caplog, django_capture_on_commit_callbacks):
    caplog.set_level(logging.INFO, logger="orderdesk.lifecycle")
    order = order_in(S.CREATED)
    with django_capture_on_commit_callbacks(execute=True):
        move(order, S.FAILED, actor="guard", tag="GUARD_BLOCKED:STALE_ORDER")
    [record] = [r for r in caplog.records if r.name == "orderdesk.lifecycle"]
    message = record.getMessage()
    for part in (order.command_id, "CREATED->FAILED", "GUARD_BLOCKED:STALE_ORDER", "actor=guard"):
        assert part in message


def test_a_rolled_back_transition_is_neither_logged_nor_heard(caplog, transactional_db):
    from django.db import transaction

    from orders.events import order_event

    heard = []
    order_event.connect(lambda **kw: heard.append(kw["event"].kind), weak=False, dispatch_uid="test-heard")
    caplog.set_level(logging.INFO, logger="orderdesk.lifecycle")
    try:
        order = order_in(S.CREATED)
        with pytest.raises(RuntimeError), transaction.atomic():
            move(order, S.FAILED, actor="guard", tag="GUARD_BLOCKED:STALE_ORDER")
            raise RuntimeError("the intake failed after the block")
        assert heard == [] and not [r for r in caplog.records if "CREATED->FAILED" in r.getMessage()]
        order = Order.objects.get(pk=order.pk)
        move(order, S.FAILED, actor="guard", tag="GUARD_BLOCKED:STALE_ORDER")  # outside a transaction
        assert heard == ["FAILED"]
    finally:
        order_event.disconnect(dispatch_uid="test-heard")


def test_event_and_update_are_one_transaction(monkeypatch):
    order = order_in(S.CREATED)
    before = db_row(order)
    order.audit_head = "not the row's"  # a stale copy: the transaction's path on every back end

    def boom(prepared):
        raise RuntimeError("audit insert failed")

    monkeypatch.setattr(statements.PreparedInsert, "run", boom)  # how the lifecycle writes its event
    with pytest.raises(RuntimeError):
        move(order, S.SENT_TO_BROKER, actor="worker")
    assert db_row(order) == before
    assert order.status == S.CREATED and order.sent_at is None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement move is PostgreSQL's")
def test_a_one_statement_move_whose_event_fails_changes_nothing():
    from tests.factories import RegisteredOrderFactory

    order = RegisteredOrderFactory(status=S.CREATED)
    before, events = db_row(order), order.events.count()
    with pytest.raises(DataError), transaction.atomic():  # the event's actor is over its 64 characters
        move(order, S.SENT_TO_BROKER, actor="w" * 65)
    assert db_row(order) == before and order.events.count() == events
    assert order.status == S.CREATED and order.sent_at is None


def test_record_conflict_leaves_a_trace_without_change():
    order = order_in(S.SENT_TO_BROKER)
    stale = Order.objects.get(pk=order.pk)
    move(order, S.EXECUTED, actor="watcher")
    lifecycle.record_conflict(stale, "watcher", "lost a race")
    assert trail(order)[-1] == ("CONFLICT", S.EXECUTED, S.EXECUTED, "", "watcher")
    assert db_row(order)["status"] == S.EXECUTED


def test_stale_copy_without_broker_id_cannot_fail_an_order_that_got_one():
    """The watcher lists an in-doubt order; the worker stores the broker id; the watcher's
    copy must not then fail it as unknown."""
    order = order_in(S.SENT_TO_BROKER)
    stale = Order.objects.get(pk=order.pk)
    annotate(order, kind=EventKind.BROKER_ACCEPTED, actor="worker", broker_order_id="B1")
    assert move(stale, S.FAILED, actor="watcher", tag=UNKNOWN) is False
    assert (db_row(order)["status"], db_row(order)["broker_order_id"]) == (S.SENT_TO_BROKER, "B1")
    assert [e[0] for e in trail(order)] == ["BROKER_ACCEPTED"]


# PostgreSQL: a move without a fill is its UPDATE and its event's INSERT in one statement
# (WITH … UPDATE … INSERT), outside any transaction; SQLite: the UPDATE, then the INSERT.
HEAD_CHECKED_MOVE = "WITH" if connection.vendor == "postgresql" else "UPDATE"


def _order_statements(counted) -> list[str]:
    """The statements on the orders table (SELECT … FOR NO KEY UPDATE on PostgreSQL is a SELECT)."""
    return [sql.split(" ", 1)[0] for sql in counted.sql if '"orders_order"' in sql.split(" WHERE ")[0]]


def test_a_current_copy_moves_in_one_update_that_checks_its_audit_head(data_statements):
    from tests.factories import RegisteredOrderFactory

    order = RegisteredOrderFactory(status=S.CREATED)
    head = order.audit_head
    with data_statements() as counted:
        assert move(order, S.SENT_TO_BROKER, actor="worker") is True
    assert _order_statements(counted) == [HEAD_CHECKED_MOVE]  # no read of the row before it
    if connection.vendor == "postgresql":
        assert len(counted.sql) == 1 and "INSERT INTO \"orders_orderevent\"" in counted.sql[0]  # no BEGIN, COMMIT
    assert db_row(order)["audit_head"] == order.audit_head != head
    assert order.events.latest("id").prev_hash == head


def test_a_copy_stale_in_what_the_move_leaves_alone_reads_the_row_and_takes_its_state(data_statements):
    from tests.factories import RegisteredOrderFactory

    order = RegisteredOrderFactory(status=S.CREATED)
    move(order, S.SENT_TO_BROKER, actor="worker")
    stale = Order.objects.get(pk=order.pk)
    assert annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=4, avg_price="10") is True
    # Same status and broker id: the stale copy still wins, from the row's state, not its own.
    with data_statements() as counted:
        assert annotate(stale, kind=EventKind.BROKER_IN_DOUBT, actor="worker", tag="BROKER_IN_DOUBT:timeout") is True
    assert _order_statements(counted) == [HEAD_CHECKED_MOVE, "SELECT", "UPDATE"]
    assert (stale.filled_qty, stale.avg_price) == (4, 10)
    last = order.events.latest("id")
    assert (last.kind, last.filled_qty, last.prev_hash) == (EventKind.BROKER_IN_DOUBT, 4, order.audit_head)
    assert db_row(order)["audit_head"] == stale.audit_head == last.hash
