"""The latest known price of an instrument, without broker I/O: the watcher's snapshot of
the broker's positions (`lp`), else what the broker adapter knows locally (the paper
broker's instrument prices, current by definition)."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from brokers.registry import get_broker
from orders.models import BrokerPosition


@dataclass(frozen=True)
class Quote:
    price: Decimal
    at: datetime


def latest_prices(instruments: set[tuple[str, str]]) -> dict[tuple[str, str], Quote]:
    if not instruments:
        return {}
    quotes: dict[tuple[str, str], Quote] = {}
    rows = (BrokerPosition.objects.filter(symbol__in={s for _, s in instruments}, last_price__isnull=False)
            .order_by("taken_at").values_list("exchange", "symbol", "last_price", "taken_at"))
    for exchange, symbol, price, at in rows:  # the newest last
        if (exchange, symbol) in instruments:
            quotes[(exchange, symbol)] = Quote(price, at)
    missing = instruments - set(quotes)
    if missing:
        now = timezone.now()
        for key, price in get_broker().reference_prices(missing).items():
            quotes[key] = Quote(price, now)
    return quotes
