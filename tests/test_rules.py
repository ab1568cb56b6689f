"""Strategy rules and stale alerts (GUARD_BLOCKED:), and the blocker pipeline's settings."""

import subprocess
import sys
from datetime import datetime, time, timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone

from orders.models import WEEKDAYS, Alert
from risk.models import MarketHoliday
from tests.desk import assert_blocked, assert_passed, leg
from tests.processes import BASE_DIR

IST = ZoneInfo("Asia/Kolkata")


def configure(strategy, **fields):
    for name, value in fields.items():
        setattr(strategy, name, value)
    strategy.full_clean()
    strategy.save()


def test_symbols_and_exchanges_outside_the_strategys_lists(desk, strategy):
    configure(strategy, allowed_exchanges="NSE", symbol_patterns="SBIN-* INFY-EQ")
    assert_blocked(desk.entry("BUY", "RELIANCE-EQ", 1), "GUARD_BLOCKED:SYMBOL_NOT_ALLOWED NSE:RELIANCE-EQ",
                   "RELIANCE-EQ matches none of SBIN-* INFY-EQ")
    assert_passed(desk.entry("BUY", "SBIN-EQ", 1))
    [order] = desk.post("ENTRY", [leg("RELIANCE")], exchange="BSE")
    assert_blocked(order, "GUARD_BLOCKED:SYMBOL_NOT_ALLOWED BSE:RELIANCE", "exchange BSE not in the strategy's NSE")


def test_products_and_order_types_outside_the_strategys_lists(desk, strategy):
    configure(strategy, allowed_products="MIS", allowed_order_types="LIMIT")
    assert_blocked(desk.entry("BUY", "SBIN-EQ", 1, product="CNC", price="800"),
                   "GUARD_BLOCKED:PRODUCT_NOT_ALLOWED CNC")
    assert_blocked(desk.entry("BUY", "SBIN-EQ", 1), "GUARD_BLOCKED:ORDER_TYPE_NOT_ALLOWED MARKET")
    assert_passed(desk.entry("BUY", "SBIN-EQ", 1, price="800"))


def test_rule_lists_are_validated(strategy):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="NYSE"):
        configure(strategy, allowed_exchanges="NSE, NYSE")
    with pytest.raises(ValidationError, match="FUNDAY"):
        configure(strategy, trading_days="MON,FUNDAY")


def test_outside_the_trading_window_entries_are_blocked_and_exits_may_pass(desk, strategy):
    now = timezone.now().astimezone(IST)
    today = WEEKDAYS[now.weekday()]
    configure(strategy, trading_days=",".join(d for d in WEEKDAYS if d != today))
    order = desk.entry("BUY", "SBIN-EQ", 1)
    assert order.tag.startswith("GUARD_BLOCKED:OUTSIDE_WINDOW ") and order.tag.endswith(f" IST {today}")
    assert_blocked(order, order.tag)
    configure(strategy, trading_days="")
    start = (now - timedelta(hours=2)).time().replace(second=0, microsecond=0)
    end = (now - timedelta(hours=1)).time().replace(second=0, microsecond=0)
    if start > end:  # around midnight the window would wrap: move it after now instead
        start, end = (now + timedelta(minutes=5)).time(), time(23, 59)
    configure(strategy, window_start=start, window_end=end)
    blocked = desk.entry("BUY", "TCS-EQ", 1)
    assert blocked.tag.startswith("GUARD_BLOCKED:OUTSIDE_WINDOW ")
    assert f"outside {start:%H:%M}-{end:%H:%M}" in blocked.events.get(kind="BLOCKED").detail
    # Exits are let through by default; with the switch off they are held too.
    exit_ = desk.exit("SELL", "TCS-EQ", 1)
    assert "OUTSIDE_WINDOW" not in exit_.tag
    configure(strategy, exits_outside_window=False)
    assert desk.exit("SELL", "TCS-EQ", 1).tag.startswith("GUARD_BLOCKED:OUTSIDE_WINDOW ")


def test_a_market_holiday_closes_the_exchange(desk, tmp_path):
    today = timezone.now().astimezone(IST).date()
    csv = tmp_path / "holidays.csv"
    csv.write_text(f"date,exchange,description\n{today.isoformat()},NSE,Test holiday\n2030-01-26,,Republic Day\n")
    out = StringIO()
    call_command("load_holidays", str(csv), stdout=out)
    assert "2 holiday(s) added, 0 already there" in out.getvalue()
    call_command("load_holidays", str(csv), stdout=out)  # idempotent
    assert MarketHoliday.objects.count() == 2
    assert_blocked(desk.entry("BUY", "SBIN-EQ", 1), f"GUARD_BLOCKED:MARKET_CLOSED NSE {today:%Y-%m-%d}")
    [bse] = desk.post("ENTRY", [leg("RELIANCE")], exchange="BSE")
    assert_passed(bse)
    csv.write_text("not-a-date,NSE,x\n")
    with pytest.raises(CommandError, match="line 1"):
        call_command("load_holidays", str(csv))


# --- stale alerts -----------------------------------------------------------------------------


@pytest.mark.parametrize("offset_s, blocked", [(-75, True), (-30, False), (3, False), (20, True)])
def test_stale_and_future_alerts(desk, offset_s, blocked):
    sent_at = (timezone.now() + timedelta(seconds=offset_s)).isoformat().replace("+00:00", "Z")
    [order] = desk.post("ENTRY", [leg("SBIN-EQ", qty=1)], sent_at=sent_at)
    if blocked:
        assert order.tag == f"GUARD_BLOCKED:STALE_ALERT {-offset_s}s", order.tag
        assert_blocked(order, order.tag)
    else:
        assert_passed(order)
    assert Alert.objects.get().sent_at is not None


@pytest.mark.parametrize("sent_at", ["2026-12-01 09:15:00", "yesterday", 1733040000, "2026-12-01T09:15:00"])
def test_a_sent_at_that_is_not_iso_8601_with_an_offset_is_a_400(strategy, alert_body, post_alert, sent_at):
    response = post_alert(alert_body(sent_at=sent_at))
    assert response.status_code == 400
    assert "sent_at" in response.json()["errors"]


def test_tradingview_timenow_is_accepted(strategy, alert_body, post_alert):
    now = datetime.now(tz=IST).astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert post_alert(alert_body(sent_at=now)).json()["orders"][0]["status"] == "CREATED"


# --- the pipeline -----------------------------------------------------------------------------


def block_everything(ctx):
    from risk.pipeline import Verdict

    return {o.leg: Verdict("GUARD_BLOCKED:TEST_BLOCKER", "from ORDERDESK_BLOCKERS") for o in ctx.pending()}


def test_the_blockers_come_from_the_setting(desk, settings):
    settings.ORDERDESK_BLOCKERS = [*settings.ORDERDESK_BLOCKERS[:1], "tests.test_rules.block_everything"]
    assert_blocked(desk.entry("BUY", "SBIN-EQ", 1), "GUARD_BLOCKED:TEST_BLOCKER", "from ORDERDESK_BLOCKERS")
    settings.ORDERDESK_BLOCKERS = ["risk.blockers.no_such_blocker"]
    with pytest.raises(ImproperlyConfigured, match="ORDERDESK_BLOCKERS"):
        from orders.blocker_registry import get_blockers

        get_blockers()


def test_no_import_cycle_between_the_blockers_and_the_guard_and_orders_uses_only_the_interface():
    for first in ("risk.guard", "risk.blockers", "risk.limits", "risk.rules"):
        code = f"import django; django.setup(); import {first}"
        run = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True,
                             env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
    imports = subprocess.run(["grep", "-rhoE", r"^(from|import) risk[.a-z_]*", "orders/"], cwd=BASE_DIR,
                             capture_output=True, text=True).stdout.split("\n")
    assert {line.split()[1] for line in imports if line} == {"risk.pipeline"}
