"""The blocker interface: what a blocker is given, what it answers, and how the answers of
the configured blockers (settings.ORDERDESK_BLOCKERS, in that order) become each leg's fate.

A blocker looks at the legs no earlier blocker has blocked (`ctx.pending()`) and returns a
Verdict for each leg it blocks; the first verdict on a leg stands. A leg split at the freeze
quantity is several orders (slices) of one leg number: a verdict on the leg fails them all. The strategy's leg policy
then decides what a blocked leg means for the rest of its alert. To explain an alert
(`ctx.explain`), every blocker sees every leg and notes every check it ran, passed or not.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.utils import timezone

from orders.models import Alert, LegPolicy, Order, Strategy


class Verdict(NamedTuple):
    tag: str  # RISK_BLOCKED:<CODE>[ <figures>] or GUARD_BLOCKED:<CODE>[ <figures>]
    detail: str = ""  # the full computation, for the audit row


@dataclass(frozen=True)
class Check:
    """One check on one leg, as `explain` lists it."""

    leg: int
    code: str
    passed: bool
    tag: str = ""
    detail: str = ""
    slice: int = 1


@dataclass
class IntakeContext:
    strategy: Strategy
    alert: Alert
    orders: list[Order]
    explain: bool = False
    now: datetime = field(default_factory=timezone.now)
    blocked: dict[int, Verdict] = field(default_factory=dict)  # leg number -> verdict
    checks: list[Check] = field(default_factory=list)  # only when explaining
    # Called with the legs that passed every blocker, before the intake commits (not when
    # explaining): counts a later intake reads (risk.limits' order rate).
    after_verdicts: list[Callable[[list[Order]], None]] = field(default_factory=list)
    # The symbol master's rows of the legs' instruments (brokers.instruments.Spec by trading
    # symbol); None: no master is loaded for the exchange.
    instruments: dict | None = None
    # Legs computed from a target position (orders.targets): they counted the position and the
    # live orders themselves, so the guard's duplicate checks do not apply to them.
    targeted: frozenset = frozenset()

    def pending(self) -> list[Order]:
        if self.explain:
            return list(self.orders)
        return [o for o in self.orders if o.leg not in self.blocked]

    def note(self, order: Order, code: str, verdict: Verdict | None, detail: str = "") -> Verdict | None:
        """Record one check's outcome (when explaining) and hand the verdict back."""
        if self.explain:
            self.checks.append(Check(order.leg, code, verdict is None, verdict.tag if verdict else "",
                                     verdict.detail if verdict else detail, order.slice))
        return verdict


Blocker = Callable[[IntakeContext], dict[int, Verdict]]


def batch_verdict(blocked: dict[int, Verdict]) -> Verdict:
    reasons = "; ".join(f"leg {leg}: {verdict.tag}" for leg, verdict in sorted(blocked.items()))
    # The tag is cut at 255 characters (a 20-leg alert can need more); the detail keeps every
    # blocked leg's reason and specifics.
    specifics = "; ".join(f"leg {leg}: {verdict.tag}" + (f" ({verdict.detail})" if verdict.detail else "")
                          for leg, verdict in sorted(blocked.items()))
    return Verdict(f"GUARD_BLOCKED:BATCH {reasons}", f"another leg of this alert was blocked: {specifics}")


def evaluate(ctx: IntakeContext, blockers: list[Blocker]) -> dict[int, Verdict]:
    """{leg number: verdict} for every leg that must not be sent. Then, in the same
    transaction, what blockers asked to be told about the legs that passed them all."""
    for blocker in blockers:
        if not ctx.pending():
            break
        for leg, verdict in blocker(ctx).items():
            ctx.blocked.setdefault(leg, verdict)
    verdicts = ctx.blocked
    legs = {o.leg for o in ctx.orders}
    if ctx.blocked and len(ctx.blocked) < len(legs) and ctx.strategy.leg_policy == LegPolicy.ALL_OR_NONE:
        # A leg blocked on its own keeps its reason; the legs failed for the batch say which
        # leg took them down.
        batch = batch_verdict(ctx.blocked)
        verdicts = {o.leg: ctx.blocked.get(o.leg, batch) for o in ctx.orders}
    if not ctx.explain:
        passed = [o for o in ctx.orders if o.leg not in verdicts]
        for hook in ctx.after_verdicts:
            hook(passed)
    return verdicts
