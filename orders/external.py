"""Orders placed elsewhere (the broker's app, another tool): the book entries that are not
ours, kept as ExternalOrder rows and followed to their end like ours, from the order book and
the push feed. They are never sent, cancelled or guarded by us; they count in their own
`external` bucket of the account P&L and of the reconciliation."""

import logging
from collections import defaultdict
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from brokers.base import BookEntry

from .models import BrokerPosition, ExternalOrder
from .positions import Book
from .tradingday import trading_day_start

log = logging.getLogger("orderdesk.external")

ENDED = {"COMPLETE", "REJECTED", "CANCELLED", "EXPIRED"}


def _values(entry: BookEntry) -> dict:
    return {"client_order_id": entry.client_order_id[:64], "exchange": entry.exchange[:8], "symbol": entry.symbol[:64],
            "side": entry.side[:4], "qty": entry.qty, "product": entry.product[:4], "order_type": entry.order_type[:8],
            "price": entry.price, "status": entry.status.value, "raw_status": entry.raw_status[:32],
            "reason": entry.reason[:255], "filled_qty": entry.filled_qty, "avg_price": entry.avg_price}


def record(entry: BookEntry, now=None, known: ExternalOrder | None = None) -> bool:
    """The entry's order as an external one: created when first seen, updated when it changed.
    `known`: its row, if the caller has read it. A lagging report (fewer fills, or an ended
    order reported working again) never overwrites what is recorded, even against a
    concurrent writer (the push feed's thread and a pass): the update is conditional.
    Returns whether it wrote."""
    now = now or timezone.now()
    values = _values(entry)
    existing = known or ExternalOrder.objects.filter(broker_order_id=entry.broker_order_id).first()
    if existing is None:
        _, created = ExternalOrder.objects.get_or_create(
            broker_order_id=entry.broker_order_id,
            defaults={"broker": settings.ORDERDESK_BROKER, "first_seen_at": now, "updated_at": now, **values})
        if created:
            log.warning("external order %s at the broker (not ours): %s %s %s %s", entry.broker_order_id,
                        entry.side, entry.qty, entry.symbol, entry.raw_status)
            return True
        existing = ExternalOrder.objects.get(broker_order_id=entry.broker_order_id)
    # What a later report leaves out (a feed message without the instrument, say) is kept.
    changes = {k: v for k, v in values.items() if v not in ("", None, 0) or k == "reason"}
    if all(getattr(existing, k) == v for k, v in changes.items()):
        return False
    rows = ExternalOrder.objects.filter(pk=existing.pk, filled_qty__lte=entry.filled_qty)
    if entry.status.value not in ENDED:
        rows = rows.exclude(status__in=ENDED)
    return bool(rows.update(updated_at=now, **changes))


def positions(now=None) -> dict[tuple, Book]:
    """The day's external fills per (exchange, symbol, product), replayed in the order the
    orders were first seen: net quantity, average price and realized P&L."""
    books: dict[tuple, Book] = defaultdict(Book)
    rows = (ExternalOrder.objects.filter(first_seen_at__gte=trading_day_start(now), filled_qty__gt=0)
            .order_by("first_seen_at", "id").values_list("exchange", "symbol", "product", "side", "filled_qty",
                                                         "avg_price", "price"))
    for exchange, symbol, product, side, filled, avg, price in rows:
        key = (exchange, symbol, product)
        books[key] = books[key].add(filled if side == "BUY" else -filled, avg or price or Decimal(0))
    return dict(books)


def pnl(now=None, books: dict[tuple, Book] | None = None) -> dict:
    """The external bucket of the account P&L: realized from the fills, unrealized at the
    broker's last prices (unknown where the broker's snapshot has none). `books`: positions(),
    if the caller has read them."""
    books = positions(now) if books is None else books
    prices = {(p.exchange, p.symbol, p.product): p.last_price for p in BrokerPosition.objects.all()}
    realized = sum((b.realized_pnl for b in books.values()), Decimal(0))
    unrealized, unknown = Decimal(0), []
    for key, book in books.items():
        if not book.net_qty:
            continue
        last = prices.get(key)
        if last is None:
            unknown.append(":".join(key[:2]))
            continue
        unrealized += (last - book.avg_price) * book.net_qty
    return {"realized": realized, "unrealized": unrealized.quantize(Decimal("0.0001")), "unpriced": unknown,
            "net": {key: book.net_qty for key, book in books.items()}}
