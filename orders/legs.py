"""From an alert's legs to its orders, with the symbol master (brokers.instruments) where one
is loaded for the alert's exchange: `lots` become a quantity, and a leg above the freeze
quantity of a strategy that splits becomes several slices. Whether the orders may go is the
blockers' business (risk.instruments); this only decides what is registered."""

from dataclasses import dataclass

from django.conf import settings

from brokers.instruments import Spec

from .models import ExecutionType, Source, Strategy
from .validation import AlertRequest, InvalidAlert, LegRequest


@dataclass(frozen=True)
class PlannedOrder:
    leg: LegRequest
    qty: int
    slice: int
    note: str  # how the quantity came about, for the order's creation audit row


def splits(strategy: Strategy, source: str, execution_type: str | None) -> bool:
    """Whether legs above the freeze quantity become slices: the strategy's choice, and always
    for the system's own exits (a square-off must never be stuck at the freeze quantity)."""
    return strategy.split_above_freeze or (source == Source.SYSTEM and execution_type == ExecutionType.EXIT)


def plan(strategy: Strategy, request: AlertRequest, specs: dict[str, Spec] | None,
         source: str = "") -> list[PlannedOrder]:
    """The orders to register, leg by leg and slice by slice. Raises InvalidAlert (a 400) for a
    leg in lots whose lot size is unknown."""
    quantities, errors = [], []
    for leg in request.legs:
        error, qty = {}, leg.qty
        if leg.lots is not None:
            spec = specs.get(leg.symbol) if specs is not None else None
            if specs is None:
                error["lots"] = [f"no symbol master is loaded for {request.exchange}: give qty "
                                 "(manage.py sync_instruments loads the masters)"]
            elif spec is None:
                error["lots"] = [f"{request.exchange}:{leg.symbol} is not in the symbol master: its lot size is unknown"]
            elif leg.lots * spec.lot_size > settings.MAX_ORDER_QTY:
                error["lots"] = [f"{leg.lots} lots of {spec.lot_size} is {leg.lots * spec.lot_size}, above "
                                 f"MAX_ORDER_QTY {settings.MAX_ORDER_QTY}"]
            else:
                qty = leg.lots * spec.lot_size
        errors.append(error)
        quantities.append(qty)
    if any(errors):
        raise InvalidAlert({"legs": errors})
    planned = []
    for leg, qty in zip(request.legs, quantities, strict=True):
        spec = specs.get(leg.symbol) if specs is not None else None
        lots = f"lots {leg.lots} x lot size {spec.lot_size} = qty {qty}" if leg.lots is not None else ""
        sliced = spec is not None and splits(strategy, source, leg.execution_type or request.execution_type)
        slices = split(qty, spec) if sliced else [qty]
        for number, part in enumerate(slices, start=1):
            note = lots
            if len(slices) > 1:
                sliced = (f"slice {number} of {len(slices)} of qty {qty}, at most {spec.slice_size} each "
                          f"(freeze qty {spec.freeze_qty})")
                note = f"{lots}; {sliced}" if lots else sliced
            planned.append(PlannedOrder(leg, part, number, note))
    return planned


def split(qty: int, spec: Spec) -> list[int]:
    """The slices of a leg above the freeze quantity: whole lots, at most the freeze quantity
    each. One slice (the leg as it is) when it needs none, or cannot be split (a quantity that
    is not whole lots, a freeze below one lot, more slices than MAX_SLICES_PER_LEG): the
    blockers then refuse it with the reason."""
    needed = spec.slices_needed(qty)
    if needed <= 1 or needed > settings.MAX_SLICES_PER_LEG or qty % spec.lot_size:
        return [qty]
    size = spec.slice_size
    return [size] * (needed - 1) + [qty - size * (needed - 1)]
