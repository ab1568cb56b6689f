"""The trading day is the exchange's (Asia/Kolkata), whatever the server's clock zone."""

from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone


def local_now(now: datetime | None = None) -> datetime:
    """The time on the exchange's clock (IST)."""
    return (now or timezone.now()).astimezone(ZoneInfo(settings.TRADING_TZ))


def trading_day_start(now: datetime | None = None) -> datetime:
    """Midnight at the start of the current trading day, as an aware datetime."""
    return local_now(now).replace(hour=0, minute=0, second=0, microsecond=0)
