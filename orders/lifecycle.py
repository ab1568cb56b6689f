"""The one place an order's state changes.

Every change is a compare-and-set UPDATE (`WHERE id = … AND status = <expected> AND
broker_order_id = <expected>`, and on a current copy `AND audit_head = <the copy's>`, which
spares reading the row first) plus its OrderEvent row and a log line, in one transaction.
A function returns True when it won and False when another writer got there first (the
caller then does nothing).
"""

import logging
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from orderdesk import statements

from . import audit, events
from .models import TERMINAL_STATUSES, EventKind, Order, OrderEvent, Status, tag_parts
from .positions import apply_fill

log = logging.getLogger("orderdesk.lifecycle")

ALLOWED = {
    (Status.CREATED, Status.SENT_TO_BROKER),
    (Status.CREATED, Status.FAILED),
    (Status.SENT_TO_BROKER, Status.EXECUTED),
    (Status.SENT_TO_BROKER, Status.FAILED),
}
# Broker truth beats our guess: an order we gave up on as unknown that later shows up at the
# broker is reopened (watcher only; recorded and alerted).
RECOVERY = {(Status.FAILED, Status.SENT_TO_BROKER), (Status.FAILED, Status.EXECUTED)}
UNKNOWN_TAG_PREFIX = "BROKER_UNKNOWN:"
RECOVERY_ACTOR = "watcher"

AVG_QUANTUM = Decimal(1).scaleb(-Order._meta.get_field("avg_price").decimal_places)

# A further condition of a move's compare-and-set (the claim's kill switch).
When = Q | statements.Condition | None

# Fields only this module writes.
STATE_FIELDS = {"tag", "broker_order_id", "filled_qty", "avg_price", "cancel_requested_at", "working_qty",
                "working_price", "working_trigger_price"}  # and tag_family / tag_code, from the tag

DEFAULT_KIND = {
    Status.SENT_TO_BROKER: EventKind.CLAIMED,
    Status.EXECUTED: EventKind.EXECUTED,
    Status.FAILED: EventKind.FAILED,
}


class IllegalTransition(Exception):
    pass


def _check_allowed(order: Order, to: str, actor: str) -> None:
    move = (order.status, to)
    if move in ALLOWED:
        return
    if move in RECOVERY and order.tag.startswith(UNKNOWN_TAG_PREFIX) and actor == RECOVERY_ACTOR:
        return
    raise IllegalTransition(f"order {order.command_id}: {order.status} -> {to} is not allowed")


def _truncate(tag: str) -> str:
    return tag if len(tag) <= 255 else tag[:252] + "..."


def _apply(order: Order, to: str, *, kind: str, actor: str, detail: str, changes: dict, extra_filter: dict,
           when: When = None, fill_id: str = "") -> bool:
    unknown = set(changes) - STATE_FIELDS
    if unknown:
        raise ValueError(f"lifecycle cannot change {sorted(unknown)}")
    if "tag" in changes:
        changes["tag"] = _truncate(changes["tag"] or "")
        changes["tag_family"], changes["tag_code"] = tag_parts(changes["tag"])
    if changes.get("filled_qty") is not None and changes["filled_qty"] < order.filled_qty:
        # The broker never takes a fill back: a lower figure is a lagging report. Storing it
        # would count the difference into the position again when the true figure returns.
        log.warning("order %s: ignoring a report of %s filled, %s already recorded", order.command_id,
                    changes["filled_qty"], order.filled_qty)
        changes.pop("filled_qty")
        changes.pop("avg_price", None)
    if changes.get("avg_price") is not None:
        # As the row stores it: the fills ledger then adds up to the order's average exactly.
        changes["avg_price"] = Decimal(changes["avg_price"]).quantize(AVG_QUANTUM, rounding=ROUND_HALF_UP)
    if order.broker_order_id is not None and changes.get("broker_order_id", order.broker_order_id) != order.broker_order_id:
        # A broker id, once known, is the order's identity at the broker: it never changes.
        log.warning("order %s: refusing to replace broker id %s by %s", order.command_id,
                    order.broker_order_id, changes["broker_order_id"])
        return False
    now = timezone.now()
    update = dict(changes, status=to, updated_at=now)
    if order.status == Status.CREATED and to == Status.SENT_TO_BROKER:
        update["sent_at"] = now
    if "filled_qty" in changes:
        # The position takes the fill increment from this copy's filled_qty: a stale copy must lose.
        extra_filter = dict(extra_filter, filled_qty=order.filled_qty)
    cas = dict(pk=order.pk, status=order.status, broker_order_id=order.broker_order_id, **extra_filter)
    fields = dict(kind=kind, actor=actor, detail=detail, at=now)
    filled = "filled_qty" in changes
    # Built before any transaction: on SQLite it holds the one write lock.
    checked = _head_checked(order, to, update, cas, when, fields)
    if checked is not None and not filled and connection.vendor == "postgresql":
        # No fill to book: the change and its event are one statement, atomic by itself
        # (orderdesk.statements.insert_if_updated), one round trip where the transaction took
        # four (BEGIN, UPDATE, INSERT, COMMIT; measured: a submission's two moves were 8 of
        # its 12 statements).
        if statements.insert_if_updated(checked.update, checked.event):
            _done(order, to, dict(update, audit_head=checked.head), checked.event)
            return True
        checked = None  # stale: the locked path below
    insert = statements.PreparedInsert(checked.event) if checked is not None else None
    with transaction.atomic():
        event = None
        if checked is not None and statements.run_update(checked.update):
            event, update["audit_head"] = checked.event, checked.head
        if event is None:
            event = _set_after_lock(order, to, update, cas, when, **fields)
            if event is None:
                log.info("order %s: lost %s %s->%s to a concurrent writer", order.command_id, kind, order.status, to)
                return False
            insert = statements.PreparedInsert(event)
        if filled:
            apply_fill(order, changes["filled_qty"], changes.get("avg_price", order.avg_price), fill_id or None)
        insert.run()
    # After the block: on SQLite its commit let go of the write lock (inside an outer
    # transaction, on_commit still waits for that one).
    _done(order, to, update, event)
    return True


def _done(order: Order, to: str, update: dict, event: OrderEvent) -> None:
    """The copy takes the change; the log line and the subscribers hear of it on commit (an
    intake rolled back after its blocks must not report them), at once outside a transaction."""
    line = ("order %s %s %s->%s tag=%r actor=%s %s",
            order.command_id, event.kind, order.status, to, event.tag, event.actor, event.detail)
    for field, value in update.items():
        setattr(order, field, value)
    transaction.on_commit(lambda: log.info(*line))
    events.on_commit(events.order_event, Order, order=_copy(order), event=event)


def _event(order: Order, to: str, update: dict, state: dict, **fields) -> OrderEvent:
    """The event of this change, with the state it leaves (`state`: the row's state before)."""
    return OrderEvent(order=order, from_status=order.status, to_status=to, tag=update.get("tag", state["tag"]),
                      broker_order_id=update.get("broker_order_id", state["broker_order_id"]),
                      filled_qty=update.get("filled_qty", state["filled_qty"]), **fields)


@dataclass(frozen=True)
class _HeadChecked:
    """A change that needs no read first: its UPDATE also checks that the row still has the
    copy's audit head, so nothing has changed it since the copy was read (the row is immutable
    but for this module, and every change here moves the head). Measured on PostgreSQL (the
    submission and fill paths, in process): the read before the UPDATE was one of 4
    statements per move."""

    event: OrderEvent
    head: str  # the audit head the change leaves
    update: tuple[str, list]  # the compare-and-set UPDATE, the head among its conditions


def _head_checked(order: Order, to: str, update: dict, cas: dict, when: When, fields: dict) -> _HeadChecked | None:
    """None for a copy that carries no audit head."""
    head = order.__dict__.get("audit_head")
    if head is None:
        return None
    state = {"tag": order.tag, "broker_order_id": order.broker_order_id, "filled_qty": order.filled_qty}
    event = _event(order, to, update, state, **fields)
    new_head = audit.seal(event, order.command_id, head)
    return _HeadChecked(event, new_head, _update_sql(dict(update, audit_head=new_head), dict(cas, audit_head=head),
                                                     when))


def _update_sql(update: dict, where: dict, when: When) -> tuple[str, list]:
    if not isinstance(when, Q) and not any("__" in name for name in where):
        return statements.update_sql(Order, update, when, **where)
    # A lookup beyond plain equalities (a recovery's tag) or a condition as a Q: the ORM's.
    if isinstance(when, statements.Condition):
        when = when.expression()
    return statements.queryset_update_sql(Order.objects.filter(when or Q(), **where), update)


def _set_after_lock(order: Order, to: str, update: dict, cas: dict, when: When, **fields) -> OrderEvent | None:
    """The change made against the row as it is: its audit head and state locked until the
    commit, the event linked after the last one, and the copy refreshed with what this change
    leaves alone (a stale copy must not hide a cancel request, or price a fill from an old
    average). FOR NO KEY UPDATE, as the UPDATE itself takes: rows that reference the order (a
    modification, a fill) may still be inserted meanwhile, so two requests for one order never
    deadlock. SQLite's IMMEDIATE transactions already admit one writer at a time. The
    compare-and-set is on what the caller's decision rests on: the status and the broker id (a
    stale copy without an id must not fail an order a worker has since given one). None: the
    row is gone or the compare-and-set lost."""
    current = (Order.objects.select_for_update(no_key=True).filter(pk=order.pk)
               .values("audit_head", "tag_family", "tag_code", *STATE_FIELDS).first())
    if current is None:
        return None
    event = _event(order, to, update, current, **fields)
    new_head = audit.seal(event, order.command_id, current.pop("audit_head"))
    if not statements.run_update(_update_sql(dict(update, audit_head=new_head), cas, when)):
        return None
    update["audit_head"] = new_head
    for field, value in current.items():
        setattr(order, field, value)
    return event


def _copy(order: Order) -> Order:
    """The order as this transition left it, for subscribers that run after the commit."""
    copy = Order.__new__(Order)
    copy.__dict__.update({k: v for k, v in order.__dict__.items() if k != "_state"})
    copy._state = type(order._state)()
    copy._state.adding, copy._state.db = False, order._state.db
    return copy


def move(order: Order, to: str, *, actor: str, tag: str | None = None, kind: str | None = None,
         detail: str = "", when: When = None, fill_id: str = "", **changes) -> bool:
    """Move `order` to status `to`. Raises IllegalTransition on a move the table forbids;
    re-confirming the terminal state an order is already in is a no-op (False, no row).
    `when`: a further condition the update itself checks (part of the compare-and-set).
    `fill_id`: the broker's id of the fill this move records, for the fills ledger."""
    if order.status == to and to in TERMINAL_STATUSES:
        return False
    _check_allowed(order, to, actor)
    if tag is not None:
        changes["tag"] = tag
    extra = {}
    if (order.status, to) in RECOVERY:
        kind = EventKind.RECOVERED
        # The exception holds only while the row is still a BROKER_UNKNOWN failure: a stale
        # copy must not reopen an order that has since been recovered and failed for real.
        extra = {"tag__startswith": UNKNOWN_TAG_PREFIX}
    return _apply(order, to, kind=kind or DEFAULT_KIND[to], actor=actor, detail=detail,
                  changes=changes, extra_filter=extra, when=when, fill_id=fill_id)


def annotate(order: Order, *, kind: str, actor: str, tag: str | None = None, detail: str = "", fill_id: str = "",
             **changes) -> bool:
    """Change broker-facing fields of a live order without moving its status (broker id
    stored or adopted, in doubt, fill progress)."""
    if order.status != Status.SENT_TO_BROKER:
        raise IllegalTransition(f"order {order.command_id}: {kind} needs SENT_TO_BROKER, not {order.status}")
    if tag is not None:
        changes["tag"] = tag
    return _apply(order, order.status, kind=kind, actor=actor, detail=detail, changes=changes, extra_filter={},
                  fill_id=fill_id)


def late_fill(order: Order, *, actor: str, filled_qty: int, avg_price, tag: str | None = None, fill_id: str = "",
              detail: str = "") -> bool:
    """A fill the broker reports after the order went FAILED (a cancel that crossed a fill on
    its way): the fills ledger and the position take it, with a FILL event; the status stays
    FAILED. False when it is no news (not more than is recorded) or a concurrent writer won."""
    if order.status != Status.FAILED:
        raise IllegalTransition(f"order {order.command_id}: a late fill needs FAILED, not {order.status}")
    if filled_qty <= order.filled_qty:
        return False
    changes = {"filled_qty": filled_qty, "avg_price": avg_price}
    if tag is not None:
        changes["tag"] = tag
    return _apply(order, Status.FAILED, kind=EventKind.FILL, actor=actor, detail=detail, changes=changes,
                  extra_filter={}, fill_id=fill_id)


def register(orders: list[Order], actor: str, notes: list[str] | None = None) -> list[Order]:
    """Insert freshly built orders and their creation rows (one bulk insert each); `notes`,
    one per order, say how its quantity came about (lots, a slice). Each creation row's hash
    covers the order's immutable details and becomes the order's audit head."""
    notes = notes or [""] * len(orders)
    created = []
    for o, note in zip(orders, notes, strict=True):
        event = OrderEvent(kind=EventKind.CREATED, from_status="", to_status=Status.CREATED, tag=o.tag, actor=actor,
                           at=o.created_at, detail=note, broker_order_id=None, filled_qty=0)
        o.audit_head = audit.seal(event, o.command_id, "", o)
        created.append(event)
    statements.insert(*orders)
    for o, event in zip(orders, created, strict=True):
        event.order = o
    statements.insert(*created)
    lines = [("order %s CREATED leg=%s%s %s %s %s actor=%s", o.command_id, o.leg,
              f" slice={o.slice}" if o.slice > 1 else "", o.side, o.qty, o.symbol, actor) for o in orders]
    # On commit, as a move's line: only what was registered, and not under SQLite's write lock.
    transaction.on_commit(lambda: [log.info(*line) for line in lines])
    return orders


def record_conflict(order: Order, actor: str, detail: str) -> None:
    """A pass that lost a race or met an impossible broker report leaves a trace, no change."""
    with transaction.atomic():
        current = (Order.objects.select_for_update(no_key=True).filter(pk=order.pk)
                   .values_list("status", "tag", "broker_order_id", "filled_qty", "audit_head").first())
        if current is None:
            return
        status, tag, broker_order_id, filled_qty, head = current
        event = OrderEvent(order=order, kind=EventKind.CONFLICT, from_status=status, to_status=status, tag=tag,
                           actor=actor, detail=detail[:2000], broker_order_id=broker_order_id, filled_qty=filled_qty)
        Order.objects.filter(pk=order.pk).update(audit_head=audit.seal(event, order.command_id, head))
        event.save()
    log.warning("order %s conflict (%s): %s", order.command_id, actor, detail)
