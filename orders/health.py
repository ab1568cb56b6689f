"""Health selectors: what GET /api/health/ reports, read from our own tables only.

A handful of cheap queries (a trivial round trip, one aggregate over CREATED orders on the
(status, created_at) index, the watcher lease row and, for a live broker, its stored
session row), no broker I/O and never a token or a secret. The queue figures come from the
Order table, not from django-q2, so they mean the same with the ORM and the Redis broker.

`health_report()` never raises for the database's sake: a database error anywhere makes the
report `down` (the only state the view answers with 503).
"""

import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import BooleanField, Count, ExpressionWrapper, Min, Q
from django.utils import timezone

from . import feedstate
from .leases import holder_is_gone
from .models import AuditCheck, Order, PositionDifference, Reconciliation, Status, WatcherLease
from .watcher import LEASE_NAME

OK, DEGRADED, DOWN = "ok", "degraded", "down"
WATCHER_STALE_INTERVALS = 5  # passes missed before the watcher counts as stalled


@dataclass
class HealthReport:
    status: str
    details: dict = field(default_factory=dict)  # every key but `status`; for authenticated callers

    @property
    def database_reachable(self) -> bool:
        return self.status != DOWN

    def as_dict(self) -> dict:
        return {"status": self.status, **self.details}


def _age_s(then, now) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 1)


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()


# --- the selectors ------------------------------------------------------------------------

def database_round_trip() -> dict:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"reachable": True, "vendor": connection.vendor,
            "round_trip_ms": round((time.perf_counter() - started) * 1000, 3)}


def created_queue(now) -> dict:
    """CREATED orders, i.e. registered and waiting for a worker's claim."""
    row = Order.objects.filter(status=Status.CREATED).aggregate(count=Count("id"), oldest=Min("created_at"))
    return {"created": row["count"], "oldest_created_age_s": _age_s(row["oldest"], now),
            "stale_after_s": settings.REQUEUE_CREATED_AFTER_S}


def watcher_stale_after_s() -> float:
    # A pass may legitimately take up to the broker timeouts, which the lease TTL covers.
    return max(WATCHER_STALE_INTERVALS * settings.WATCHER_INTERVAL_S, settings.WATCHER_LEASE_TTL_S)


def watcher_state(now) -> dict:
    lease = WatcherLease.objects.filter(name=LEASE_NAME).values("owner", "expires_at", "last_pass_at").first()
    live = bool(lease and lease["owner"] and lease["expires_at"] > now and not holder_is_gone(lease["owner"]))
    return {"holder": lease["owner"] if live else None,
            "last_pass_age_s": _age_s(lease["last_pass_at"], now) if lease else None,
            "stale_after_s": watcher_stale_after_s()}


def shoonya_session_state() -> dict:
    """The stored session of the configured user, read without its token."""
    from brokers.models import BrokerSession
    from brokers.shoonya_session import BROKER, user_id

    row = (BrokerSession.objects.filter(broker=BROKER)
           .annotate(no_token=ExpressionWrapper(Q(token=""), output_field=BooleanField()))
           .values("user_id", "kind", "valid", "no_token", "obtained_at", "invalidated_at").first())
    if row is None or row["user_id"] != user_id() or row["obtained_at"] is None:
        return {"session": "missing", "ready": False}
    state = "valid" if row["valid"] and not row["no_token"] else "expired"
    return {"session": state, "ready": state == "valid", "kind": row["kind"],
            "obtained_at": _iso(row["obtained_at"]), "invalidated_at": _iso(row["invalidated_at"])}


def funds_state(now) -> dict:
    """The account's funds as the watcher last read them (never a reason to degrade: a broker
    may not report them; check_funds strategies see FUNDS_UNKNOWN when they are stale)."""
    from .models import BrokerFunds

    row = BrokerFunds.objects.filter(broker=settings.ORDERDESK_BROKER).values(
        "cash", "payin", "margin_used", "collateral", "available_cash", "taken_at").first()
    if row is None:
        return {"known": False}
    return {"known": True, **{k: str(v) for k, v in row.items() if k != "taken_at"},
            "taken_at": _iso(row["taken_at"]), "age_s": round((now - row["taken_at"]).total_seconds(), 1)}


def audit_state() -> dict:
    """The last verify_audit run (manage.py verify_audit, or its nightly schedule)."""
    check = AuditCheck.objects.values("ran_at", "orders", "positions", "mismatches").first()
    if check is None:
        return {"checked": False}
    return {"checked": True, "ran_at": _iso(check["ran_at"]), "orders": check["orders"],
            "positions": check["positions"], "mismatches": check["mismatches"], "ok": check["mismatches"] == 0}


def reconciliation_state() -> dict:
    """The last comparison of the broker's positions with ours and the external orders', and
    the differences told and not yet resolved."""
    last = Reconciliation.objects.values_list("at", flat=True).first()
    open_ = list(PositionDifference.objects.filter(resolved_at__isnull=True, confirmed_at__isnull=False)
                 .values_list("exchange", "symbol", "product"))
    return {"last_reconciled_at": _iso(last), "differences": len(open_),
            "instruments": [":".join(key) for key in open_[:10]]}


def broker_state() -> dict:
    from brokers.registry import known

    name = settings.ORDERDESK_BROKER
    if name == "shoonya":
        return {"name": name, **shoonya_session_state()}
    if known(name):  # no session to hold (the paper broker, a broker class given by its path)
        return {"name": name, "session": "n/a", "ready": True}
    return {"name": name, "session": "n/a", "ready": False, "error": "not a known broker"}


# --- the verdict --------------------------------------------------------------------------

def _reasons(queue: dict, watcher: dict, broker: dict, feed: dict, audit: dict, reconciliation: dict) -> list[str]:
    reasons = []
    if reconciliation["differences"]:
        reasons.append(f"{reconciliation['differences']} position difference(s) with the broker: "
                       + ", ".join(reconciliation["instruments"]))
    if audit.get("mismatches"):
        reasons.append(f"verify_audit found {audit['mismatches']} mismatch(es) at {audit['ran_at']}")
    age, stale = watcher["last_pass_age_s"], watcher["stale_after_s"]
    if watcher["holder"] is None and (age is None or age > stale):
        # No holder right after a recent pass is a hand-over between watcher slices.
        reasons.append("watcher not running" if age is None else f"watcher not running: last pass {age:.0f}s ago")
    elif age is None or age > stale:
        reasons.append("watcher holds the lease but has not completed a pass"
                       + ("" if age is None else f" for {age:.0f}s"))
    oldest = queue["oldest_created_age_s"]
    if oldest is not None and oldest > queue["stale_after_s"]:
        reasons.append(f"{queue['created']} CREATED order(s) waiting, the oldest for {oldest:.0f}s")
    if feed["running"] and not feed["healthy"]:
        # A listener that cannot keep its connection: orders still converge, at the poll's pace.
        reasons.append(f"order feed down ({feed['last_error'] or 'no recent sign of life'}): polling instead")
    if broker.get("error"):
        reasons.append(f"broker {broker['name']}: {broker['error']}")
    elif not broker["ready"]:
        reasons.append(f"broker {broker['name']}: session {broker['session']}")
    return reasons


def health_report() -> HealthReport:
    now = timezone.now()
    try:
        database = database_round_trip()
        queue = created_queue(now)
        watcher = watcher_state(now)
        broker = broker_state()
        feed = feedstate.state(now)
        funds = funds_state(now)
        audit = audit_state()
        reconciliation = reconciliation_state()
    except DatabaseError as exc:
        # The class name only: a driver's message can carry the host, user or database name.
        return HealthReport(DOWN, {"database": {"reachable": False, "vendor": connection.vendor,
                                                "error": type(exc).__name__},
                                   "reasons": ["database unreachable"]})
    reasons = _reasons(queue, watcher, broker, feed, audit, reconciliation)
    return HealthReport(DEGRADED if reasons else OK, {
        "reasons": reasons, "database": database, "queue": queue, "watcher": watcher, "broker": broker, "feed": feed,
        "funds": funds, "audit": audit, "reconciliation": reconciliation, "checked_at": now.isoformat(),
    })
