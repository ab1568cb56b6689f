"""The push feed's recorded state: written by its listener (orders.feed), read by the
watcher (to decide between polling and reconciling), /api/health/ and the admin."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from . import leases
from .models import OrderFeedState

FEED_NAME = "orderfeed"  # the state row and the listener's lease


def record_listening(broker: str, holder: str) -> None:
    """A new listener took the lease; it is not connected yet."""
    OrderFeedState.objects.update_or_create(name=FEED_NAME, defaults={"broker": broker, "holder": holder,
                                                                      "connected_since": None})


def record_connected(broker: str, holder: str) -> None:
    now = timezone.now()
    row = OrderFeedState.objects.get_or_create(name=FEED_NAME)[0]
    today = timezone.localdate(now)
    reconnects = row.reconnects_today + 1 if row.reconnects_day == today else 0
    OrderFeedState.objects.filter(name=FEED_NAME).update(
        broker=broker, holder=holder, connected_since=now, last_seen_at=now, reconnects_today=reconnects,
        reconnects_day=today, last_error="")


def record_seen(message_at=None) -> None:
    """A sign of life; `message_at`: also the time of the last order update."""
    changes = {"last_seen_at": timezone.now()}
    if message_at is not None:
        changes["last_message_at"] = message_at
    OrderFeedState.objects.filter(name=FEED_NAME).update(**changes)


def record_disconnected(reason: str) -> None:
    OrderFeedState.objects.filter(name=FEED_NAME).update(connected_since=None, last_error=reason[:255])


def _is_healthy(row: dict | None, now) -> bool:
    return bool(row and row["connected_since"] and row["last_seen_at"]
                and now - row["last_seen_at"] <= timedelta(seconds=settings.ORDER_FEED_STALE_S))


def healthy() -> bool:
    """Connected, alive lately, and its listener still holds the lease: the REST poll may slow
    down to reconciliation."""
    row = OrderFeedState.objects.filter(name=FEED_NAME).values("connected_since", "last_seen_at").first()
    return _is_healthy(row, timezone.now()) and leases.held(FEED_NAME)


def _age_s(then, now) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 1)


def state(now=None) -> dict:
    """For /api/health/ (`feed`) and the admin: no token, no secret."""
    now = now or timezone.now()
    row = OrderFeedState.objects.filter(name=FEED_NAME).values().first()
    holder = leases.live_holder(FEED_NAME)
    if row is None or holder is None:
        return {"running": False, "connected": False, "healthy": False,
                "last_error": row["last_error"] if row else ""}
    reconnects = row["reconnects_today"] if row["reconnects_day"] == timezone.localdate(now) else 0
    connected = row["connected_since"] is not None
    return {
        "running": True,
        "broker": row["broker"],
        "holder": holder,
        "connected": connected,
        "healthy": _is_healthy(row, now),
        "connected_since": row["connected_since"].isoformat() if connected else None,
        "last_message_age_s": _age_s(row["last_message_at"], now),
        "last_seen_age_s": _age_s(row["last_seen_at"], now),
        "reconnects_today": reconnects,
        "last_error": row["last_error"],
    }
