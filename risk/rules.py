"""Strategy rules (GUARD_BLOCKED:): what a strategy may trade, when, and whether the alert
is still fresh. All from the strategy's own fields, the MarketHoliday table and the alert's
sent_at: no figures from the market."""

from datetime import datetime
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection

from orders.models import WEEKDAYS, ExecutionType, Order, Source, Strategy, split_list

from .models import MarketHoliday
from .pipeline import IntakeContext, Verdict

FUTURE_TOLERANCE_S = 5  # a sender's clock may run a little ahead of ours


def _local(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo(settings.TRADING_TZ))


def stale_alert(ctx: IntakeContext) -> Verdict | None:
    sent_at = ctx.alert.sent_at
    if sent_at is None:
        return None
    age = (ctx.alert.received_at - sent_at).total_seconds()
    limit = settings.ALERT_MAX_AGE_S
    if age > limit or age < -FUTURE_TOLERANCE_S:
        return Verdict(f"GUARD_BLOCKED:STALE_ALERT {age:.0f}s",
                       f"sent_at {_local(sent_at):%Y-%m-%d %H:%M:%S} IST, received "
                       f"{_local(ctx.alert.received_at):%H:%M:%S.%f} IST: {age:.1f}s old; allowed 0 to "
                       f"{limit:g}s (ALERT_MAX_AGE_S), up to {FUTURE_TOLERANCE_S}s ahead")
    return None


HOLIDAYS = connection.ops.quote_name(MarketHoliday._meta.db_table)


def market_closed(ctx: IntakeContext, exchange: str) -> Verdict | None:
    today = _local(ctx.now).date()
    # Hand-written: the ORM's compile of this one-row read cost more than the read itself.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT exchange, description FROM {HOLIDAYS} WHERE date = %s AND exchange IN (%s, %s) "
                       "LIMIT 1", [connection.ops.adapt_datefield_value(today), "", exchange])
        holiday = cursor.fetchone()
    if holiday is None:
        return None
    return Verdict(f"GUARD_BLOCKED:MARKET_CLOSED {exchange} {today:%Y-%m-%d}",
                   f"{holiday[0] or 'every exchange'} closed on {today}: {holiday[1]}")


def symbol_not_allowed(strategy: Strategy, order: Order) -> Verdict | None:
    exchanges = split_list(strategy.allowed_exchanges)
    patterns = [p for p in strategy.symbol_patterns.replace(",", " ").split() if p]
    if exchanges and order.exchange not in exchanges:
        return Verdict(f"GUARD_BLOCKED:SYMBOL_NOT_ALLOWED {order.exchange}:{order.symbol}",
                       f"exchange {order.exchange} not in the strategy's {', '.join(exchanges)}")
    if patterns and not any(fnmatchcase(order.symbol, p.upper()) for p in patterns):
        return Verdict(f"GUARD_BLOCKED:SYMBOL_NOT_ALLOWED {order.exchange}:{order.symbol}",
                       f"{order.symbol} matches none of {' '.join(patterns)}")
    return None


def _not_in(values: str, value: str, code: str, what: str) -> Verdict | None:
    allowed = split_list(values)
    if allowed and value not in allowed:
        return Verdict(f"GUARD_BLOCKED:{code} {value}", f"{what} {value} not in the strategy's {', '.join(allowed)}")
    return None


def outside_window(ctx: IntakeContext, order: Order) -> Verdict | None:
    strategy = ctx.strategy
    if order.execution_type == ExecutionType.EXIT and strategy.exits_outside_window:
        return None
    local = _local(ctx.now)
    days = split_list(strategy.trading_days)
    day = WEEKDAYS[local.weekday()]
    start, end = strategy.window_start, strategy.window_end
    in_days = not days or day in days
    in_hours = start is None or end is None or start <= local.time() <= end
    if in_days and in_hours:
        return None
    window = f"{start:%H:%M}-{end:%H:%M}" if start and end else "all day"
    return Verdict(f"GUARD_BLOCKED:OUTSIDE_WINDOW {local:%H:%M:%S} IST {day}",
                   f"{local:%Y-%m-%d %H:%M:%S} IST ({day}) is outside {window} on {','.join(days) or 'every day'}")


def check_rules(ctx: IntakeContext) -> dict[int, Verdict]:
    pending = ctx.pending()
    if not pending:
        return {}
    stale = stale_alert(ctx)
    closed = market_closed(ctx, pending[0].exchange)
    strategy = ctx.strategy
    blocked = {}
    for order in pending:
        if order.source == Source.SYSTEM and order.execution_type == ExecutionType.EXIT:
            # A square-off closes what the strategy holds, at the time it chose: the rules
            # for its alerts (window, holidays, products, order types) never trap it in a position.
            ctx.note(order, "STRATEGY_RULES", None, "a square-off exit: the strategy's alert rules do not apply")
            continue
        checks = [
            ("STALE_ALERT", stale),
            ("MARKET_CLOSED", closed),
            ("SYMBOL_NOT_ALLOWED", symbol_not_allowed(strategy, order)),
            ("PRODUCT_NOT_ALLOWED", _not_in(strategy.allowed_products, order.product, "PRODUCT_NOT_ALLOWED",
                                            "product")),
            ("ORDER_TYPE_NOT_ALLOWED", _not_in(strategy.allowed_order_types, order.order_type,
                                               "ORDER_TYPE_NOT_ALLOWED", "order type")),
            ("OUTSIDE_WINDOW", outside_window(ctx, order)),
        ]
        for code, verdict in checks:
            if ctx.note(order, code, verdict) and order.leg not in blocked:
                blocked[order.leg] = verdict
    return blocked
