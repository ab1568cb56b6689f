"""The trading day is the exchange's (Asia/Kolkata), whatever the server's clock zone."""

from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone


def trading_day_start(now: datetime | None = None) -> datetime:
    """Midnight at the start of the current trading day, as an aware datetime."""
    local = (now or timezone.now()).astimezone(ZoneInfo(settings.TRADING_TZ))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)
