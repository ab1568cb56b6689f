"""The OrderWatcher: makes our orders converge to the broker's truth.

One pass = one order-book read, then every live order is reconciled with its book entry.
Only the holder of the database lease polls, so any number of workers or foreground
processes can try to run it and exactly one does.
"""

import logging
import os
import secrets
import socket
import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from brokers.base import BookEntry, BookStatus, BrokerUnavailable
from brokers.registry import get_broker

from . import lifecycle
from .models import EventKind, Order, Status, WatcherLease
from .queue import enqueue_submissions

log = logging.getLogger("orderdesk.watcher")

ACTOR = "watcher"
LEASE_NAME = "orderwatcher"


# --- the lease --------------------------------------------------------------------------

def new_owner(kind: str) -> str:
    return f"{kind}:{socket.gethostname()[:24]}:{os.getpid()}:{secrets.token_hex(3)}"


def acquire_lease(owner: str) -> bool:
    now = timezone.now()
    expires = now + timedelta(seconds=settings.WATCHER_LEASE_TTL_S)
    WatcherLease.objects.get_or_create(name=LEASE_NAME, defaults={"expires_at": now})
    return bool(
        WatcherLease.objects.filter(Q(expires_at__lte=now) | Q(owner=owner), name=LEASE_NAME)
        .update(owner=owner, expires_at=expires)
    )


def renew_lease(owner: str) -> bool:
    expires = timezone.now() + timedelta(seconds=settings.WATCHER_LEASE_TTL_S)
    return bool(WatcherLease.objects.filter(name=LEASE_NAME, owner=owner).update(expires_at=expires))


def release_lease(owner: str) -> None:
    WatcherLease.objects.filter(name=LEASE_NAME, owner=owner).update(expires_at=timezone.now())


def watcher_running() -> bool:
    return WatcherLease.objects.filter(name=LEASE_NAME, expires_at__gt=timezone.now()).exists()


# --- one pass -----------------------------------------------------------------------------

def _fill_suffix(entry: BookEntry, order: Order) -> str:
    return f"filled {entry.filled_qty}/{order.qty}"


class OrderWatcher:
    def __init__(self, broker=None):
        self.broker = broker or get_broker()
        self.misses: dict[int, int] = {}  # in-doubt order pk -> successful reads that lacked it
        self.requeued_at: dict[int, float] = {}
        self.reads = 0

    def poll_once(self) -> bool:
        """One pass. Returns whether the order book was read."""
        now = timezone.now()
        self._requeue_lost_creations(now)
        live = list(Order.objects.filter(status=Status.SENT_TO_BROKER))
        try:
            book = self.broker.order_book()
        except BrokerUnavailable as exc:
            log.warning("order book unavailable: %s", exc)
            return False
        self.reads += 1
        by_id = {e.broker_order_id: e for e in book}
        by_client = {e.client_order_id: e for e in book if e.client_order_id}
        for order in live:
            try:
                self._reconcile(order, by_id, by_client, now)
            except Exception as exc:  # noqa: BLE001 - one bad order must not stop the loop
                lifecycle.record_conflict(order, ACTOR, f"{type(exc).__name__}: {exc}")
        self._recover_unknown(by_client)
        live_ids = {o.pk for o in live}
        self.misses = {pk: n for pk, n in self.misses.items() if pk in live_ids}
        return True

    def _reconcile(self, order: Order, by_id: dict, by_client: dict, now) -> None:
        if order.broker_order_id:
            entry = by_id.get(order.broker_order_id)
            if entry is not None:
                self._apply(order, entry)
            return
        # No broker id: the worker may still be waiting for the broker's reply.
        doubt_after = timedelta(seconds=settings.BROKER_READ_TIMEOUT_S + 5)
        if order.sent_at and now - order.sent_at < doubt_after:
            return
        entry = by_client.get(order.command_id)
        if entry is not None:
            if lifecycle.annotate(order, kind=EventKind.BROKER_ID_ADOPTED, actor=ACTOR, tag="",
                                  only_if_no_broker_id=True, broker_order_id=entry.broker_order_id,
                                  detail="found in the order book by client order id"):
                self._apply(order, entry)
            return
        misses = self.misses[order.pk] = self.misses.get(order.pk, 0) + 1
        waited = (now - (order.sent_at or order.created_at)).total_seconds()
        if waited >= settings.IN_DOUBT_GRACE_S and misses >= settings.IN_DOUBT_MIN_READS:
            lifecycle.move(order, Status.FAILED, actor=ACTOR,
                           tag=f"BROKER_UNKNOWN:not in the order book after {waited:.0f}s and {misses} reads")

    def _apply(self, order: Order, entry: BookEntry) -> None:
        fills = {"filled_qty": entry.filled_qty, "avg_price": entry.avg_price}
        reason = entry.reason or entry.raw_status
        if entry.status == BookStatus.COMPLETE:
            lifecycle.move(order, Status.EXECUTED, actor=ACTOR,
                           filled_qty=entry.filled_qty or order.qty, avg_price=entry.avg_price)
        elif entry.status == BookStatus.REJECTED:
            lifecycle.move(order, Status.FAILED, actor=ACTOR, kind=EventKind.BROKER_REJECTED,
                           tag=f"BROKER_REJECTED:{reason}", **fills)
        elif entry.status == BookStatus.CANCELLED:
            lifecycle.move(order, Status.FAILED, actor=ACTOR,
                           tag=f"BROKER_CANCELLED:{reason} {_fill_suffix(entry, order)}", **fills)
        elif entry.status == BookStatus.EXPIRED:
            lifecycle.move(order, Status.FAILED, actor=ACTOR,
                           tag=f"BROKER_EXPIRED:{reason} {_fill_suffix(entry, order)}", **fills)
        elif entry.status == BookStatus.OPEN and entry.filled_qty != order.filled_qty:
            lifecycle.annotate(order, kind=EventKind.FILL, actor=ACTOR, detail=_fill_suffix(entry, order), **fills)
        elif entry.status == BookStatus.UNKNOWN:
            log.warning("order %s: broker status %r not understood", order.command_id, entry.raw_status)

    def _recover_unknown(self, by_client: dict) -> None:
        """An order we failed as BROKER_UNKNOWN that shows up at the broker after all."""
        candidates = Order.objects.filter(status=Status.FAILED, tag__startswith=lifecycle.UNKNOWN_TAG_PREFIX,
                                          updated_at__gte=timezone.now() - timedelta(days=1))
        for order in candidates:
            entry = by_client.get(order.command_id)
            if entry is None or entry.status not in (BookStatus.OPEN, BookStatus.COMPLETE):
                continue
            to = Status.EXECUTED if entry.status == BookStatus.COMPLETE else Status.SENT_TO_BROKER
            log.error("order %s was failed as unknown but the broker has it (%s %s): reopening",
                      order.command_id, entry.broker_order_id, entry.raw_status)
            lifecycle.move(order, to, actor=ACTOR, broker_order_id=entry.broker_order_id,
                           filled_qty=entry.filled_qty, avg_price=entry.avg_price,
                           tag=f"BROKER_RECOVERED:{entry.raw_status} at the broker after BROKER_UNKNOWN")

    def _requeue_lost_creations(self, now) -> None:
        """CREATED orders whose submission task was lost; the claim makes a resend harmless."""
        cutoff = now - timedelta(seconds=settings.REQUEUE_CREATED_AFTER_S)
        stuck = list(Order.objects.filter(status=Status.CREATED, created_at__lt=cutoff).values_list("pk", "command_id"))
        due = [(pk, cid) for pk, cid in stuck
               if time.monotonic() - self.requeued_at.get(pk, -1e9) >= settings.REQUEUE_CREATED_AFTER_S]
        if due:
            log.warning("re-enqueueing %d CREATED orders whose submission did not run", len(due))
            enqueue_submissions([cid for _, cid in due])
            self.requeued_at.update((pk, time.monotonic()) for pk, _ in due)
        self.requeued_at = {pk: t for pk, t in self.requeued_at.items() if pk in {p for p, _ in stuck}}


# --- the loop -----------------------------------------------------------------------------

def run_watcher(owner: str, seconds: float, interval: float | None = None, watcher: OrderWatcher | None = None) -> int:
    """Poll under the lease for about `seconds`; returns the number of passes (0: lease held elsewhere)."""
    interval = settings.WATCHER_INTERVAL_S if interval is None else interval
    if not acquire_lease(owner):
        return 0
    watcher = watcher or OrderWatcher()
    deadline = time.monotonic() + seconds
    passes = 0
    try:
        while True:
            try:
                watcher.poll_once()
            except Exception:  # noqa: BLE001 - the loop outlives any single pass
                log.exception("watcher pass failed")
            passes += 1
            if time.monotonic() + interval >= deadline:
                break
            time.sleep(interval)
            if not renew_lease(owner):
                log.warning("watcher %s lost its lease; stopping", owner)
                break
    finally:
        release_lease(owner)
    return passes
