"""django-q2 tasks: thin wrappers over the services."""

from django.conf import settings

from . import submission, watcher
from .queue import enqueue_watcher


def submit_order(command_id: str) -> str:
    return submission.submit_order(command_id)


def watch_orders() -> int:
    """One slice of the OrderWatcher; hands over to a successor task when it held the lease."""
    passes = watcher.run_watcher(watcher.new_owner("task"), settings.WATCHER_SLICE_S)
    if passes:
        enqueue_watcher()
    return passes
