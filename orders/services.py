"""Intake: the one way an order enters the system, whatever its source.

Register the alert and every leg as CREATED, run the blockers, fail the blocked legs with
their tag and enqueue the rest — all in one transaction, so an alert is either recorded
whole with its verdicts and queued work, or not at all.
"""

import logging
from dataclasses import dataclass, replace
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Min
from django.utils import timezone

from brokers import instruments
from orderdesk import statements
from risk.pipeline import Check, IntakeContext, evaluate

from . import legs, lifecycle, targets
from .blocker_registry import get_blockers
from .models import Alert, EventKind, Order, RejectedAlert, Status, Strategy, new_alert_id
from .queue import Submissions
from .validation import AlertRequest

log = logging.getLogger("orderdesk.intake")

BLOCKER_ACTOR = "guard"


@dataclass(frozen=True)
class IntakeResult:
    alert: Alert
    orders: list[Order]
    created: bool  # False: a repeated alert_id, nothing new was registered
    note: str = ""  # target legs already at their target (no order)


@dataclass(frozen=True)
class LegExplanation:
    """One order the alert would register: a leg, or one slice of a leg split at the freeze qty."""

    leg: int
    checks: list[Check]
    verdict: str  # the tag the leg would get; empty: it would be sent
    slice: int = 1
    qty: int = 0
    note: str = ""  # lots and slicing, as the creation audit row would say


@dataclass(frozen=True)
class Explanation:
    legs: list[LegExplanation]
    note: str = ""  # target legs already at their target (no order)


class _Explained(Exception):
    """Carries an explanation out of the intake transaction, which it rolls back."""

    def __init__(self, legs: list[LegExplanation], note: str = ""):
        super().__init__("explained")
        self.legs, self.note = legs, note


def register_alert(*, strategy: Strategy, request: AlertRequest, source: str, actor: str,
                   payload: dict, sender_ip: str | None = None) -> IntakeResult:
    try:
        return _register(strategy, request, source, actor, payload, sender_ip)
    except IntegrityError:
        # Two deliveries of one alert_id raced; the other one registered it.
        existing = _existing(strategy, request.alert_id)
        if existing is None:
            raise
        return existing


def _existing(strategy: Strategy, alert_id: str | None) -> IntakeResult | None:
    if alert_id is None:
        return None
    alert = Alert.objects.filter(strategy=strategy, alert_id=alert_id).first()
    if alert is None:
        return None
    return IntakeResult(alert, list(alert.orders.order_by("leg", "slice")), created=False)


def explain_alert(*, strategy: Strategy, request: AlertRequest, source: str, actor: str, payload: dict,
                  sender_ip: str | None = None) -> "Explanation":
    """What the intake would do with this alert, leg by leg, every check that ran listed: the
    real intake path, in a transaction that is rolled back, so nothing of it stays."""
    try:
        # A fresh alert id: a repeated one would answer the first delivery's orders unchecked.
        _register(strategy, replace(request, alert_id=None), source, actor, payload, sender_ip, explain=True)
    except _Explained as explained:
        return Explanation(explained.legs, explained.note)
    raise AssertionError("the explaining intake returned instead of rolling back")


def _register(strategy, request, source, actor, payload, sender_ip, explain: bool = False) -> IntakeResult:
    now = timezone.now()
    alert = Alert(
        strategy=strategy,
        source=source,
        alert_id=request.alert_id or new_alert_id(),
        client_supplied_id=request.alert_id is not None,
        received_at=now,
        sent_at=request.sent_at,
        sender_ip=sender_ip,
        actor=actor,
        payload=payload,
    )
    # What needs no lock is done before the transaction: on SQLite the transaction holds the
    # one write lock that every intake and worker waits for (the writer queue timed: held
    # 0.96 ms per intake in process, 3 ms under benchmarks/flow.py's load; 0.65 and 1.8 ms
    # with this). Target legs are planned inside it: they read the position under the
    # blockers' locks.
    targeted = targets.has_targets(request)
    specs = instruments.specs(request.exchange, {leg.symbol for leg in request.legs})
    planned = None if targeted else _plan(strategy, request, source, specs, now, explain)
    alert_insert = statements.PreparedInsert(alert)
    # A repeated alert_id is caught by the unique constraint (see register_alert) rather
    # than looked up first: repeats are rare and the lookup would cost every intake a query.
    with transaction.atomic():
        alert_insert.run()
        resolved = targets.resolve(strategy, request) if targeted else None
        if resolved is not None:
            request = replace(request, legs=resolved.legs)
            planned = _plan(strategy, request, source, specs, now, explain)
        built, notes, submissions = planned
        for order in built:
            order.alert = alert
        computed = resolved.notes if resolved else {}
        notes = ["; ".join(n for n in (computed.get(order.leg, ""), note) if n)
                 for order, note in zip(built, notes, strict=True)]
        orders = lifecycle.register(built, actor, notes=notes)
        ctx = IntakeContext(strategy, alert, orders, explain=explain, now=now, instruments=specs,
                            targeted=frozenset(computed))
        at_target = "; ".join(f"leg {leg}: {note}" for leg, note in computed.items()
                              if leg not in {o.leg for o in orders})
        if explain:
            blocked = evaluate(ctx, get_blockers())
            raise _Explained([LegExplanation(o.leg, [c for c in ctx.checks if (c.leg, c.slice) == (o.leg, o.slice)],
                                             blocked[o.leg].tag if o.leg in blocked else "", o.slice, o.qty,
                                             note) for o, note in zip(orders, notes, strict=True)], at_target)
        blocked = evaluate(ctx, get_blockers())
        for order in orders:
            if order.leg in blocked:
                verdict = blocked[order.leg]
                lifecycle.move(order, Status.FAILED, tag=verdict.tag, detail=verdict.detail, actor=BLOCKER_ACTOR,
                               kind=EventKind.BLOCKED)
        submissions.enqueue([o.command_id for o in orders if o.status == Status.CREATED])
        if resolved is not None and resolved.follow_ups:
            targets.record_follow_ups(alert, [o for o in orders if o.status == Status.CREATED], resolved)
    return IntakeResult(alert, orders, created=True, note=at_target)


def _plan(strategy, request, source, specs, now, explain) -> tuple[list[Order], list[str], Submissions | None]:
    """The alert's orders, built and not yet saved (their alert is set once it is), for each
    the note of how its quantity came about, and their submission tasks (None when
    explaining). Raises InvalidAlert (legs.plan)."""
    planned = legs.plan(strategy, request, specs, source)
    orders = [
        Order(
            leg=part.leg.leg,
            slice=part.slice,
            strategy=strategy,
            source=source,
            execution_type=part.leg.execution_type or request.execution_type,
            exchange=request.exchange,
            symbol=part.leg.symbol,
            side=part.leg.side,
            qty=part.qty,
            order_type=part.leg.order_type,
            price=part.leg.price,
            trigger_price=part.leg.trigger_price,
            product=part.leg.product,
            created_at=now,
            updated_at=now,
        )
        for part in planned
    ]
    return orders, [part.note for part in planned], None if explain else Submissions([o.command_id for o in orders])


def record_rejected_alert(*, status_code: int, reason: str, sender_ip: str | None, strategy_name: str,
                          body: str) -> None:
    """A refused intake still leaves a row: one per sender, status, reason, strategy name and
    minute, counting the repeats (a runaway sender adds to a count, not rows; the watcher
    prunes beyond REJECTED_ALERTS_KEEP). A failure to write it must not turn a 4xx into a 500."""
    def clean(text: str, cap: int) -> str:  # storable anywhere: no NULs, no lone surrogates
        return text[:cap].replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")

    now = timezone.now()
    minute = now.replace(second=0, microsecond=0)
    reason, strategy_name = clean(reason, 2000), clean(strategy_name, 64)
    try:
        repeated = RejectedAlert.objects.filter(
            received_at__gte=minute, received_at__lt=minute + timedelta(minutes=1),
            sender_ip=sender_ip, status_code=status_code, reason=reason, strategy_name=strategy_name,
        ).update(count=F("count") + 1, last_at=now)
        if not repeated:
            RejectedAlert.objects.create(received_at=now, last_at=now, status_code=status_code, reason=reason,
                                         sender_ip=sender_ip, strategy_name=strategy_name, body=clean(body, 4096))
    except Exception:  # noqa: BLE001 - the refusal itself is what the client must see
        log.exception("could not record a rejected alert (%s %s)", status_code, reason[:200])


PRUNE_BATCH = 5000  # rows per pass: a big first prune must not hold SQLite's write lock for long


def prune_rejected_alerts(keep: int) -> int:
    """Delete the oldest RejectedAlert rows beyond the newest `keep` (at most PRUNE_BATCH)."""
    span = RejectedAlert.objects.aggregate(oldest=Min("id"), newest=Max("id"))
    if span["newest"] is None or span["newest"] - span["oldest"] < keep:
        return 0
    cutoff = min(span["newest"] - keep, span["oldest"] + PRUNE_BATCH)
    deleted, _ = RejectedAlert.objects.filter(id__lte=cutoff).delete()
    return deleted
