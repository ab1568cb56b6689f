"""Leases: at most one holder of a named job at a time (the watcher's polling, the push feed,
the Telegram sender and reader), whoever holds an unexpired WatcherLease row.

Taking one is a compare-and-set on the row just read, so of two would-be holders one wins;
the holder renews it while it works and releases it when done. A holder on this machine
whose process is gone (killed) frees its lease at once instead of at expiry.
"""

import os
import secrets
import socket
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import WatcherLease

_HOST = socket.gethostname()[:24]


def new_owner(kind: str) -> str:
    return f"{kind}:{_HOST}:{os.getpid()}:{secrets.token_hex(3)}"


def holder_is_gone(owner: str) -> bool:
    """A holder on this machine whose process no longer exists (killed mid-slice, say): its
    lease need not run out before another holder takes over."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def _live_holder(lease: WatcherLease, now) -> bool:
    return lease.expires_at > now and not holder_is_gone(lease.owner)


def _ttl(ttl_s: float | None) -> timedelta:
    return timedelta(seconds=settings.WATCHER_LEASE_TTL_S if ttl_s is None else ttl_s)


def acquire(name: str, owner: str, ttl_s: float | None = None) -> WatcherLease | None:
    """The lease row as taken (its last_pass_at is the previous holder's), or None."""
    now = timezone.now()
    lease, _ = WatcherLease.objects.get_or_create(name=name, defaults={"expires_at": now})
    if lease.owner != owner and _live_holder(lease, now):
        return None
    # Compare-and-set on what we just read: of two would-be successors, one wins.
    expires = now + _ttl(ttl_s)
    if not WatcherLease.objects.filter(name=name, owner=lease.owner, expires_at=lease.expires_at).update(
            owner=owner, expires_at=expires):
        return None
    lease.owner, lease.expires_at = owner, expires
    return lease


def _pass_recorded(last_pass_at) -> dict:
    # The time of the holder's last pass rides along in the lease's own UPDATE (no query of
    # its own); the WHERE clause, and so the compare-and-set, stays as it is.
    return {} if last_pass_at is None else {"last_pass_at": last_pass_at}


def renew(name: str, owner: str, last_pass_at=None, ttl_s: float | None = None) -> bool:
    return bool(WatcherLease.objects.filter(name=name, owner=owner)
                .update(expires_at=timezone.now() + _ttl(ttl_s), **_pass_recorded(last_pass_at)))


def release(name: str, owner: str, last_pass_at=None) -> None:
    WatcherLease.objects.filter(name=name, owner=owner).update(
        expires_at=timezone.now(), **_pass_recorded(last_pass_at))


def live_holder(name: str) -> str | None:
    lease = WatcherLease.objects.filter(name=name).first()
    return lease.owner if lease is not None and lease.owner and _live_holder(lease, timezone.now()) else None


def held(name: str) -> bool:
    return live_holder(name) is not None
