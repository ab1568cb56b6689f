"""Blockers: checks that run on every freshly registered leg before anything is sent.

A blocker takes the alert's context and returns {leg number: tag} for the legs it blocks.
The first blocker to block a leg sets its tag; blocked legs become FAILED, the rest are
sent. The execution guard and the risk limits add their blockers to BLOCKERS.
"""

from collections.abc import Callable
from dataclasses import dataclass

from orders.models import Alert, Order, Strategy


@dataclass(frozen=True)
class IntakeContext:
    strategy: Strategy
    alert: Alert
    orders: list[Order]


Blocker = Callable[[IntakeContext], dict[int, str]]


def strategy_disabled(ctx: IntakeContext) -> dict[int, str]:
    if ctx.strategy.enabled:
        return {}
    return {order.leg: "GUARD_BLOCKED:STRATEGY_DISABLED" for order in ctx.orders}


BLOCKERS: list[Blocker] = [strategy_disabled]


def evaluate(ctx: IntakeContext) -> dict[int, str]:
    """{leg number: tag} for every blocked leg."""
    blocked: dict[int, str] = {}
    for blocker in BLOCKERS:
        for leg, tag in blocker(ctx).items():
            blocked.setdefault(leg, tag)
        if len(blocked) == len(ctx.orders):
            break
    return blocked
