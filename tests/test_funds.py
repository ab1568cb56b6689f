"""The account's funds: read by the watcher from the broker (paper, fake Noren's Limits), shown in
/api/health/ and the admin; INSUFFICIENT_FUNDS for a check_funds strategy's CNC buys."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token

from orders.models import BrokerFunds
from tests.desk import assert_blocked, assert_passed, leg

pytestmark = pytest.mark.django_db


@pytest.fixture
def checks_funds(strategy, settings):
    settings.PAPER_CASH = 50_000
    strategy.check_funds = True
    strategy.save()


def test_the_watcher_reads_the_paper_funds_once_a_minute(desk, settings):
    settings.PAPER_CASH = 50_000
    desk.through(desk.entry("BUY", "SBIN-EQ", 10))  # a position: 8155.00 of margin in use
    funds = BrokerFunds.objects.get(broker="paper")
    assert funds.cash == Decimal("50000")
    BrokerFunds.objects.filter(broker="paper").update(taken_at=timezone.now() - timedelta(seconds=61))
    desk.watch()
    funds.refresh_from_db()
    assert (funds.margin_used, funds.available_cash) == (Decimal("8155.00"), Decimal("41845.00"))
    settings.PAPER_CASH = 1
    desk.watch()  # within the minute: not read again
    funds.refresh_from_db()
    assert funds.cash == Decimal("50000")


def test_a_cnc_buy_beyond_the_available_cash_is_refused(desk, checks_funds):
    desk.watch()  # the first read
    [too_big] = desk.post("ENTRY", [leg("RELIANCE-EQ", qty=20, product="CNC")])  # 59000.00
    assert_blocked(too_big, "RISK_BLOCKED:INSUFFICIENT_FUNDS 59000.00 > 50000.00")
    first, second = desk.post("ENTRY", [leg("RELIANCE-EQ", qty=10, product="CNC"),
                                        leg("SBIN-EQ", qty=30, product="CNC")])  # 29500 + 24465 of 50000
    assert second.tag == "RISK_BLOCKED:INSUFFICIENT_FUNDS 24465.00 > 20500.00"
    assert first.tag.startswith("GUARD_BLOCKED:BATCH")
    assert_passed(desk.entry("BUY", "RELIANCE-EQ", 20))  # MIS: the broker's to judge
    [sell] = desk.post("ENTRY", [leg("INFY-EQ", side="SELL", qty=100, product="CNC")])
    assert "INSUFFICIENT_FUNDS" not in sell.tag  # a sale spends no cash


def test_without_a_fresh_read_the_funds_are_unknown(desk, checks_funds, settings):
    [order] = desk.post("ENTRY", [leg("RELIANCE-EQ", qty=1, product="CNC")])
    assert_blocked(order, "RISK_BLOCKED:FUNDS_UNKNOWN")
    desk.watch()
    BrokerFunds.objects.update(taken_at=timezone.now() - timedelta(seconds=settings.FUNDS_MAX_AGE_S + 1))
    [stale] = desk.post("ENTRY", [leg("SBIN-EQ", qty=1, product="CNC")])
    assert stale.tag == "RISK_BLOCKED:FUNDS_UNKNOWN"


def test_funds_in_the_health_report_and_from_the_noren_limits(desk, shoonya_legacy, client):
    desk.watch()
    token = Token.objects.create(user=User.objects.create_user("viewer", password="pw-viewer-0123")).key
    funds = client.get("/api/health/", HTTP_AUTHORIZATION=f"Token {token}").json()["funds"]
    assert (funds["known"], funds["cash"], funds["margin_used"], funds["available_cash"]) == (
        True, "100000.00", "0.00", "100000.00")
    assert shoonya_legacy.calls_to("Limits")


def test_cnc_buys_since_the_last_read_count_against_the_cash(desk, checks_funds):
    desk.watch()
    first = desk.post("ENTRY", [leg("RELIANCE-EQ", qty=10, product="CNC")])[0]  # 29500.00
    assert first.tag == ""
    [second] = desk.post("ENTRY", [leg("SBIN-EQ", qty=30, product="CNC")])  # 24465.00 of what is left
    assert second.tag == "RISK_BLOCKED:INSUFFICIENT_FUNDS 24465.00 > 20500.00"
