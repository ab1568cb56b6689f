"""The OrderWatcher: makes our orders converge to the broker's truth.

One pass = one order-book read, then every live order is reconciled with its book entry.
Only the holder of the database lease polls, so any number of workers or foreground
processes can try to run it and exactly one does.
"""

import logging
import math
import re
import time
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from brokers.base import BookEntry, BookStatus
from brokers.registry import get_broker
from orderdesk import statements

from . import external, feedstate, leases, lifecycle, notify, protection, reconcile, squareoff, targets
from .leases import new_owner  # noqa: F401 - the owner names of watcher runs are made here too
from .models import (TERMINAL_STATUSES, BrokerFunds, BrokerPosition, EventKind, ExternalOrder, Order, OrderEvent,
                     PositionDifference, Reconciliation, Status)
from .queue import enqueue_submissions, tasks_waiting
from .services import prune_rejected_alerts
from .tradingday import trading_day_start

log = logging.getLogger("orderdesk.watcher")

ACTOR = "watcher"
LEASE_NAME = "orderwatcher"
# Orders with a broker id that the book does not list are asked about one by one (Noren's
# SingleOrdHist); at most this many per pass, so a broken book cannot multiply the calls.
MAX_HISTORY_LOOKUPS_PER_PASS = 5
HEALTH_CHECK_S = 1.0  # between passes, the feed's health is looked at (and the lease renewed) this often
LOAD_BATCH = 500  # orders loaded per query in a pass (bound on the statement's parameters)


# --- the watcher's lease ------------------------------------------------------------------

def acquire_lease(owner: str) -> bool:
    return leases.acquire(LEASE_NAME, owner) is not None


def renew_lease(owner: str, last_pass_at=None) -> bool:
    return leases.renew(LEASE_NAME, owner, last_pass_at)


def release_lease(owner: str, last_pass_at=None) -> None:
    leases.release(LEASE_NAME, owner, last_pass_at)


def watcher_running() -> bool:
    return leases.held(LEASE_NAME)


def checkpoint_sqlite_wal() -> None:
    """Fold SQLite's write-ahead log back into the database here, once a pass, so that the
    fsync of a checkpoint does not land inside a webhook request. PASSIVE never blocks."""
    if connection.vendor == "sqlite" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")


# --- one pass -----------------------------------------------------------------------------

def _fill_suffix(entry: BookEntry, order: Order) -> str:
    return f"filled {entry.filled_qty}/{order.open_qty}"


_FILLED_SUFFIX = re.compile(r" filled \d+/\d+$")


def _tag_with_fill(tag: str, entry: BookEntry, order: Order) -> str:
    """The tag's `filled f/q` brought up to date (added where the tag had none)."""
    suffix = " " + _fill_suffix(entry, order)
    return _FILLED_SUFFIX.sub(suffix, tag) if _FILLED_SUFFIX.search(tag) else tag + suffix


_AVG_QUANTUM = Decimal(1).scaleb(-Order._meta.get_field("avg_price").decimal_places)


def _fill_progress(entry: BookEntry, filled_qty: int, avg_price: Decimal | None) -> bool:
    """More fills than we have, or another average for the same fills. A lower figure is a
    lagging report (lifecycle ignores it), and the average is compared at the precision we
    store: a broker's longer average must not look like progress on every pass."""
    if entry.filled_qty != filled_qty:
        return entry.filled_qty > filled_qty
    if entry.avg_price is None:  # no average reported: nothing to learn (and none to erase)
        return False
    return entry.avg_price.quantize(_AVG_QUANTUM) != avg_price


def _news(entry: BookEntry | None, filled_qty: int) -> bool:
    """Whether a live order's book entry may ask for anything: most of a busy day's live
    orders are still working, unfilled and unchanged, and are passed over without loading
    them. A partly filled one is loaded (its average is compared there)."""
    return (entry is None or entry.status != BookStatus.OPEN or entry.filled_qty > filled_qty
            or (entry.filled_qty == filled_qty and filled_qty > 0 and entry.avg_price is not None))


_LIVE_SQL = (f"SELECT id, broker_order_id, filled_qty FROM {connection.ops.quote_name(Order._meta.db_table)} "
             "WHERE status = %s")


def _live_orders() -> list[tuple]:
    """(pk, broker id, filled qty) of every SENT_TO_BROKER order. Hand-written: a busy day
    has thousands, and through the ORM (values_list) 10,000 took 13 ms of every pass, raw 4 ms
    (benchmarks/watcher_pass.py)."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_SQL, [Status.SENT_TO_BROKER])
        return cursor.fetchall()


def _ended_at_broker(entry: BookEntry | None) -> bool:
    return entry is not None and entry.status not in (BookStatus.OPEN, BookStatus.UNKNOWN)


def _superseded(order: Order, to: str, changes: dict) -> bool:
    """A lost compare-and-set against a writer that already made this change, or went past it
    (the push feed and a pass reporting the same fill): nothing to record. Anything else is a
    real disagreement, a CONFLICT."""
    fresh = Order.objects.filter(pk=order.pk).values("status", "broker_order_id", "filled_qty").first()
    if fresh is None:
        return False
    if changes.get("broker_order_id") and fresh["broker_order_id"] != changes["broker_order_id"]:
        return False
    if changes.get("filled_qty") is not None and fresh["filled_qty"] < changes["filled_qty"]:
        return False
    return fresh["status"] == to or (to == Status.SENT_TO_BROKER and fresh["status"] in TERMINAL_STATUSES)


class OrderWatcher:
    def __init__(self, broker=None):
        self.broker = broker or get_broker()
        self.misses: dict[int, int] = {}  # in-doubt order pk -> successful reads that lacked it
        self.requeued_at: dict[int, float] = {}
        self.reads = 0
        self.history_lookups = 0
        # Book entries that are not live orders of ours, as last settled (ours and ended, or
        # external and recorded): looked at again only when they change.
        self.settled: dict[str, tuple] = {}
        self.last_reconciled_at = None  # read at the first pass: this watcher's lease was just taken
        self.recheck_positions = False  # a position difference waits to be seen again

    def poll_once(self) -> bool:
        """One pass. Returns whether the order book was read. Never raises for one order's
        sake: a failure or a lost race on an order is recorded as its CONFLICT event."""
        now = timezone.now()
        try:
            self._requeue_lost_creations(now)
        except Exception:  # noqa: BLE001 - a queue hiccup must not cost the reconciliation
            log.exception("re-enqueueing lost CREATED orders failed")
        try:
            prune_rejected_alerts(settings.REJECTED_ALERTS_KEEP)
            notify.resume_delivery()
        except Exception:  # noqa: BLE001 - housekeeping must not cost the reconciliation
            log.exception("housekeeping (pruning rejected alerts, resuming notifications) failed")
        read = self.reconcile_book(now)
        if read:
            if self._snapshot_positions():
                self._reconcile_positions_if_due(now)
            self._snapshot_funds(now)
            try:
                protection.watch_open(self.broker, now)
            except Exception:  # noqa: BLE001 - retried on the next pass
                log.exception("watching protected orders failed")
        # After the fills and prices of this pass: square-offs due (time, MTM) and waiting ones,
        # and the entries that follow executed exits of a flip to a target position.
        for step in (squareoff.run_due, targets.run_due):
            try:
                step()
            except Exception:  # noqa: BLE001 - retried on the next pass
                log.exception("%s failed", step.__module__)
        if not read:
            return False
        checkpoint_sqlite_wal()
        return True

    def reconcile_book(self, now=None) -> bool:
        """Read the order book and reconcile every live order with it (also the push feed's
        catch-up after each (re)connect). Returns whether the book was read."""
        now = now or timezone.now()
        self.history_lookups = 0
        # Listed before the book is read, so every listed order placed earlier is in the book.
        live = _live_orders()
        try:
            book = self.broker.order_book()
        except Exception as exc:  # noqa: BLE001 - an unusable read; it does not count as a read
            log.warning("order book unavailable: %s: %s", type(exc).__name__, exc)
            return False
        self.reads += 1
        by_id, by_client = {}, {}
        for e in book:
            by_id[e.broker_order_id] = e
            if e.client_order_id and e.client_order_id not in by_client:
                by_client[e.client_order_id] = e
        todo = [pk for pk, broker_id, filled in live if not broker_id or _news(by_id.get(broker_id), filled)]
        for start in range(0, len(todo), LOAD_BATCH):
            batch = todo[start:start + LOAD_BATCH]
            for order in Order.objects.filter(pk__in=batch).order_by("pk"):
                if order.status != Status.SENT_TO_BROKER and not _ended_at_broker(by_id.get(order.broker_order_id)):
                    continue  # moved on since it was listed (the feed got there first) past this read
                self._guarded(order, self._reconcile, order, by_id, by_client, now)
        self._recover_unknown(by_client)
        self._follow_the_rest(book, {broker_id for _, broker_id, _ in live if broker_id})
        live_ids = {row[0] for row in live}
        self.misses = {pk: n for pk, n in self.misses.items() if pk in live_ids}
        return True

    def apply_update(self, entry: BookEntry) -> None:
        """One order's state as the broker's push feed announced it, through the same code as
        a book entry. An acknowledgement carrying our command id adopts an order that waits
        for (or lost) the broker's reply at once; an order that is not ours is external."""
        # Both unique: the hot path's plain reads (orderdesk.statements).
        order = statements.first(Order, broker_order_id=entry.broker_order_id) if entry.broker_order_id else None
        if order is None and entry.client_order_id:
            mine = statements.first(Order, command_id=entry.client_order_id)
            if mine is not None and mine.broker_order_id is None:
                if mine.status == Status.SENT_TO_BROKER:
                    self._guarded(mine, self._adopt, mine, entry, "announced on the broker's order feed")
                return  # failed as unknown: a pass looks into it (_recover_unknown)
        if order is None:
            self._record_external(entry)
        elif order.status == Status.FAILED:
            self._guarded(order, self._late_fill, order, entry)
        elif order.status == Status.SENT_TO_BROKER:
            self._guarded(order, self._apply, order, entry)

    # Every state change goes through these: an exception or a lost compare-and-set is a
    # CONFLICT event on the order, never an exception out of the pass.
    def _guarded(self, order: Order, fn, *args, **kwargs) -> bool:
        try:
            won = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one bad order must not stop the loop
            self._conflict(order, f"{type(exc).__name__}: {exc}")
            return False
        return won is not False

    def _conflict(self, order: Order, detail: str) -> None:
        try:
            last = OrderEvent.objects.filter(order=order).order_by("-id").values_list("kind", "detail").first()
            if last == (EventKind.CONFLICT, detail[:2000]):  # the same trouble every pass: one row
                log.warning("order %s: conflict persists: %s", order.command_id, detail)
                return
            lifecycle.record_conflict(order, ACTOR, detail)
        except Exception:  # noqa: BLE001
            log.exception("order %s: could not record conflict %r", order.command_id, detail)

    def _move(self, order: Order, to: str, **kwargs) -> bool:
        before = order.status
        if lifecycle.move(order, to, actor=ACTOR, **kwargs):
            return True
        if not _superseded(order, to, kwargs):
            self._conflict(order, f"lost {before}->{to} to a concurrent writer")
        return False

    def _annotate(self, order: Order, kind: str, **kwargs) -> bool:
        if lifecycle.annotate(order, kind=kind, actor=ACTOR, **kwargs):
            return True
        if not _superseded(order, order.status, kwargs):
            self._conflict(order, f"lost {kind} to a concurrent writer")
        return False

    def _adopt(self, order: Order, entry: BookEntry, how: str) -> bool:
        """Take the broker's id of an order we sent without learning it, then its state."""
        self.misses.pop(order.pk, None)
        if not self._annotate(order, EventKind.BROKER_ID_ADOPTED, tag="", broker_order_id=entry.broker_order_id,
                              detail=how):
            return False
        self._apply(order, entry)
        return True

    def _reconcile(self, order: Order, by_id: dict, by_client: dict, now) -> None:
        if order.broker_order_id:
            entry = by_id.get(order.broker_order_id)
            if entry is None:
                entry, answered = self._order_status(order)
                if entry is None and answered and order.sent_at and order.sent_at < trading_day_start(now):
                    # Brokers keep a day's orders; one that neither the book nor its history
                    # knows after its day is over will never report again: stop waiting.
                    self._move(order, Status.FAILED,
                               tag="BROKER_UNKNOWN:not in the broker's order book or history after its trading day")
                    return
            if entry is not None:
                self._apply(order, entry)
            return
        # No broker id: the worker may still be waiting for the broker's reply.
        doubt_after = timedelta(seconds=settings.BROKER_READ_TIMEOUT_S + 5)
        if order.sent_at and now - order.sent_at < doubt_after:
            return
        entry = by_client.get(order.command_id)
        if entry is not None:
            self._adopt(order, entry, "found in the order book by client order id")
            return
        misses = self.misses[order.pk] = self.misses.get(order.pk, 0) + 1
        waited = (now - (order.sent_at or order.created_at)).total_seconds()
        if waited < settings.IN_DOUBT_GRACE_S or misses < settings.IN_DOUBT_MIN_READS:
            return
        # lifecycle's compare-and-set includes the broker id: if a worker stored one since we
        # listed the order, this loses and is recorded as a conflict.
        self._move(order, Status.FAILED,
                   tag=f"BROKER_UNKNOWN:not in the order book after {waited:.0f}s and {misses} reads")

    def _order_status(self, order: Order) -> tuple[BookEntry | None, bool]:
        """(the broker's own record of an order that has a broker id but is missing from the
        book, whether the broker answered). Not asked once the per-pass budget is spent."""
        if self.history_lookups >= MAX_HISTORY_LOOKUPS_PER_PASS:
            return None, False
        self.history_lookups += 1
        try:
            entry = self.broker.order_status(order.broker_order_id)
        except Exception as exc:  # noqa: BLE001 - an unusable read changes nothing
            log.warning("order %s: status of %s unavailable: %s: %s", order.command_id, order.broker_order_id,
                        type(exc).__name__, exc)
            return None, False
        if entry is not None and entry.broker_order_id != order.broker_order_id:
            return None, True
        return entry, True

    def _apply(self, order: Order, entry: BookEntry) -> None:
        fills = {"filled_qty": entry.filled_qty, "avg_price": entry.avg_price, "fill_id": entry.fill_id}
        reason = entry.reason or entry.raw_status
        if entry.status == BookStatus.COMPLETE:
            self._move(order, Status.EXECUTED, filled_qty=entry.filled_qty or order.open_qty, avg_price=entry.avg_price,
                       fill_id=entry.fill_id)
        elif entry.status == BookStatus.REJECTED:
            self._move(order, Status.FAILED, kind=EventKind.BROKER_REJECTED, tag=f"BROKER_REJECTED:{reason}", **fills)
        elif entry.status == BookStatus.CANCELLED:
            self._move(order, Status.FAILED, tag=f"BROKER_CANCELLED:{reason} {_fill_suffix(entry, order)}", **fills)
        elif entry.status == BookStatus.EXPIRED:
            self._move(order, Status.FAILED, tag=f"BROKER_EXPIRED:{reason} {_fill_suffix(entry, order)}", **fills)
        elif entry.status == BookStatus.OPEN and _fill_progress(entry, order.filled_qty, order.avg_price):
            self._annotate(order, EventKind.FILL, detail=_fill_suffix(entry, order), **fills)
        elif entry.status == BookStatus.UNKNOWN:
            log.warning("order %s: broker status %r not understood", order.command_id, entry.raw_status)

    def _recover_unknown(self, by_client: dict) -> None:
        """An order we failed as BROKER_UNKNOWN that shows up at the broker after all."""
        try:
            candidates = list(Order.objects.filter(status=Status.FAILED, tag__startswith=lifecycle.UNKNOWN_TAG_PREFIX,
                                                   updated_at__gte=timezone.now() - timedelta(days=1)))
        except Exception:  # noqa: BLE001
            log.exception("listing BROKER_UNKNOWN orders failed")
            return
        for order in candidates:
            entry = by_client.get(order.command_id)
            # A FAILED order without fills that the broker also ended is right as it is; one the
            # broker filled in part before cancelling it holds a position we must count.
            if entry is None or (entry.status not in (BookStatus.OPEN, BookStatus.COMPLETE) and not entry.filled_qty):
                continue
            tag = f"BROKER_RECOVERED:{entry.raw_status} at the broker after BROKER_UNKNOWN"
            log.error("order %s was failed as unknown but the broker has it (%s %s): reopening",
                      order.command_id, entry.broker_order_id, entry.raw_status)
            if entry.status in (BookStatus.OPEN, BookStatus.COMPLETE):
                to = Status.EXECUTED if entry.status == BookStatus.COMPLETE else Status.SENT_TO_BROKER
                self._guarded(order, self._move, order, to, broker_order_id=entry.broker_order_id,
                              filled_qty=entry.filled_qty or (order.open_qty if to == Status.EXECUTED else 0),
                              avg_price=entry.avg_price, tag=tag)
            else:
                self._guarded(order, self._reopen_and_apply, order, entry, tag)

    def _reopen_and_apply(self, order: Order, entry: BookEntry, tag: str) -> bool:
        """Reopen with the broker id, then take the broker's end, fills and reason as for any
        live order: both steps or neither."""
        with transaction.atomic():
            if not self._move(order, Status.SENT_TO_BROKER, broker_order_id=entry.broker_order_id, tag=tag):
                return False
            self._apply(order, entry)
        return True

    def _follow_the_rest(self, book: list[BookEntry], live_broker_ids: set[str]) -> None:
        """The book's other entries: a late fill on an order of ours we already failed, and
        the orders that are not ours (external). Each entry is looked at again only when its
        status or fills change. While an order of ours waits for its broker id, an entry that
        carries no client order id may be that order (a broker that dropped the remarks): it
        waits for the next pass. One taken for external that turns out ours is dropped, every
        pass (the feed's thread may record one just as a pass matches it)."""
        self._drop_mistaken_externals()
        fresh = [e for e in book if e.broker_order_id not in live_broker_ids
                 and self.settled.get(e.broker_order_id) != (e.status, e.filled_qty)]
        # Asked after the book was read: an order claimed since the live list was taken counts.
        in_flight = bool(fresh) and Order.objects.filter(status=Status.SENT_TO_BROKER,
                                                         broker_order_id__isnull=True).exists()
        for start in range(0, len(fresh), LOAD_BATCH):
            batch = fresh[start:start + LOAD_BATCH]
            ids = [e.broker_order_id for e in batch]
            commands = [e.client_order_id for e in batch if e.client_order_id]
            ours = list(Order.objects.filter(Q(broker_order_id__in=ids) | Q(command_id__in=commands))
                        .values_list("pk", "broker_order_id", "command_id", "status", "filled_qty"))
            by_id = {row[1]: row for row in ours if row[1]}
            by_command = {row[2]: row for row in ours}
            known = {x.broker_order_id: x for x in ExternalOrder.objects.filter(broker_order_id__in=ids)}
            for entry in batch:
                row = by_id.get(entry.broker_order_id) or by_command.get(entry.client_order_id)
                done = False
                if row is not None and row[1] is None:
                    # Still being adopted or recovered (above), unless the broker ended it unfilled
                    # and we failed it as unknown: then both agree and nothing is left to do.
                    done = row[3] == Status.FAILED and _ended_at_broker(entry) and not entry.filled_qty
                elif row is None and in_flight and not entry.client_order_id:
                    pass  # perhaps ours, still without its broker id: the next pass decides
                elif row is None or row[1] != entry.broker_order_id:
                    if row is not None:  # our command id on a second broker order: never ours to follow
                        log.error("broker order %s carries our command id %s but %s is its order: external",
                                  entry.broker_order_id, row[2], row[1])
                    done = self._record_external(entry, known.get(entry.broker_order_id))
                elif row[3] == Status.FAILED and entry.filled_qty > row[4]:
                    order = Order.objects.get(pk=row[0])
                    done = self._guarded(order, self._late_fill, order, entry)
                else:
                    done = row[3] != Status.SENT_TO_BROKER
                if done:
                    self.settled[entry.broker_order_id] = (entry.status, entry.filled_qty)

    def _drop_mistaken_externals(self) -> None:
        """External rows whose broker id turned out to be an order of ours (seen before our
        worker stored it): they go, so nothing is counted twice."""
        # EXISTS per external row (a day's handful), by Order's unique broker id: never a scan
        # of the day's orders, which an IN (subquery) costs SQLite on every pass.
        mistaken = list(ExternalOrder.objects.filter(Exists(Order.objects.filter(
            broker_order_id=OuterRef("broker_order_id")))).values_list("pk", "broker_order_id"))
        for _, broker_id in mistaken:
            log.warning("external order %s is ours after all: dropped", broker_id)
        if mistaken:
            ExternalOrder.objects.filter(pk__in=[pk for pk, _ in mistaken]).delete()

    def _record_external(self, entry: BookEntry, known: ExternalOrder | None = None) -> bool:
        try:
            external.record(entry, known=known)
        except Exception:  # noqa: BLE001 - tried again at the next pass
            log.exception("external order %s could not be recorded", entry.broker_order_id)
            return False
        return True

    def _late_fill(self, order: Order, entry: BookEntry) -> bool:
        """A fill reported after we failed the order (its cancel crossed the fill)."""
        if entry.filled_qty <= order.filled_qty or entry.broker_order_id != order.broker_order_id:
            return True  # no news
        log.warning("order %s: a late fill, %s after it went FAILED (%s)", order.command_id,
                    _fill_suffix(entry, order), order.tag)
        if lifecycle.late_fill(order, actor=ACTOR, filled_qty=entry.filled_qty, avg_price=entry.avg_price,
                               tag=_tag_with_fill(order.tag, entry, order), fill_id=entry.fill_id,
                               detail=f"late fill: {_fill_suffix(entry, order)} after FAILED"):
            return True
        if _superseded(order, Status.FAILED, {"filled_qty": entry.filled_qty}):
            return True  # the feed (or a pass) recorded the same fill first
        self._conflict(order, "lost a late fill to a concurrent writer")
        return False

    def _reconcile_positions_if_due(self, now) -> None:
        """orders.reconcile, right after the positions snapshot: at a lease's first pass when the
        last run is older than the lease's TTL, then every RECONCILE_INTERVAL_S, and at the next
        pass while a difference waits to be seen again."""
        try:
            if self.last_reconciled_at is None:
                last = Reconciliation.objects.values_list("at", flat=True).first()
                self.last_reconciled_at = last or now - timedelta(days=1)
                window = settings.WATCHER_LEASE_TTL_S
                # A difference the previous holder saw once waits for a second look.
                self.recheck_positions = PositionDifference.objects.filter(
                    resolved_at__isnull=True, confirmed_at__isnull=True).exists()
            else:
                window = settings.RECONCILE_INTERVAL_S
            if not self.recheck_positions and (now - self.last_reconciled_at).total_seconds() < window:
                return
            _, self.recheck_positions = reconcile.run(now)
            self.last_reconciled_at = now
        except Exception:  # noqa: BLE001 - retried at the next pass
            log.exception("reconciling positions failed")

    def _snapshot_funds(self, now) -> None:
        """The broker's Limits every FUNDS_INTERVAL_S (the stored row says when it was last
        taken, so a chain of watcher slices reads no more often). A failed read keeps the row."""
        name = settings.ORDERDESK_BROKER
        taken = BrokerFunds.objects.filter(broker=name).values_list("taken_at", flat=True).first()
        if taken is not None and (now - taken).total_seconds() < settings.FUNDS_INTERVAL_S:
            return
        try:
            funds = self.broker.funds()
        except Exception as exc:  # noqa: BLE001 - the order reconciliation already happened
            log.warning("funds unavailable: %s: %s", type(exc).__name__, exc)
            return
        if funds is not None:
            BrokerFunds.objects.update_or_create(broker=name, defaults=dict(
                cash=funds.cash, payin=funds.payin, margin_used=funds.margin_used, collateral=funds.collateral,
                available_cash=funds.available_cash, taken_at=now))

    def _snapshot_positions(self) -> bool:
        """The broker's account-wide positions and last prices, for the blotter, risk limits and
        reconciliation. A failed read keeps the previous snapshot (its taken_at says how old it
        is); returns whether the read succeeded."""
        try:
            positions = self.broker.positions()
        except Exception as exc:  # noqa: BLE001 - the order reconciliation already happened
            log.warning("position book unavailable: %s: %s", type(exc).__name__, exc)
            return False
        now = timezone.now()
        with transaction.atomic():
            BrokerPosition.objects.all().delete()
            BrokerPosition.objects.bulk_create(
                BrokerPosition(exchange=p.exchange, symbol=p.symbol, product=p.product, net_qty=p.net_qty,
                               net_avg_price=p.net_avg_price, realized_pnl=p.realized_pnl,
                               unrealized_pnl=p.unrealized_pnl, last_price=p.last_price, taken_at=now)
                for p in positions
            )
        return True

    def _requeue_lost_creations(self, now) -> None:
        """CREATED orders whose submission task was lost; the claim makes a resend harmless."""
        cutoff = now - timedelta(seconds=settings.REQUEUE_CREATED_AFTER_S)
        stuck = dict(Order.objects.filter(status=Status.CREATED, created_at__lt=cutoff).values_list("pk", "command_id"))
        self.requeued_at = {pk: t for pk, t in self.requeued_at.items() if pk in stuck}
        clock = time.monotonic()
        due = [pk for pk in stuck if clock - self.requeued_at.get(pk, -1e9) >= settings.REQUEUE_CREATED_AFTER_S]
        if due and (waiting := tasks_waiting()):
            # Not lost, only behind others: a resend would add a task per order to a queue that
            # is already behind (each costing a dequeue and a lost claim), and under a burst
            # that feeds itself. Resent once the queue has drained, if still CREATED.
            log.info("%d CREATED orders waited over %gs behind %d queued tasks; not re-enqueued",
                     len(due), settings.REQUEUE_CREATED_AFTER_S, waiting)
            return
        if due:
            log.warning("re-enqueueing %d CREATED orders whose submission did not run", len(due))
            enqueue_submissions([stuck[pk] for pk in due])
            self.requeued_at.update((pk, clock) for pk in due)


# --- the loop -----------------------------------------------------------------------------

def pass_period(interval: float | None = None) -> float:
    """Seconds between order-book reads: polling while no push feed is healthy, a slower
    reconciliation while one is (it brings the news; the read catches what it missed)."""
    interval = settings.WATCHER_INTERVAL_S if interval is None else interval
    return max(interval, settings.WATCHER_RECONCILE_S) if feedstate.healthy() else interval


def run_watcher(owner: str, seconds: float, interval: float | None = None,
                watcher: OrderWatcher | None = None) -> int | None:
    """Read the book under the lease for about `seconds`; returns the number of passes, None
    when the lease is held elsewhere. Passes keep the rhythm of the previous holder's (the
    lease's last_pass_at), so a chain of short slices polls as often as one long run, not
    once per slice. While waiting, the lease is renewed by compare-and-set and the feed's
    health looked at about every second; a renewal that fails (taken over, or the database
    unreachable) ends the run. last_pass_at (for /api/health/) is the end of the last pass
    that did not raise, written by the next renewal or the release."""
    lease = leases.acquire(LEASE_NAME, owner)
    if lease is None:
        return None
    deadline = time.monotonic() + seconds
    passes = 0
    last_pass_at = None  # end of the last pass that did not raise; stored with the next lease write
    previous = lease.last_pass_at
    since = (timezone.now() - previous).total_seconds() if previous else math.inf
    last_started = time.monotonic() - since
    try:
        watcher = watcher or OrderWatcher()
        while True:
            # A long-lived loop is not a request: drop a connection that broke or outlived
            # CONN_MAX_AGE here, as Django does at every request's start and end (never
            # inside a caller's transaction, which closing would end).
            if not connection.in_atomic_block:
                close_old_connections()
            try:
                period = pass_period(interval)
            except Exception:  # noqa: BLE001 - the feed's state unreadable: poll as without one
                log.exception("reading the push feed's state failed")
                period = settings.WATCHER_INTERVAL_S if interval is None else interval
            if time.monotonic() - last_started >= period:
                last_started = time.monotonic()
                try:
                    watcher.poll_once()
                    last_pass_at = timezone.now()
                except Exception:  # noqa: BLE001 - the loop outlives any single pass
                    log.exception("watcher pass failed")
                passes += 1
            wake = min(last_started + period, time.monotonic() + HEALTH_CHECK_S)
            if wake >= deadline:
                break
            time.sleep(max(0.0, wake - time.monotonic()))
            try:
                renewed = renew_lease(owner, last_pass_at)
            except Exception:  # noqa: BLE001
                log.exception("watcher %s could not renew its lease", owner)
                renewed = False
            if not renewed:
                log.warning("watcher %s lost its lease; stopping", owner)
                break
    finally:
        try:
            release_lease(owner, last_pass_at)
        except Exception:  # noqa: BLE001 - it expires on its own
            log.exception("watcher %s could not release its lease", owner)
    return passes
