"""The execution guard: duplicates, cross-strategy conflicts and exit checks.

It reads only the database (live orders and our positions), never the broker, and runs
under a row lock per instrument taken in the intake transaction: two identical alerts on
two web workers are checked one after the other, and the second sees the first's order.
A FAILED order is no longer live, so a terminal transition releases the guard by itself.
"""

from dataclasses import dataclass

from orders.models import LIVE_STATUSES, Alert, ExecutionType, Order, Position, Side, Strategy

from .blockers import Verdict
from .models import GuardLock


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


def lock_instruments(exchange: str, symbols: list[str]) -> None:
    """Lock one row per instrument (created on first use), in a fixed order: no deadlocks.
    On SQLite the IMMEDIATE transaction already serialises writers."""
    symbols = sorted(symbols)
    locked = GuardLock.objects.select_for_update().filter(exchange=exchange, symbol__in=symbols).order_by("symbol")
    if len(list(locked)) < len(symbols):
        GuardLock.objects.bulk_create([GuardLock(exchange=exchange, symbol=s) for s in symbols],
                                      ignore_conflicts=True)
        list(locked.all())


def _live_exposures(exchange: str, symbols: list[str], alert: Alert) -> list[Exposure]:
    rows = (Order.objects.filter(exchange=exchange, symbol__in=symbols, status__in=LIVE_STATUSES)
            .exclude(alert=alert)
            .values_list("strategy_id", "strategy__name", "symbol", "side", "execution_type", "product",
                         "qty", "filled_qty"))
    return [Exposure(*row[:6], remaining_qty=row[6] - row[7]) for row in rows]


def _open_positions(exchange: str, symbols: list[str]) -> list[tuple]:
    """(strategy_id, strategy name, symbol, product, net qty) of every open position."""
    return list(Position.objects.filter(exchange=exchange, symbol__in=symbols).exclude(net_qty=0)
                .values_list("strategy_id", "strategy__name", "symbol", "product", "net_qty"))


def _direction(net_qty: int) -> str:
    return Side.BUY if net_qty > 0 else Side.SELL


def _check_entry(order: Order, strategy: Strategy, live: list[Exposure], positions: list[tuple]) -> Verdict | None:
    mine = order.strategy_id
    if strategy.block_duplicates:
        for e in live:
            if e.strategy_id == mine and e.symbol == order.symbol and e.side == order.side:
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


def _check_exit(order: Order, live: list[Exposure], positions: list[tuple]) -> Verdict | None:
    net = sum(p[4] for p in positions
              if p[0] == order.strategy_id and p[2] == order.symbol and p[3] == order.product)
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


def check_legs(strategy: Strategy, alert: Alert, legs: list[Order]) -> dict[int, Verdict]:
    """Check legs in order; a leg that passes counts as live for the legs after it."""
    if not legs:
        return {}
    exchange = legs[0].exchange
    symbols = sorted({leg.symbol for leg in legs})
    lock_instruments(exchange, symbols)
    live = _live_exposures(exchange, symbols, alert)
    positions = _open_positions(exchange, symbols)
    blocked = {}
    for leg in legs:
        check = _check_entry(leg, strategy, live, positions) if leg.execution_type == ExecutionType.ENTRY \
            else _check_exit(leg, live, positions)
        if check:
            blocked[leg.leg] = check
        else:
            live.append(Exposure(leg.strategy_id, strategy.name, leg.symbol, leg.side, leg.execution_type,
                                 leg.product, leg.qty))
    return blocked
