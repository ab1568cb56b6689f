"""Blockers: checks that run on every freshly registered leg, inside the intake transaction,
before anything is sent.

A blocker looks at the legs no earlier blocker has blocked (`ctx.pending()`) and returns a
Verdict for each leg it blocks; the first verdict on a leg stands. The strategy's leg
policy then decides what a blocked leg means for the rest of its alert.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from orders.models import Alert, LegPolicy, Order, Strategy


class Verdict(NamedTuple):
    tag: str  # RISK_BLOCKED:<CODE> or GUARD_BLOCKED:<CODE>[ <who>]
    detail: str = ""  # the specifics, for the audit row


@dataclass
class IntakeContext:
    strategy: Strategy
    alert: Alert
    orders: list[Order]
    blocked: dict[int, Verdict] = field(default_factory=dict)  # leg number -> verdict

    def pending(self) -> list[Order]:
        return [o for o in self.orders if o.leg not in self.blocked]


Blocker = Callable[[IntakeContext], dict[int, Verdict]]


def strategy_disabled(ctx: IntakeContext) -> dict[int, Verdict]:
    if ctx.strategy.enabled:
        return {}
    return {order.leg: Verdict("GUARD_BLOCKED:STRATEGY_DISABLED") for order in ctx.pending()}


def kill_switch(ctx: IntakeContext) -> dict[int, Verdict]:
    from .killswitch import block_tag, effective_mode

    mode = effective_mode(ctx.strategy.pk)
    return {o.leg: Verdict(tag, f"kill switch {mode}") for o in ctx.pending()
            if (tag := block_tag(mode, o.execution_type))}


def execution_guard(ctx: IntakeContext) -> dict[int, Verdict]:
    from .guard import check_legs

    return check_legs(ctx.strategy, ctx.alert, ctx.pending())


# Risk before guard, as the seed orders them; the guard last, as it takes the instrument locks.
BLOCKERS: list[Blocker] = [strategy_disabled, kill_switch, execution_guard]


def batch_verdict(blocked: dict[int, Verdict]) -> Verdict:
    reasons = "; ".join(f"leg {leg}: {verdict.tag}" for leg, verdict in sorted(blocked.items()))
    # The tag is cut at 255 characters (a 20-leg alert can need more); the detail keeps every
    # blocked leg's reason and specifics.
    specifics = "; ".join(f"leg {leg}: {verdict.tag}" + (f" ({verdict.detail})" if verdict.detail else "")
                          for leg, verdict in sorted(blocked.items()))
    return Verdict(f"GUARD_BLOCKED:BATCH {reasons}", f"another leg of this alert was blocked: {specifics}")


def evaluate(ctx: IntakeContext) -> dict[int, Verdict]:
    """{leg number: verdict} for every leg that must not be sent."""
    for blocker in BLOCKERS:
        if not ctx.pending():
            break
        ctx.blocked.update(blocker(ctx))
    if ctx.blocked and ctx.pending() and ctx.strategy.leg_policy == LegPolicy.ALL_OR_NONE:
        # A leg blocked on its own keeps its reason; the legs failed for the batch say which
        # leg took them down.
        batch = batch_verdict(ctx.blocked)
        return {o.leg: ctx.blocked.get(o.leg, batch) for o in ctx.orders}
    return ctx.blocked
