"""The execution guard: duplicates, cross-strategy conflicts and exit checks.

It reads only the database (live orders and our positions), never the broker, and runs
under a row lock per instrument taken in the intake transaction: two identical alerts on
two web workers are checked one after the other, and the second sees the first's order.
A FAILED order is no longer live, so a terminal transition releases the guard by itself.
"""

from dataclasses import dataclass
from typing import NamedTuple

from django.db import connection

from orders.models import LIVE_STATUSES, Alert, ExecutionType, Order, Position, Product, Side, Strategy
from orders.tradingday import trading_day_start

from .pipeline import Verdict
from .models import GuardLock

ORDERS, POSITIONS, STRATEGIES = (connection.ops.quote_name(model._meta.db_table) for model in (Order, Position, Strategy))
# Live orders are few, an instrument's orders many: SQLite's planner, without statistics,
# took the blotter's (symbol, created_at) index and read every order ever placed on the
# symbol (the intake grew by 0.2-0.4 ms with the benchmark's history). PostgreSQL plans from
# its statistics.
LIVE_INDEX = " INDEXED BY order_status_created" if connection.vendor == "sqlite" else ""


@dataclass(frozen=True)
class Exposure:
    """A live order (or a leg passed earlier in this alert) on one of the alert's instruments."""

    strategy_id: int
    strategy_name: str
    symbol: str
    side: str
    execution_type: str
    product: str
    remaining_qty: int
    leg: int | None = None  # a leg of this alert (its slices are one order split, not duplicates)


class Holding(NamedTuple):
    """An open position (ours, from fills) on one of the alert's instruments."""

    strategy_id: int
    strategy_name: str
    symbol: str
    product: str
    net_qty: int


def lock_instruments(exchange: str, symbols: list[str]) -> None:
    """Lock one row per instrument, created on first use, in one statement and in a fixed
    (sorted) order: no deadlocks.

    `INSERT … ON CONFLICT DO UPDATE … WHERE false` inserts the missing rows and locks the
    existing ones (PostgreSQL locks every conflicting row even when the WHERE clause updates
    none, so no new row version is written), row by row in the VALUES order. A SELECT … FOR
    UPDATE of the existing rows followed by an insert of the missing ones can deadlock: an
    intake holds the row it just inserted, then waits for a row another intake locked, which
    waits for the inserted one."""
    if connection.vendor != "postgresql":
        return  # SQLite: the intake's BEGIN IMMEDIATE already admits one writer at a time
    symbols = sorted(set(symbols))
    table = connection.ops.quote_name(GuardLock._meta.db_table)
    rows = ", ".join(["(%s, %s)"] * len(symbols))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (exchange, symbol) VALUES {rows} "
            "ON CONFLICT (exchange, symbol) DO UPDATE SET symbol = EXCLUDED.symbol WHERE false",
            [value for symbol in symbols for value in (exchange, symbol)],
        )


def _exposures(exchange: str, symbols: list[str], alert: Alert) -> tuple[list[Exposure], list[Holding]]:
    """The live orders (other than this alert's) and the open positions on the instruments.

    One statement, so one snapshot: on PostgreSQL (READ COMMITTED) each statement sees what was
    committed when it started, and a fill committing between two reads (its order update and
    its position update are one transaction) would show a live exit's remainder together with
    the position that fill already reduced, and block a fitting exit."""
    # Hand-written: the ORM spent ~0.8 ms of every intake compiling this compound statement.
    marks = ", ".join(["%s"] * len(symbols))
    sql = f"""
        SELECT 'order', o.strategy_id, s.name, o.symbol, o.side, o.execution_type, o.product,
               COALESCE(o.working_qty, o.qty), o.filled_qty
          FROM {ORDERS} o{LIVE_INDEX} JOIN {STRATEGIES} s ON s.id = o.strategy_id
         WHERE o.exchange = %s AND o.symbol IN ({marks}) AND o.status IN (%s, %s) AND o.alert_id <> %s
        UNION ALL
        SELECT 'position', p.strategy_id, s.name, p.symbol, '', '', p.product, p.net_qty, 0
          FROM {POSITIONS} p JOIN {STRATEGIES} s ON s.id = p.strategy_id
         WHERE p.exchange = %s AND p.symbol IN ({marks}) AND p.net_qty <> 0
           AND NOT (p.product = %s AND p.updated_at < %s)"""
    # An intraday (MIS) position lives for its trading day: the broker squares it off at the
    # close with orders that are not ours, so yesterday's row would block today's entries.
    day_start = connection.ops.adapt_datetimefield_value(trading_day_start())
    params = [exchange, *symbols, *LIVE_STATUSES, alert.pk, exchange, *symbols, Product.MIS, day_start]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    exposures, positions = [], []
    for kind, strategy_id, name, symbol, side, execution_type, product, qty, filled in rows:
        if kind == "order":
            exposures.append(Exposure(strategy_id, name, symbol, side, execution_type, product, qty - filled))
        else:
            positions.append(Holding(strategy_id, name, symbol, product, qty))
    return exposures, positions


def _direction(net_qty: int) -> str:
    return Side.BUY if net_qty > 0 else Side.SELL


def _check_entry(order: Order, strategy: Strategy, live: list[Exposure], positions: list[Holding],
                 targeted: bool = False) -> Verdict | None:
    mine = order.strategy_id
    if strategy.block_duplicates and not targeted:
        for e in live:
            if e.strategy_id == mine and e.symbol == order.symbol and e.side == order.side and e.leg != order.leg:
                return Verdict("GUARD_BLOCKED:DUPLICATE_LIVE_ORDER",
                               f"a live {e.execution_type} {e.side} {order.symbol} of this strategy")
        for sid, _, symbol, product, net in positions:
            if sid == mine and symbol == order.symbol and _direction(net) == order.side:
                return Verdict("GUARD_BLOCKED:DUPLICATE_POSITION", f"open position {net:+d} {symbol} {product}")
    if not strategy.allow_cross_strategy:
        for e in live:
            if e.strategy_id != mine and e.symbol == order.symbol and e.side != order.side:
                return Verdict(f"GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT {e.strategy_name}",
                               f"its live {e.side} {order.symbol}")
        for sid, name, symbol, product, net in positions:
            if sid != mine and symbol == order.symbol and _direction(net) != order.side:
                return Verdict(f"GUARD_BLOCKED:CROSS_STRATEGY_CONFLICT {name}",
                               f"its open position {net:+d} {symbol} {product}")
    return None


def _check_exit(order: Order, live: list[Exposure], positions: list[Holding]) -> Verdict | None:
    net = sum(p.net_qty for p in positions
              if p.strategy_id == order.strategy_id and p.symbol == order.symbol and p.product == order.product)
    closes = (net > 0 and order.side == Side.SELL) or (net < 0 and order.side == Side.BUY)
    if not closes:
        wanted = "long" if order.side == Side.SELL else "short"
        return Verdict("GUARD_BLOCKED:NO_POSITION",
                       f"no {wanted} {order.product} position in {order.symbol} for {order.side} to close (net {net:+d})")
    exiting = sum(e.remaining_qty for e in live
                  if e.strategy_id == order.strategy_id and e.symbol == order.symbol and e.product == order.product
                  and e.execution_type == ExecutionType.EXIT and e.side == order.side)
    if order.qty + exiting > abs(net):
        return Verdict("GUARD_BLOCKED:EXIT_EXCEEDS_POSITION",
                       f"exit {order.qty} + live exits {exiting} > position {abs(net)}")
    return None


def check_legs(strategy: Strategy, alert: Alert, legs: list[Order], targeted: frozenset = frozenset()
               ) -> dict[int, Verdict]:
    """Check legs in order; a leg that passes counts as live for the legs after it. `targeted`:
    legs computed from a target position, which never count as duplicates."""
    if not legs:
        return {}
    exchange = legs[0].exchange
    symbols = sorted({leg.symbol for leg in legs})
    lock_instruments(exchange, symbols)
    live, positions = _exposures(exchange, symbols, alert)
    blocked = {}
    for leg in legs:
        check = _check_entry(leg, strategy, live, positions, leg.leg in targeted) \
            if leg.execution_type == ExecutionType.ENTRY \
            else _check_exit(leg, live, positions)
        if check:
            blocked.setdefault(leg.leg, check)
        else:
            live.append(Exposure(leg.strategy_id, strategy.name, leg.symbol, leg.side, leg.execution_type,
                                 leg.product, leg.qty, leg.leg))
    return blocked
