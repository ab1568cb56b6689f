"""The verifiable audit trail (orders.audit, `manage.py verify_audit`): a per-order hash chain
over the events, and every order and position recomputed from its events and fills. A clean
desk verifies; a row changed behind orders.lifecycle's back (SQL) is reported with the
order's command id. (Every test's own orders are verified after it too: conftest.py.)"""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.authtoken.models import Token

from brokers.models import Behaviour, PaperInstrument
from orders import audit, lifecycle, tasks
from orders.models import AuditCheck, EventKind, Fill, Notification, Order, OrderEvent, Status
from tests.desk import leg

pytestmark = pytest.mark.django_db


@pytest.fixture
def day(desk):
    """A small trading day through the real pipeline: an executed entry, a partial exit that
    is cancelled with its fill kept, a blocked duplicate and a conflict row."""
    entry = desk.hold(qty=10)
    [duplicate] = desk.post("ENTRY", [leg(qty=10)])
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(behaviour=Behaviour.CANCEL_AFTER_PARTIAL)
    exit_ = desk.exit(qty=10)
    desk.send()
    desk.watch(times=3)
    exit_.refresh_from_db()
    lifecycle.record_conflict(entry, "watcher", "a report that made no sense")
    return {"entry": entry, "duplicate": duplicate, "exit": exit_}


def sql(statement: str, *params) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def verify_audit(*args) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def test_a_real_day_verifies_and_the_result_is_kept(day):
    exit_ = Order.objects.get(pk=day["exit"].pk)
    assert exit_.filled_qty == 5 and exit_.status == Status.FAILED  # cancelled after half filled
    out = verify_audit()
    assert "audit trail verified: 3 orders and 1 positions checked, no mismatch" in out
    check = AuditCheck.objects.get()
    assert (check.orders, check.positions, check.mismatches, check.ok) == (3, 1, 0, True)


def test_each_event_links_to_the_one_before_and_the_order_keeps_the_last(day):
    order = Order.objects.get(pk=day["entry"].pk)
    events = list(order.events.order_by("id"))
    assert events[0].kind == EventKind.CREATED and events[0].prev_hash == ""
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert len({e.hash for e in events}) == len(events) and all(len(e.hash) == 64 for e in events)
    assert order.audit_head == events[-1].hash
    assert (events[-1].broker_order_id, events[-1].filled_qty) == (order.broker_order_id, order.filled_qty)


TAMPERING = {
    "a status": ("UPDATE orders_order SET status = 'EXECUTED' WHERE id = %s", "duplicate",
                 "status is 'EXECUTED', its events say 'FAILED'"),
    "a tag": ("UPDATE orders_order SET tag = '' WHERE id = %s", "duplicate", "tag is ''"),
    "a filled quantity": ("UPDATE orders_order SET filled_qty = 6 WHERE id = %s", "exit",
                          "filled_qty is 6, its events say 5"),
    "an average price": ("UPDATE orders_order SET avg_price = 1 WHERE id = %s", "entry", "avg_price is 1"),
    "a broker id": ("UPDATE orders_order SET broker_order_id = 'X1' WHERE id = %s", "entry", "broker_order_id is 'X1'"),
    "a fill": ("UPDATE orders_fill SET qty = 3 WHERE order_id = %s", "exit", "its fills add up to 3"),
    "a deleted fill": ("DELETE FROM orders_fill WHERE order_id = %s", "exit", "its fills add up to 0"),
    "an event's detail": ("UPDATE orders_orderevent SET detail = 'nothing to see' WHERE order_id = %s AND kind = 'FAILED'",
                          "exit", "does not match its hash (its content edited?)"),
    "an order's detail": ("UPDATE orders_order SET qty = 1 WHERE id = %s", "entry",
                          "(CREATED) does not match its hash (the order's details edited?)"),
    "a deleted event": ("DELETE FROM orders_orderevent WHERE order_id = %s AND kind = 'CLAIMED'", "entry",
                        "does not follow the one before it"),
    "a deleted last event": ("DELETE FROM orders_orderevent WHERE id = (SELECT max(id) FROM orders_orderevent"
                             " WHERE order_id = %s)", "entry", "the order's last recorded event is missing"),
}


@pytest.mark.no_audit_check
@pytest.mark.parametrize("what", list(TAMPERING))
def test_each_tampering_behind_the_lifecycle_is_reported_with_the_command_id(day, what):
    statement, which, expected = TAMPERING[what]
    order = day[which]
    assert sql(statement, order.pk) >= 1
    with pytest.raises(CommandError, match="mismatch"):
        verify_audit()
    check = AuditCheck.objects.get()
    assert check.mismatches >= 1
    assert any(line.startswith(f"{order.command_id}: ") and expected in line for line in check.report.splitlines()), \
        check.report


@pytest.mark.no_audit_check
def test_a_position_changed_by_hand_is_reported(day):
    sql("UPDATE orders_position SET net_qty = net_qty + 1")
    result = audit.verify()
    assert [m for m in result.mismatches if m.startswith("position ") and "net_qty is 6, its fills say 5" in m], \
        result.mismatches


@pytest.mark.no_audit_check
def test_since_checks_only_the_orders_from_that_day_on(day):
    old = day["duplicate"]
    sql("UPDATE orders_order SET created_at = %s, status = 'EXECUTED' WHERE id = %s",
        timezone.now() - timedelta(days=3), old.pk)
    with pytest.raises(CommandError):
        verify_audit()
    today = timezone.localtime(timezone.now(), timezone=__import__("zoneinfo").ZoneInfo("Asia/Kolkata")).date()
    out = verify_audit("--since", (today - timedelta(days=1)).isoformat())
    assert "2 orders and 1 positions checked, no mismatch" in out
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        verify_audit("--since", "yesterday")


def test_it_runs_nightly_as_a_schedule():
    schedule = Schedule.objects.get(name="verify_audit")
    assert (schedule.func, schedule.schedule_type, schedule.cron) == ("orders.tasks.verify_audit", "C", "30 1 * * *")


@pytest.mark.no_audit_check
def test_the_nightly_run_tells_of_a_mismatch_and_health_shows_it(day, fake_telegram, client):
    assert tasks.verify_audit() == "3 orders, 1 positions, 0 mismatches"
    assert AuditCheck.objects.get().since is not None  # the last AUDIT_VERIFY_DAYS days
    assert not Notification.objects.exists()
    sql("UPDATE orders_orderevent SET actor = 'someone else' WHERE order_id = %s", day["entry"].pk)
    assert tasks.verify_audit().endswith(" mismatches") and AuditCheck.objects.first().mismatches > 0
    [note] = Notification.objects.all()
    assert note.text.startswith("🧾 AUDIT: verify_audit found") and day["entry"].command_id in note.text
    assert note.priority == 0  # URGENT
    report = client.get("/api/health/", HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=User.objects.create_user('m')).key}").json()
    assert report["status"] == "degraded"
    assert report["audit"]["mismatches"] == AuditCheck.objects.first().mismatches and report["audit"]["ok"] is False
    assert any(r.startswith("verify_audit found") for r in report["reasons"])


def test_hashing_is_deterministic_and_covers_every_field(day):
    event = OrderEvent.objects.filter(order=day["entry"]).order_by("id").last()
    order = Order.objects.get(pk=day["entry"].pk)
    assert audit.event_hash(event, order.command_id, order) == event.hash
    for name, value in (("kind", "FILL"), ("actor", "x"), ("detail", "y"), ("tag", "z"), ("filled_qty", 999),
                        ("broker_order_id", "B9"), ("at", event.at + timedelta(microseconds=1)), ("prev_hash", "0")):
        changed = OrderEvent.objects.get(pk=event.pk)
        setattr(changed, name, value)
        assert audit.event_hash(changed, order.command_id, order) != event.hash, name


def test_a_fill_price_finer_than_the_ledger_keeps_replays_to_the_same_position():
    """3 filled at 100.01, then 10 in all at 100.03: the 7 more cost 100.0385714…, which the
    ledger keeps to 6 places; the position is computed from that same price."""
    from decimal import Decimal

    from tests.factories import RegisteredOrderFactory

    order = RegisteredOrderFactory(qty=10)
    assert lifecycle.move(order, Status.SENT_TO_BROKER, actor="worker", broker_order_id="B1")
    assert lifecycle.annotate(order, kind=EventKind.FILL, actor="watcher", filled_qty=3, avg_price=Decimal("100.01"))
    assert lifecycle.move(order, Status.EXECUTED, actor="watcher", filled_qty=10, avg_price=Decimal("100.03"))
    assert [f.price for f in Fill.objects.filter(order=order).order_by("id")] == [Decimal("100.01"),
                                                                                 Decimal("100.038571")]
    assert audit.verify().ok
