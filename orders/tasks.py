"""django-q2 tasks: thin wrappers over the services."""

from django.conf import settings
from django_q.conf import Conf

from . import audit, cancels, modifications, notify, squareoff, submission, watcher
from .queue import enqueue_watcher


def submit_order(command_id: str) -> str:
    return submission.submit_order(command_id)


def cancel_order(command_id: str) -> str:
    return cancels.send_cancel(command_id)


def modify_order(modification_id: int) -> str:
    return modifications.send_modify(modification_id)


def run_squareoffs() -> str:
    """A strategy's daily schedule at its squareoff_time: the backstop of the watcher's check."""
    return f"{len(squareoff.run_due())} exits registered"


def verify_audit() -> str:
    """The nightly check of the audit trail (the last AUDIT_VERIFY_DAYS days' orders, every
    position); a mismatch is told on Telegram (URGENT)."""
    result, check = audit.run_and_record(since=audit.nightly_since())
    if not result.ok:
        notify.queue(f"🧾 AUDIT: verify_audit found {check.mismatches} mismatch(es) in {check.orders} orders and "
                     f"{check.positions} positions, e.g.\n" + "\n".join(result.mismatches[:5]), notify.URGENT,
                     code="AUDIT_MISMATCH")
    return f"{check.orders} orders, {check.positions} positions, {check.mismatches} mismatches"


def watcher_slice_seconds() -> float:
    """WATCHER_SLICE_S, cut so that the slice's last pass (which may wait the full broker
    timeouts) ends before django-q2 kills the task at Q_CLUSTER["timeout"]: a killed slice
    leaves its lease to expire, enqueues no successor and the chain waits for the schedule.
    The interval between passes does not shorten it: the run never sleeps past its end."""
    seconds = settings.WATCHER_SLICE_S
    if Conf.TIMEOUT:
        worst_pass = settings.BROKER_CONNECT_TIMEOUT_S + settings.BROKER_READ_TIMEOUT_S
        seconds = min(seconds, max(1.0, Conf.TIMEOUT - worst_pass - 1))
    return seconds


def watch_orders() -> int:
    """One slice of the OrderWatcher; hands over to a successor task when it held the lease
    (even without a pass: with a long interval, a slice may fall between two)."""
    passes = watcher.run_watcher(watcher.new_owner("task"), watcher_slice_seconds())
    if passes is None:
        return 0
    enqueue_watcher()
    return passes


def deliver_notifications() -> int:
    return notify.deliver_due(watcher.new_owner("notify"))
