"""The built-in blockers, in the order settings.ORDERDESK_BLOCKERS runs them: strategy
disabled, kill switch, strategy rules (and stale alerts), the symbol master's instrument
checks, risk limits, the available cash, execution guard (last: it takes the instrument
locks). The interface they implement is risk.pipeline."""

from orders.models import ExecutionType, Source

from . import funds, guard, instruments, limits, rules
from .killswitch import block_tag, effective_mode
from .pipeline import IntakeContext, Verdict


def strategy_disabled(ctx: IntakeContext) -> dict[int, Verdict]:
    verdict = None if ctx.strategy.enabled else Verdict("GUARD_BLOCKED:STRATEGY_DISABLED")
    return {o.leg: verdict for o in ctx.pending() if ctx.note(o, "STRATEGY_DISABLED", verdict)}


def kill_switch(ctx: IntakeContext) -> dict[int, Verdict]:
    mode = effective_mode(ctx.strategy.pk)
    blocked = {}
    for order in ctx.pending():
        tag = block_tag(mode, order.execution_type)
        if ctx.note(order, "KILL_SWITCH", Verdict(tag, f"kill switch {mode}") if tag else None, f"kill switch {mode}"):
            blocked[order.leg] = Verdict(tag, f"kill switch {mode}")
    return blocked


def strategy_rules(ctx: IntakeContext) -> dict[int, Verdict]:
    return rules.check_rules(ctx)


def instrument_checks(ctx: IntakeContext) -> dict[int, Verdict]:
    return instruments.check_instruments(ctx)


def modification_check(order, *, qty=None, price=None, trigger_price=None, instrument=None) -> Verdict | None:
    """An open order's new terms, checked as the intake checks a new order's: against the
    instrument (its symbol master row, when one is loaded), then the risk limits."""
    verdict = instruments.check_new_terms(order, instrument, qty=qty, price=price, trigger_price=trigger_price)
    if verdict or (order.source == Source.SYSTEM and order.execution_type == ExecutionType.EXIT):
        return verdict  # a square-off's exit re-priced to fill: the limits never trap a position
    return limits.check_modification(order, qty=qty, price=price, trigger_price=trigger_price)


def lock_instruments_early(strategy, exchange: str, symbols: list[str]) -> None:
    """For an intake that reads positions before its blockers run (target positions): the locks
    the blockers take, in their one order (the counted limits' rows, then the instruments,
    sorted), so that two intakes never wait for each other the other way round."""
    limits.lock_before_instruments(strategy)
    guard.lock_instruments(exchange, symbols)


def risk_limits(ctx: IntakeContext) -> dict[int, Verdict]:
    return limits.check_limits(ctx)


def funds_check(ctx: IntakeContext) -> dict[int, Verdict]:
    return funds.check_funds(ctx)


def execution_guard(ctx: IntakeContext) -> dict[int, Verdict]:
    blocked = guard.check_legs(ctx.strategy, ctx.alert, ctx.pending(), ctx.targeted)
    for order in ctx.pending():
        ctx.note(order, "EXECUTION_GUARD", blocked.get(order.leg), "no duplicate, conflict or excess exit")
    return blocked
