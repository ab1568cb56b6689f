"""Telegram notifications: the reason from the tag for every failure, only for committed
changes, through an outage without touching the order flow."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from brokers.models import Behaviour, PaperInstrument
from orders import notify
from orders.models import Notification, Order, Status
from risk.killswitch import set_mode
from risk.services import set_limits
from tests.desk import leg

pytestmark = pytest.mark.django_db(transaction=True)


def deliver() -> int:
    return notify.deliver_due("test:sender")


def test_a_broker_rejection_is_told_with_its_reason(fake_telegram, paper_instruments, desk):
    order = desk.entry("BUY", "NOSUCH-EQ", 3)
    desk.send()
    order.refresh_from_db()
    assert order.tag == "BROKER_REJECTED:Invalid Trading Symbol"
    deliver()  # if the delivery task the rejection queued has not sent it already
    [text] = fake_telegram.texts()
    assert Notification.objects.get().sent_at is not None
    assert "REJECTED by the broker" in text and "reason: BROKER_REJECTED:Invalid Trading Symbol" in text
    assert f"demo BUY 3 NSE:NOSUCH-EQ MIS [{order.command_id}]" in text


def test_guard_and_risk_blocks_are_told_with_their_tags(fake_telegram, paper_instruments, desk, strategy):
    desk.through(desk.entry("BUY", "SBIN-EQ", 1))
    desk.entry("BUY", "SBIN-EQ", 1)  # a duplicate
    set_limits(strategy, actor="test", max_qty=5)
    desk.entry("BUY", "INFY-EQ", 50)
    assert deliver() == 2
    guard, risk = fake_telegram.texts()
    assert "blocked by a guard rule; not sent" in guard and "reason: GUARD_BLOCKED:DUPLICATE_POSITION" in guard
    assert "blocked by a risk limit; not sent" in risk and "reason: RISK_BLOCKED:QTY_LIMIT qty 50 > 5" in risk


def test_a_cancellation_after_a_partial_fill_says_what_was_filled(fake_telegram, paper_instruments, desk, settings):
    settings.PAPER_FILL_DELAY_S = 0
    PaperInstrument.objects.filter(symbol="TCS-EQ").update(behaviour=Behaviour.CANCEL_AFTER_PARTIAL)
    order = desk.entry("BUY", "TCS-EQ", 10)
    desk.send()
    desk.watch(3)
    order.refresh_from_db()
    assert order.status == Status.FAILED and order.tag.startswith("BROKER_CANCELLED:")
    deliver()
    [text] = fake_telegram.texts()
    assert "CANCELLED at the broker" in text and "filled 5/10" in text and order.tag in text


def test_legs_blocked_together_share_one_message(fake_telegram, paper_instruments, desk, strategy):
    set_limits(strategy, actor="test", max_qty=5)
    desk.post("ENTRY", [leg("SBIN-EQ", qty=50), leg("INFY-EQ", qty=1)])  # all or none: both fail
    [message] = Notification.objects.all()
    assert message.count == 2
    deliver()
    [text] = fake_telegram.texts()
    assert "RISK_BLOCKED:QTY_LIMIT qty 50 > 5" in text and "GUARD_BLOCKED:BATCH leg 1:" in text


def test_nothing_is_told_for_a_transaction_that_rolled_back(fake_telegram, paper_instruments, desk):
    order = desk.entry("BUY", "SBIN-EQ", 1)
    from orders import lifecycle

    with pytest.raises(RuntimeError), transaction.atomic():
        lifecycle.move(order, Status.FAILED, actor="test", tag="GUARD_BLOCKED:TEST")
        raise RuntimeError("rolled back")
    assert not Notification.objects.exists()
    assert deliver() == 0 and fake_telegram.texts() == []


def test_an_outage_leaves_the_order_flow_alone_and_the_message_goes_out_after_it(fake_telegram, paper_instruments,
                                                                                desk):
    fake_telegram.mode = "down"
    desk.entry("BUY", "NOSUCH-EQ", 1)
    desk.send()
    assert deliver() == 0
    message = Notification.objects.get()
    assert (message.sent_at, message.attempts) == (None, 1) and message.last_error.startswith("502")
    assert message.next_attempt_at > timezone.now()
    executed = desk.through(desk.entry("BUY", "SBIN-EQ", 1))  # the desk trades on through the outage
    assert executed.status == Status.EXECUTED
    fake_telegram.mode = "ok"
    Notification.objects.update(next_attempt_at=timezone.now())
    assert deliver() == 1
    assert "Invalid Trading Symbol" in fake_telegram.texts()[0]


def test_telegrams_retry_after_is_honoured(fake_telegram, paper_instruments, desk):
    fake_telegram.mode, fake_telegram.retry_after = "rate-limited", 7
    desk.entry("BUY", "NOSUCH-EQ", 1)
    desk.send()
    deliver()
    message = Notification.objects.get()
    wait = (message.next_attempt_at - timezone.now()).total_seconds()
    assert 5 < wait <= 7 and message.gave_up_at is None


def test_sent_is_never_reported_as_executed(fake_telegram, paper_instruments, desk, settings):
    settings.TELEGRAM_NOTIFY_EXECUTED = True
    settings.PAPER_FILL_DELAY_S = 3600
    order = desk.entry("BUY", "SBIN-EQ", 1)
    desk.send()
    desk.watch()
    order.refresh_from_db()
    assert order.status == Status.SENT_TO_BROKER and order.broker_order_id
    assert not Notification.objects.exists()
    settings.PAPER_FILL_DELAY_S = 0
    from brokers.models import PaperOrder

    PaperOrder.objects.update(due_at=timezone.now() - timedelta(seconds=1))
    desk.watch()
    deliver()
    [text] = fake_telegram.texts()
    assert text.startswith("✅ EXECUTED at the broker: demo BUY 1 NSE:SBIN-EQ") and "@ 815.50" in text


def test_kill_switch_changes_and_risk_locks_are_told_with_who(fake_telegram, paper_instruments, desk, strategy):
    set_mode("HALTED", actor="admin:ops")
    set_mode("ACTIVE", actor="admin:ops")
    set_limits(strategy, actor="test", max_loss=Decimal(1))
    desk.through(desk.entry("BUY", "SBIN-EQ", 10))
    PaperInstrument.objects.filter(symbol="SBIN-EQ").update(ref_price=Decimal("800"))
    desk.watch()
    desk.entry("BUY", "INFY-EQ", 1)  # trips the lock
    sent = 0
    while deliver():
        sent += 1
    texts = "\n".join(fake_telegram.texts())
    assert "KILL SWITCH global: ACTIVE -> HALTED by admin:ops" in texts
    assert "RISK LOCK demo: RISK_BLOCKED:MAX_LOSS_LOCK P&L -155.00 <= -1.00" in texts


def test_no_telegram_configured_no_rows(paper_instruments, desk, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    desk.entry("BUY", "NOSUCH-EQ", 1)
    desk.send()
    assert not Notification.objects.exists() and Order.objects.get().status == Status.FAILED


def test_an_expired_broker_session_is_told(fake_telegram, shoonya_oauth, strategy, alert_body, post_alert, run_queue):
    shoonya_oauth.expire_sessions()
    assert post_alert(alert_body()).status_code == 201
    run_queue()
    order = Order.objects.get()
    assert order.tag.startswith("BROKER_SESSION:Shoonya session expired")
    deliver()
    texts = "\n".join(fake_telegram.texts())
    assert "BROKER shoonya session EXPIRED for" in texts and "manage.py shoonya_login" in texts
    assert "not placed: the broker session is invalid" in texts and order.command_id in texts


def test_an_order_in_doubt_is_told_as_not_executed(fake_telegram, paper_instruments, desk):
    PaperInstrument.objects.filter(symbol="INFY-EQ").update(behaviour=Behaviour.TIMEOUT_ON_PLACE)
    order = desk.entry("BUY", "INFY-EQ", 2)
    desk.send()
    order.refresh_from_db()
    assert order.status == Status.SENT_TO_BROKER and order.tag.startswith("BROKER_IN_DOUBT:")
    deliver()
    [text] = fake_telegram.texts()
    assert text.startswith("⚠️ IN DOUBT (sent, no definite answer; NOT executed)") and order.command_id in text
    assert Notification.objects.get().priority == notify.URGENT
