"""Counted risk limits under real concurrency on PostgreSQL: alerts released together through
the real webhook, each on its own connection, cannot all pass MAX_POSITIONS or
ORDER_RATE_LIMIT (the per-strategy lock row). Deselected on SQLite."""

import json
import threading

import pytest
from django.test import Client

from orders.models import Order, Status
from risk import limits as risk_limits
from risk.services import set_limits
from tests.factories import TEST_SECRET
from tests.processes import run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SYMBOLS = ["RELIANCE-EQ", "SBIN-EQ", "INFY-EQ", "TCS-EQ", "HDFCBANK-EQ", "ICICIBANK-EQ"]


def entry(symbol: str) -> dict:
    body = {"strategy": "demo", "secret": TEST_SECRET, "execution_type": "ENTRY", "exchange": "NSE",
            "legs": [{"symbol": symbol, "side": "BUY", "qty": 1, "order_type": "MARKET", "product": "MIS"}]}
    response = Client().post("/api/webhook/", data=json.dumps(body), content_type="text/plain")
    assert response.status_code == 201, response.content
    return response.json()["orders"][0]


def all_counted_together(monkeypatch, n):
    """The worst interleaving: every intake has registered its order before any of them takes
    the strategy's lock, so the lock alone must decide."""
    registered = threading.Barrier(n)
    real_lock = risk_limits.Scope.lock

    def lock_after_everyone_registered(self):
        registered.wait(timeout=20)
        return real_lock(self)

    monkeypatch.setattr(risk_limits.Scope, "lock", lock_after_everyone_registered)


@pytest.mark.parametrize("limit, tag_start", [({"max_positions": 2}, "RISK_BLOCKED:MAX_POSITIONS 2 open >= 2"),
                                              ({"max_orders_per_min": 2},
                                               "RISK_BLOCKED:ORDER_RATE_LIMIT 3 orders in 60s > 2")])
def test_concurrent_alerts_cannot_all_pass_a_counted_limit(paper_instruments, strategy, monkeypatch, limit,
                                                          tag_start):
    set_limits(strategy, actor="test", **limit)
    n = len(SYMBOLS)
    all_counted_together(monkeypatch, n)
    replies = run_together(n, lambda i: entry(SYMBOLS[i]))
    assert not [r for r in replies if isinstance(r, Exception)], replies
    passed = [r for r in replies if r["status"] == Status.CREATED]
    blocked = [r for r in replies if r["status"] == Status.FAILED]
    assert len(passed) == 2 and len(blocked) == n - 2, replies
    assert {b["tag"] for b in blocked} == {tag_start}
    assert Order.objects.filter(status=Status.CREATED).count() == 2
