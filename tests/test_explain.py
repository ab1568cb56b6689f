"""POST /api/webhook/explain/: every check's verdict per leg, from the real intake path rolled
back, agreeing with what the webhook then does with the same body."""

import json
from decimal import Decimal

import pytest

from orders.models import Alert, Fill, Order, OrderEvent, RejectedAlert
from risk.models import RiskLock
from risk.services import set_limits
from tests.desk import leg

URL = "/api/webhook/explain/"


def rows() -> tuple:
    return (Alert.objects.count(), Order.objects.count(), OrderEvent.objects.count(), RejectedAlert.objects.count(),
            Fill.objects.count(), RiskLock.objects.count())


def explain(client, body):
    return client.post(URL, data=json.dumps(body), content_type="text/plain")


CASES = {
    "passes": ("ENTRY", [leg("SBIN-EQ", qty=1)]),
    "qty limit": ("ENTRY", [leg("SBIN-EQ", qty=500)]),
    "duplicate position": ("ENTRY", [leg("RELIANCE-EQ", qty=1)]),
    "exit too big": ("EXIT", [leg("RELIANCE-EQ", side="SELL", qty=20)]),
    "fat finger and a good leg": ("ENTRY", [leg("INFY-EQ", qty=1, price="2500"), leg("TCS-EQ", qty=1)]),
    "max loss lock": ("ENTRY", [leg("HDFCBANK-EQ", qty=1)]),
}


@pytest.fixture
def history(desk, strategy):
    """An open position of 10 RELIANCE-EQ, and limits that some cases meet."""
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    set_limits(strategy, actor="test", max_qty=100, price_band_pct=Decimal(10))


@pytest.mark.parametrize("case", CASES)
def test_explain_agrees_with_the_real_intake_and_leaves_nothing(case, history, desk, client, alert_body, strategy):
    if case == "max loss lock":
        limits = set_limits(strategy, actor="test", max_loss=Decimal(1))
        Fill.objects.update(realized_pnl=-5, at=limits.max_loss_since)  # P&L since the limit was set: -5
    execution_type, legs = CASES[case]
    body = alert_body(execution_type=execution_type, legs=legs)
    before = rows()
    response = explain(client, body)
    assert response.status_code == 200, response.content
    explained = response.json()["legs"]
    assert rows() == before  # no alert, order, event, rejected alert, fill or lock
    assert [e["leg"] for e in explained] == list(range(1, len(legs) + 1))
    for e in explained:
        assert e["checks"], e  # every check that ran is listed
        assert all(set(c) == {"code", "passed", "tag", "detail"} for c in e["checks"])
        failed = [c["tag"] for c in e["checks"] if not c["passed"]]
        assert (e["verdict"] == "") == (not failed) or e["verdict"].startswith("GUARD_BLOCKED:BATCH")
    replies = desk.post(execution_type, legs)
    assert [o.tag for o in replies] == [e["verdict"] for e in explained]


def test_explain_lists_every_check_not_only_the_first_block(history, client, alert_body):
    body = alert_body(legs=[leg("RELIANCE-EQ", qty=500, price="3500")])
    [e] = explain(client, body).json()["legs"]
    failed = {c["code"]: c["tag"] for c in e["checks"] if not c["passed"]}
    assert failed == {
        "QTY_LIMIT": "RISK_BLOCKED:QTY_LIMIT qty 500 > 100",
        "PRICE_BAND": "RISK_BLOCKED:PRICE_BAND 3500.00 is 18.64% from 2950.00 > 10.00%",
        "EXECUTION_GUARD": "GUARD_BLOCKED:DUPLICATE_POSITION",
    }
    assert e["verdict"] == "RISK_BLOCKED:QTY_LIMIT qty 500 > 100"  # the first stands
    passed = {c["code"] for c in e["checks"] if c["passed"]}
    assert {"STRATEGY_DISABLED", "KILL_SWITCH", "SYMBOL_NOT_ALLOWED", "OUTSIDE_WINDOW"} <= passed


def test_explain_refuses_a_wrong_secret_without_a_record(strategy, client, alert_body, caplog):
    response = explain(client, alert_body(secret="w" * 30))
    assert response.status_code == 401
    assert RejectedAlert.objects.count() == 0
    assert "webhook refused 401" in caplog.text


def test_explain_is_throttled_as_the_webhook(strategy, client, alert_body, settings):
    settings.WEBHOOK_RATE_PER_IP = "2/min"
    statuses = [explain(client, alert_body()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert RejectedAlert.objects.count() == 0
