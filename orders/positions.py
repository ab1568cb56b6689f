"""Positions from our own fills: per strategy, exchange, symbol and product.

`apply_fill` runs inside orders.lifecycle's transaction, so a position never disagrees with
the fills that made it; `positions_from_orders` derives the same figures from scratch.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from brokers.base import add_fill
from orderdesk import statements

from .models import Fill, Order, Position, Side, Strategy

log = logging.getLogger("orderdesk.positions")

STRATEGIES = connection.ops.quote_name(Strategy._meta.db_table)
AVG_QUANTUM = Decimal("0.000001")
PNL_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class Book:
    net_qty: int = 0
    avg_price: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)

    def add(self, signed_qty: int, price: Decimal) -> "Book":
        """This book after a fill of `signed_qty` (> 0 bought, < 0 sold) at `price` (average cost)."""
        net, avg, realized = add_fill(self.net_qty, self.avg_price, self.realized_pnl, signed_qty, price)
        return Book(net, (avg if net else Decimal(0)).quantize(AVG_QUANTUM), realized.quantize(PNL_QUANTUM))


def fill_increment(order: Order, filled_qty: int, avg_price: Decimal | None) -> tuple[int, Decimal] | None:
    """The newly filled quantity and its price, from the cumulative figures before and after."""
    delta = filled_qty - order.filled_qty
    if delta <= 0:  # lifecycle never lowers a filled qty (a lower report is a lagging one)
        return None
    # Without a reported average (rare), the order's own limit price is the best estimate.
    after_avg = avg_price if avg_price is not None else order.price or Decimal(0)
    before = order.filled_qty * (order.avg_price or Decimal(0))
    return delta, (filled_qty * after_avg - before) / delta


def apply_fill(order: Order, filled_qty: int, avg_price: Decimal | None, broker_fill_id: str | None = None) -> None:
    """The position after this fill, and the fill's row in the ledger with the P&L it realised."""
    increment = fill_increment(order, filled_qty, avg_price)
    if increment is None:
        return
    qty, price = increment
    # The price as the ledger stores it, in the position too: replaying the fills
    # (orders.audit) then gives the position to the last digit.
    price = price.quantize(AVG_QUANTUM)
    if connection.vendor == "postgresql":
        # One strategy's fills are written one at a time, so their ids commit in order: the
        # risk limits keep a strategy's fill figures until its newest fill id changes
        # (risk.limits.read_figures). SQLite's IMMEDIATE transactions already admit one writer.
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id FROM {STRATEGIES} WHERE id = %s FOR UPDATE", [order.strategy_id])
    key = dict(strategy_id=order.strategy_id, exchange=order.exchange, symbol=order.symbol, product=order.product)
    position = statements.first(Position, lock=True, **key)
    before = Book() if position is None else Book(position.net_qty, position.avg_price, position.realized_pnl)
    book = before.add(qty if order.side == Side.BUY else -qty, price)
    now = timezone.now()
    figures = dict(net_qty=book.net_qty, avg_price=book.avg_price, realized_pnl=book.realized_pnl, updated_at=now)
    if position is None:
        # Inserted with its figures, no get_or_create (a savepoint and an UPDATE more): nobody
        # else can create it meanwhile, as every fill of this strategy waits for the strategy's
        # lock above (SQLite: for the one writer) until this commits.
        statements.insert(Position(**key, **figures))
    else:
        statements.update(Position, figures, pk=position.pk)
    statements.insert(Fill(order=order, strategy_id=order.strategy_id, qty=qty, price=price, cum_qty=filled_qty,
                           realized_pnl=book.realized_pnl - before.realized_pnl,
                           execution_type=order.execution_type, broker_fill_id=broker_fill_id, at=now))
    log.info("position %s %s:%s %s %+d -> %+d", order.strategy_id, order.exchange, order.symbol, order.product,
             before.net_qty, book.net_qty)


def positions_from_orders() -> dict[tuple, Book]:
    """Every position recomputed from the orders' fills (a check on apply_fill).

    Each order's whole fill is replayed at its average price, in the order the orders last
    changed: the net quantity always agrees with apply_fill's rows; the average and the
    realized P&L (average cost depends on the order of fills) agree as long as no order's
    fills interleave with another's on the same position, e.g. a partial fill, then another
    order's fill, then the rest or a cancel. Orders keep only cumulative fills, so the true
    fill order is known to apply_fill alone."""
    books: dict[tuple, Book] = defaultdict(Book)
    for order in Order.objects.filter(filled_qty__gt=0).order_by("updated_at", "id"):
        key = (order.strategy_id, order.exchange, order.symbol, order.product)
        signed = order.filled_qty if order.side == Side.BUY else -order.filled_qty
        books[key] = books[key].add(signed, order.avg_price if order.avg_price is not None else order.price or Decimal(0))
    return dict(books)
