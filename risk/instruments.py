"""The symbol master's checks: a known trading symbol, whole lots, prices on the tick, and the
freeze quantity. They run only for an exchange whose master is loaded (ctx.instruments; see
brokers.instruments); without one the intake checks nothing of instruments, as before."""

import copy
from decimal import Decimal

from django.conf import settings

from orders.models import ExecutionType, Source

from .pipeline import IntakeContext, Verdict


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def check_instruments(ctx: IntakeContext) -> dict[int, Verdict]:
    specs = ctx.instruments
    if specs is None:
        return {}
    blocked = {}
    for order in ctx.pending():
        spec = specs.get(order.symbol)
        if order.source == Source.SYSTEM and order.execution_type == ExecutionType.EXIT:
            # A square-off closes what is held, whatever the master now says of lots or the
            # contract; it is split at the freeze quantity (orders.legs), so that holds too.
            ctx.note(order, "INSTRUMENT", None, "a square-off exit: closes what is held")
            continue
        if spec is None:
            checks = [("UNKNOWN_SYMBOL", Verdict("GUARD_BLOCKED:UNKNOWN_SYMBOL",
                                                 f"{order.exchange}:{order.symbol} is not in the symbol master"))]
        else:
            checks = [("LOT_SIZE", _lot(order, spec)), ("TICK_SIZE", _tick(order, spec)),
                      ("FREEZE_QTY", _freeze(ctx, order, spec))]
        for code, verdict in checks:
            if ctx.note(order, code, verdict, _passed(code, spec)) and order.leg not in blocked:
                blocked[order.leg] = verdict
    return blocked


def check_new_terms(order, spec, *, qty: int | None, price, trigger_price) -> Verdict | None:
    """A modification's new terms against the instrument (None: no master, or they fit): whole
    lots, on the tick, within the freeze quantity (a modification is never split)."""
    if spec is None:
        return None
    terms = copy.copy(order)  # never saved: orders are immutable
    terms.qty = qty if qty is not None else order.open_qty
    terms.price, terms.trigger_price = price, trigger_price  # only the new prices are checked
    if spec.freeze_qty is not None and terms.qty > spec.freeze_qty:
        return Verdict(f"GUARD_BLOCKED:FREEZE_QTY qty {terms.qty} > {spec.freeze_qty}", "a modification is not split")
    if qty is not None and (verdict := _lot(terms, spec)):
        return verdict
    return _tick(terms, spec)


def _passed(code: str, spec) -> str:
    if code == "LOT_SIZE":
        return f"lot size {spec.lot_size}"
    if code == "TICK_SIZE":
        return f"tick {_plain(spec.tick_size)}"
    if code == "FREEZE_QTY":
        return f"freeze qty {spec.freeze_qty}" if spec.freeze_qty else "no freeze qty known"
    return ""


def _lot(order, spec) -> Verdict | None:
    if order.qty % spec.lot_size == 0:
        return None
    return Verdict(f"GUARD_BLOCKED:LOT_SIZE qty {order.qty} lot {spec.lot_size}",
                   f"{order.qty} is not a whole number of lots of {spec.lot_size}")


def _tick(order, spec) -> Verdict | None:
    for name, price in (("price", order.price), ("trigger_price", order.trigger_price)):
        if price is not None and price % spec.tick_size != 0:
            return Verdict(f"GUARD_BLOCKED:TICK_SIZE {name} {_plain(price)} tick {_plain(spec.tick_size)}",
                           f"{name} {_plain(price)} is not a multiple of the tick {_plain(spec.tick_size)}")
    return None


def _freeze(ctx: IntakeContext, order, spec) -> Verdict | None:
    if spec.freeze_qty is None or order.qty <= spec.freeze_qty:
        return None
    needed = spec.slices_needed(order.qty)
    splits = ctx.strategy.split_above_freeze or (order.source == Source.SYSTEM
                                                  and order.execution_type == ExecutionType.EXIT)
    if splits and needed > settings.MAX_SLICES_PER_LEG:
        return Verdict(f"GUARD_BLOCKED:TOO_MANY_SLICES qty {order.qty} needs {needed} slices of "
                       f"{spec.slice_size} > {settings.MAX_SLICES_PER_LEG}",
                       f"freeze qty {spec.freeze_qty}; at most {settings.MAX_SLICES_PER_LEG} slices per leg")
    why = ("the strategy does not split above the freeze qty (split_above_freeze)"
           if not splits else f"the freeze qty is below one lot of {spec.lot_size}")
    return Verdict(f"GUARD_BLOCKED:FREEZE_QTY qty {order.qty} > {spec.freeze_qty}", why)
