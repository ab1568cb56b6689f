"""Market-order protection: a MARKET order of a strategy with a protection percentage (its own
`market_protection_pct`, else MARKET_PROTECTION_PCT) is sent as a LIMIT at the last price
± that percentage (above for a BUY, below for a SELL), rounded to the instrument's tick (0.05
without a symbol master) towards the last price, from a quote asked of the broker at submission
time (Shoonya restricts API market orders on some segments). Without a valid quote the order is
not sent: it fails as BROKER_REJECTED:not sent: no valid quote."""

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.conf import settings
from django.db import transaction

from brokers import instruments
from brokers.base import Broker, BrokerUnavailable

from .models import EventKind, ExecutionType, Order, OrderType, Side, Source, Status

log = logging.getLogger("orderdesk.protection")

DEFAULT_TICK = Decimal("0.05")
NO_QUOTE_TAG = "BROKER_REJECTED:not sent: no valid quote"


class NoValidQuote(Exception):
    """The broker gave no usable quote for the instrument: the order must not go."""


@dataclass(frozen=True)
class Protection:
    price: Decimal
    detail: str  # the conversion and the quote used, for the claim's audit row


def percentage(order: Order) -> Decimal | None:
    """The protection that applies to the order, or None (sent as it is)."""
    if order.order_type != OrderType.MARKET:
        return None
    own = order.strategy.market_protection_pct
    if own is not None:
        return own
    return Decimal(str(settings.MARKET_PROTECTION_PCT)) if settings.MARKET_PROTECTION_PCT else None


def limit_price(last: Decimal, side: str, pct: Decimal, tick: Decimal) -> Decimal:
    """last ± pct %, on the tick, rounded towards the last price (never beyond the band)."""
    factor = 1 + pct / 100 if side == Side.BUY else 1 - pct / 100
    ticks = (last * factor / tick).to_integral_value(ROUND_FLOOR if side == Side.BUY else ROUND_CEILING)
    return max(tick, ticks * tick)


def protect(broker: Broker, order: Order, pct: Decimal) -> Protection:
    """The LIMIT price to send instead of MARKET. Raises NoValidQuote."""
    try:
        last = broker.quote(order.exchange, order.symbol)
    except BrokerUnavailable as exc:
        raise NoValidQuote(str(exc)) from None
    specs = instruments.specs(order.exchange, [order.symbol]) or {}
    tick = specs[order.symbol].tick_size if order.symbol in specs else DEFAULT_TICK
    price = limit_price(last, order.side, pct, tick)
    return Protection(price, f"MARKET protected: sent as LIMIT {_plain(price)} (last price {_plain(last)} "
                             f"{'+' if order.side == Side.BUY else '-'}{_plain(pct)}%, tick {_plain(tick)})")


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def watch_open(broker: Broker, now) -> int:
    """Protected orders still open MARKET_PROTECTION_TIMEOUT_S after they were sent: the trader
    is told once (a PROTECTED_OPEN audit row), and a square-off exit is re-priced at a fresh
    quote (a modification) every timeout until it fills. The orders looked at."""
    from . import lifecycle
    from .modifications import NotModifiable, request_modify

    timeout = timedelta(seconds=settings.MARKET_PROTECTION_TIMEOUT_S)
    stuck = (Order.objects.filter(status=Status.SENT_TO_BROKER, order_type=OrderType.MARKET,
                                  working_price__isnull=False, broker_order_id__isnull=False, sent_at__lt=now - timeout)
             .select_related("strategy"))
    for order in stuck:
        if not order.events.filter(kind=EventKind.PROTECTED_OPEN).exists():
            lifecycle.annotate(order, kind=EventKind.PROTECTED_OPEN, actor="watcher",
                               detail=f"sent {(now - order.sent_at).total_seconds():.0f}s ago at LIMIT "
                                      f"{order.working_price}; not filled")
        if order.source != Source.SYSTEM or order.execution_type != ExecutionType.EXIT:
            continue
        last = order.modifications.order_by("-requested_at").values_list("requested_at", flat=True).first()
        pct = percentage(order)
        if pct is None or (last is not None and now - last < timeout):
            continue  # protection since switched off: it stays at its limit
        try:
            price = protect(broker, order, pct).price
            if price != order.working_price:
                with transaction.atomic():
                    request_modify(order, "squareoff", price=price)
        except (NoValidQuote, NotModifiable) as exc:
            log.warning("square-off exit %s not re-priced: %s", order.command_id, exc)
        except Exception:  # noqa: BLE001 - one order must not hold up the others
            log.exception("square-off exit %s: re-pricing failed", order.command_id)
    return len(stuck)
