"""Reconciliation: the broker's positions, instrument by instrument, against ours (every
strategy's, from our fills: today's for MIS and CNC, all for carried NRML) plus the day's
external orders' (orders.external).

It runs in a watcher pass right after a successful read of the broker's positions: on the
first pass after the lease was taken when the last run is older than WATCHER_LEASE_TTL_S
(a chain of short slices does not redo it each time), then every RECONCILE_INTERVAL_S. A
difference is logged and told once, when the next pass finds it again (a fill reported in the
positions a moment before it reaches the order book is not one); it is resolved when the
figures agree, and a difference of another amount is a new one.
"""

import logging
from collections import defaultdict

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from . import external, notify
from .models import (BrokerPosition, ExternalOrder, Fill, Position, PositionDifference, Product, Reconciliation,
                     Side)
from .tradingday import trading_day_start

log = logging.getLogger("orderdesk.reconcile")


def ours(now=None) -> dict[tuple, int]:
    """Our net quantity per instrument as the broker's position book shows it: an intraday or
    delivery (MIS, CNC) position from today's fills only (yesterday's were squared off, or
    went to holdings), a carried one (NRML) from all of them."""
    day = trading_day_start(now)
    net = defaultdict(int)
    for exchange, symbol, product, qty in (Position.objects.filter(product=Product.NRML)
                                           .values_list("exchange", "symbol", "product", "net_qty")):
        net[(exchange, symbol, product)] += qty
    for exchange, symbol, product, side, qty in (
            Fill.objects.filter(at__gte=day).exclude(order__product=Product.NRML)
            .values_list("order__exchange", "order__symbol", "order__product", "order__side")
            .annotate(qty=Sum("qty")).order_by()):
        net[(exchange, symbol, product)] += qty if side == Side.BUY else -qty
    return net


def figures(now=None, books=None) -> dict[tuple, tuple[int, int, int]]:
    """(exchange, symbol, product) -> (broker, ours, external) net quantities, for every
    instrument any of the three holds or held today. `books`: external.positions(), if read."""
    broker = {(p.exchange, p.symbol, p.product): p.net_qty for p in BrokerPosition.objects.all()}
    mine = ours(now)
    books = external.positions(now) if books is None else books
    theirs = {key: book.net_qty for key, book in books.items()}
    keys = sorted(set(broker) | set(mine) | set(theirs))
    return {key: (broker.get(key, 0), mine.get(key, 0), theirs.get(key, 0)) for key in keys}


def _tell(row: PositionDifference) -> None:
    text = (f"⚖️ POSITIONS DIFFER {row.exchange}:{row.symbol} {row.product}: broker {row.broker_qty:+d}, "
            f"ours {row.ours_qty:+d}, external {row.external_qty:+d} (difference {row.difference:+d})")
    log.error(text)
    notify.queue(text, notify.URGENT, code=f"RECONCILE:{row.exchange}:{row.symbol}:{row.product}")


def run(now=None) -> tuple[Reconciliation, bool]:
    """One reconciliation against the positions snapshot the pass just took. Returns the run
    and whether a difference waits to be confirmed (the next pass should look again)."""
    now = now or timezone.now()
    table = figures(now)
    differing = {key: value for key, value in table.items() if value[0] != value[1] + value[2]}
    count, waiting = len(differing), False
    with transaction.atomic():
        open_rows = {(d.exchange, d.symbol, d.product): d
                     for d in PositionDifference.objects.select_for_update().filter(resolved_at__isnull=True)}
        for key, row in open_rows.items():
            figures_now = differing.pop(key, None)
            if figures_now is not None and figures_now[0] - figures_now[1] - figures_now[2] == row.difference:
                # The same difference (its parts may have moved with fills on both sides).
                row.broker_qty, row.ours_qty, row.external_qty = figures_now
                row.last_seen_at = now
                if row.confirmed_at is None:
                    row.confirmed_at = now
                    _tell(row)  # the notification row commits with the confirmation, or neither
                row.save(update_fields=["broker_qty", "ours_qty", "external_qty", "last_seen_at", "confirmed_at"])
                continue
            row.resolved_at = now
            row.save(update_fields=["resolved_at"])
            if row.confirmed_at is not None:
                log.warning("positions of %s agree again (or differ by another amount): was %s", ":".join(key), row)
            if figures_now is not None:
                differing[key] = figures_now  # another difference: a new row below
        for (exchange, symbol, product), (broker, mine, theirs) in differing.items():
            PositionDifference.objects.create(exchange=exchange, symbol=symbol, product=product, broker_qty=broker,
                                              ours_qty=mine, external_qty=theirs, first_seen_at=now, last_seen_at=now)
            waiting = True
        reconciliation = Reconciliation.objects.create(
            at=now, instruments=len(table), differences=count,
            external_orders=ExternalOrder.objects.filter(first_seen_at__gte=trading_day_start(now)).count())
    return reconciliation, waiting


def view(now=None) -> dict:
    """What the reconciliation views (admin, API, dashboard) show: each held instrument's three
    figures, differences first; the differences told and not yet resolved; and the external
    bucket of the account P&L."""
    now = now or timezone.now()
    last = Reconciliation.objects.first()
    books = external.positions(now)  # read once, for the table and the P&L bucket
    rows = [{"exchange": k[0], "symbol": k[1], "product": k[2], "broker_qty": b, "ours_qty": o, "external_qty": e,
             "difference": b - o - e} for k, (b, o, e) in figures(now, books).items() if b or o or e]
    rows.sort(key=lambda r: (r["difference"] == 0, r["exchange"], r["symbol"]))  # differences first
    return {
        "last_reconciled_at": last.at if last else None,
        "positions": rows,
        "differences": list(PositionDifference.objects.filter(resolved_at__isnull=True, confirmed_at__isnull=False)),
        "external_pnl": external.pnl(now, books),
    }
