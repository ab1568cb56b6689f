"""Writes of the risk app's configuration: limits, lock resets, market holidays."""

import csv
import logging
from datetime import date

from django.db import transaction
from django.utils import timezone

from orders.models import EXCHANGE_CODES, Strategy

from .models import MarketHoliday, RiskLimits, RiskLock

log = logging.getLogger("orderdesk.risk")


def limits_of(strategy: Strategy | None) -> RiskLimits:
    row, _ = RiskLimits.objects.get_or_create(strategy=strategy, is_account=strategy is None)
    return row


def set_limits(strategy: Strategy | None, *, actor: str, clear: bool = False, **values) -> RiskLimits:
    """Set the given limits (None: leave as is) of a strategy, or the account's (None);
    `clear` first empties them all. Setting max_loss starts its P&L count now."""
    with transaction.atomic():
        limits = limits_of(strategy)
        limits = RiskLimits.objects.select_for_update().get(pk=limits.pk)
        if clear:
            for name in RiskLimits.LIMIT_FIELDS:
                setattr(limits, name, None)
            limits.cooldown_after_losses = 1
        for name, value in values.items():
            if value is not None:
                setattr(limits, name, value)
        now = timezone.now()
        if values.get("max_loss") is not None:
            limits.max_loss_since = now
        limits.updated_at, limits.updated_by = now, actor[:64]
        limits.full_clean()
        limits.save()
        limits.refresh_from_db()  # the stored figures (2.5 -> 2.50)
    log.warning("risk limits of %s set by %s: %s", strategy or "the account", actor, limits.configured() or "none")
    return limits


def reset_lock(strategy: Strategy | None, *, actor: str) -> int:
    """Lift the standing locks of a strategy (or the account): who and when is recorded, and the
    max-loss count starts again from now."""
    now = timezone.now()
    with transaction.atomic():
        limits = limits_of(strategy)
        reset = RiskLock.objects.filter(limits=limits, reset_at__isnull=True).update(reset_at=now,
                                                                                     reset_by=actor[:64])
        RiskLimits.objects.filter(pk=limits.pk).update(max_loss_since=now)
    log.warning("risk locks of %s reset by %s (%d)", strategy or "the account", actor, reset)
    return reset


def load_holidays(path: str) -> tuple[int, int]:
    """Rows `date,exchange,description` (ISO date; exchange empty for all) from a CSV file, a
    header line optional; (added, already there). Raises ValueError naming the bad line."""
    added = existing = 0
    with open(path, newline="", encoding="utf-8-sig") as f, transaction.atomic():
        for number, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip() or row[0].strip().lower() == "date":
                continue
            try:
                day = date.fromisoformat(row[0].strip())
            except ValueError:
                raise ValueError(f"line {number}: {row[0]!r} is not a date (YYYY-MM-DD)") from None
            exchange = row[1].strip().upper() if len(row) > 1 else ""
            if exchange and exchange not in EXCHANGE_CODES:
                raise ValueError(f"line {number}: {exchange!r} is not one of {', '.join(EXCHANGE_CODES)}")
            description = row[2].strip()[:128] if len(row) > 2 else ""
            _, created = MarketHoliday.objects.get_or_create(date=day, exchange=exchange,
                                                             defaults={"description": description})
            added, existing = added + created, existing + (not created)
    return added, existing
