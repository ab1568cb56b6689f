"""Notifications to the trader (Telegram): what failed and why, in plain words, from the tag.

Subscribed to orders.events, so only committed changes are told. Each message is a
Notification row first; orders.tasks.deliver_notifications sends the due ones, one sender at
a time (a lease), paced to a message a second, backing off on errors and honouring
Telegram's retry_after. A Telegram outage only leaves rows unsent: the order flow never
waits for it. Only a broker-confirmed state is reported as done ("sent" is never
"executed").
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.dispatch import receiver
from django.utils import timezone

from . import events, leases, telegram
from .models import EventKind, Notification, Order, Status
from .queue import enqueue_delivery

log = logging.getLogger("orderdesk.notify")

SENDER_LEASE = "notify"
BUDGET_S = 5  # a delivery task holds its worker at most this long (plus one request's timeout)
PACE_S = 1.0  # Telegram allows about one message a second per chat
COALESCE_S = 60
URGENT, NORMAL = 0, 1

PLAIN = {
    "GUARD_BLOCKED": "blocked by a guard rule; not sent",
    "RISK_BLOCKED": "blocked by a risk limit; not sent",
    "BROKER_REJECTED": "REJECTED by the broker",
    "BROKER_SESSION": "not placed: the broker session is invalid (log in again)",
    "BROKER_CANCELLED": "CANCELLED at the broker",
    "BROKER_EXPIRED": "EXPIRED at the broker",
    "BROKER_UNKNOWN": "never seen at the broker: treat as not placed, check the broker's app",
}


def _family(tag: str) -> str:
    return tag.split(":", 1)[0]


def _code(tag: str) -> str:
    rest = tag.split(":", 1)[1] if ":" in tag else ""
    return rest.split(" ", 1)[0] if _family(tag) in ("GUARD_BLOCKED", "RISK_BLOCKED") else ""


def _order_line(order: Order) -> str:
    filled = f", filled {order.filled_qty}/{order.open_qty}" if order.filled_qty else ""
    return (f"{order.strategy.name} {order.side} {order.qty} {order.exchange}:{order.symbol} {order.product}{filled} "
            f"[{order.command_id}]")


def describe(order: Order, event) -> tuple[str, int, str] | None:
    """(text, priority, coalescing code) for an event the trader must hear of, else None."""
    kind, tag = event.kind, event.tag or ""
    line = _order_line(order)
    if event.to_status == Status.FAILED and kind in (EventKind.BLOCKED, EventKind.FAILED, EventKind.BROKER_REJECTED):
        family = _family(tag)
        urgent = family in ("BROKER_REJECTED", "BROKER_SESSION", "BROKER_UNKNOWN")
        what = PLAIN.get(family, "FAILED")
        return f"❌ {what}: {line}\nreason: {tag}", URGENT if urgent else NORMAL, f"{family}:{_code(tag)}"
    if kind == EventKind.BROKER_IN_DOUBT:
        return (f"⚠️ IN DOUBT (sent, no definite answer; NOT executed): {line}\nreason: {tag}\n"
                "the watcher checks the broker's order book", URGENT, "")
    if kind == EventKind.PROTECTED_OPEN:
        return (f"⏳ STILL OPEN after {settings.MARKET_PROTECTION_TIMEOUT_S:g}s (market protection's LIMIT "
                f"{order.working_price}): {line}\n{event.detail}", URGENT, "")
    if kind == EventKind.RECOVERED:
        return f"↩️ RECOVERED by broker truth, now {event.to_status}: {line}", URGENT, ""
    newly_executed = event.to_status == Status.EXECUTED and event.from_status != Status.EXECUTED
    if newly_executed and settings.TELEGRAM_NOTIFY_EXECUTED:
        price = f" @ {order.avg_price}" if order.avg_price is not None else ""
        return f"✅ EXECUTED at the broker: {line}{price}", NORMAL, ""
    return None


def queue(text: str, priority: int = NORMAL, code: str = "", alert_ref: str = "") -> None:
    """A message to send; joins an unsent one of the same alert or code from the last minute."""
    if not telegram.configured():
        return
    now = timezone.now()
    recent = Notification.objects.filter(sent_at__isnull=True, gave_up_at__isnull=True,
                                         created_at__gte=now - timedelta(seconds=COALESCE_S))
    match = Q(key=f"alert:{alert_ref}") if alert_ref else Q(pk__in=[])
    if code:
        match |= Q(key=f"code:{code}")
    joined = recent.filter(match).order_by("id").first() if (alert_ref or code) else None
    if joined is not None:
        Notification.objects.filter(pk=joined.pk).update(text=(joined.text + "\n\n" + text)[:4000],
                                                         count=F("count") + 1, priority=min(joined.priority, priority))
    else:
        key = f"alert:{alert_ref}" if alert_ref else (f"code:{code}" if code else "")
        Notification.objects.create(text=text, priority=priority, key=key)
    kick()


@receiver(events.order_event)
def _on_order_event(sender, order, event, **kwargs):
    if not telegram.configured():
        return
    described = describe(order, event)
    if described is None:
        return
    text, priority, code = described
    # Legs of one alert blocked together share a message; so do same-code blocks in a minute.
    together = event.kind == EventKind.BLOCKED
    queue(text, priority, code if together else "", str(order.alert_id) if together else "")


@receiver(events.desk_event)
def _on_desk_event(sender, kind, params, **kwargs):
    if kind == "KILL_SWITCH":
        queue(f"🛑 KILL SWITCH {params['scope']}: {params['from']} -> {params['to']} by {params['actor']}", URGENT)
    elif kind == "RISK_LOCK":
        queue(f"🔒 RISK LOCK {params['scope']}: {params['tag']}\nentries locked until an admin resets it", URGENT)
    elif kind == "SQUARE_OFF":
        queue(f"⏹ SQUARE-OFF {params['strategy']} ({params['trigger']}): {params['why']}\n"
              "open orders cancelled, positions exited" + (
                  "; entries locked for the day" if params["trigger"] == "MTM" else ""), URGENT)
    elif kind == "BROKER_SESSION" and params["change"] in ("invalidated", "login_failed"):
        what = "session EXPIRED" if params["change"] == "invalidated" else "login FAILED"
        # A failing automatic login retries every SHOONYA_LOGIN_RETRY_S: repeats join one message.
        queue(f"🔑 BROKER {params['broker']} {what} for {params['user']}: {params['reason']}\n"
              "orders are not placed until a new session is stored (manage.py shoonya_login)", URGENT,
              code=f"BROKER_SESSION:{params['change']}")


# --- delivery ---------------------------------------------------------------------------

def kick() -> None:
    """Start a delivery task unless a sender is already at work."""
    if not leases.held(SENDER_LEASE):
        enqueue_delivery()


def _due():
    return Notification.objects.filter(sent_at__isnull=True, gave_up_at__isnull=True,
                                       next_attempt_at__lte=timezone.now()).order_by("priority", "id")


def resume_delivery() -> None:
    """The watcher's pass: due messages left behind (an outage, a lost task) get a sender."""
    if telegram.configured() and _due().exists():
        kick()


def deliver_due(owner: str) -> int:
    """Send due messages for up to BUDGET_S, one sender at a time; returns how many were sent."""
    if not telegram.configured() or not leases.acquire(SENDER_LEASE, owner, BUDGET_S + settings.TELEGRAM_TIMEOUT_S * 2):
        return 0
    sent, deadline = 0, time.monotonic() + BUDGET_S
    try:
        while time.monotonic() < deadline:
            message = _due().first()
            if message is None:
                break
            if sent:
                time.sleep(PACE_S)
            result = telegram.send_message(message.text)
            now = timezone.now()
            if result.ok:
                Notification.objects.filter(pk=message.pk).update(sent_at=now, attempts=F("attempts") + 1,
                                                                  last_error="")
                sent += 1
                continue
            attempts = message.attempts + 1
            if result.retry_after_s is not None:
                wait = result.retry_after_s
            else:
                wait = min(300, 2 ** attempts)
            gave_up = now if attempts >= settings.TELEGRAM_MAX_ATTEMPTS and result.retry_after_s is None else None
            Notification.objects.filter(pk=message.pk).update(
                attempts=attempts, last_error=result.error[:255], next_attempt_at=now + timedelta(seconds=wait),
                gave_up_at=gave_up)
            log.warning("telegram: message %s not delivered (%s), attempt %d%s", message.pk, result.error, attempts,
                        ", given up" if gave_up else f", next in {wait:g}s")
            break  # an outage or a rate limit: the watcher's pass resumes when it is due
    finally:
        leases.release(SENDER_LEASE, owner)
    return sent
