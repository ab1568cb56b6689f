"""Market-order protection: MARKET sent as LIMIT at the last price ± a percentage, on the tick,
from a quote asked at submission time (paper broker, fake Noren with its mixed-up quotes); no
valid quote: not sent; a protected order left open is told, a square-off exit re-priced."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from brokers.models import Instrument, InstrumentMaster, PaperInstrument, PaperOrder
from orders import squareoff
from orders.models import EventKind, Order, OrderModification, Status
from orders.protection import limit_price

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]


@pytest.mark.parametrize("last, side, pct, tick, expected", [
    ("2950.00", "BUY", "1", "0.05", "2979.50"),
    ("2950.00", "SELL", "1", "0.05", "2920.50"),
    ("101.03", "BUY", "0.5", "0.05", "101.50"),  # 101.535 -> down to the tick, inside the band
    ("101.03", "SELL", "0.5", "0.05", "100.55"),  # 100.525 -> up to the tick
    ("815.50", "BUY", "2", "0.10", "831.80"),
])
def test_the_limit_price_is_on_the_tick_and_inside_the_band(last, side, pct, tick, expected):
    assert limit_price(Decimal(last), side, Decimal(pct), Decimal(tick)) == Decimal(expected)


@pytest.fixture
def protected(strategy):
    strategy.market_protection_pct = Decimal("1")
    strategy.save()


def test_a_market_order_goes_as_a_limit_and_the_claim_says_so(desk, protected):
    order = desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    [paper] = PaperOrder.objects.filter(client_order_id=order.command_id)
    assert (paper.order_type, paper.price) == ("LIMIT", Decimal("2979.50"))
    assert (order.order_type, order.working_price, order.avg_price) == ("MARKET", Decimal("2979.50"),
                                                                          Decimal("2979.50"))
    claimed = order.events.get(kind=EventKind.CLAIMED)
    assert claimed.detail == "MARKET protected: sent as LIMIT 2979.5 (last price 2950 +1%, tick 0.05)"


def test_the_global_setting_applies_without_the_strategys_own(desk, settings):
    settings.MARKET_PROTECTION_PCT = 2.0
    order = desk.through(desk.entry("BUY", "SBIN-EQ", 1))
    assert order.working_price == Decimal("831.80")


def test_without_a_valid_quote_the_order_is_not_sent(desk, protected):
    order = desk.entry("BUY", "RELIANCE-EQ", 10)
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(enabled=False)
    desk.send()
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, "BROKER_REJECTED:not sent: no valid quote")
    assert [e.kind for e in order.events.all()] == [EventKind.CREATED, EventKind.BROKER_REJECTED]
    assert not PaperOrder.objects.exists()


@pytest.fixture
def noren_master(shoonya_legacy):
    Instrument.objects.create(exchange="NSE", token="2885", trading_symbol="RELIANCE-EQ", symbol="RELIANCE",
                              instrument_type="EQ", lot_size=1, tick_size=Decimal("0.05"))
    Instrument.objects.create(exchange="NSE", token="3045", trading_symbol="SBIN-EQ", symbol="SBIN",
                              instrument_type="EQ", lot_size=1, tick_size=Decimal("0.05"))
    InstrumentMaster.objects.create(exchange="NSE", rows=2, synced_at=timezone.now())
    shoonya_legacy.list_scrip("RELIANCE-EQ", "2885")
    shoonya_legacy.list_scrip("SBIN-EQ", "3045")
    return shoonya_legacy


def test_a_quote_about_another_instrument_is_asked_again_once(desk, protected, noren_master):
    noren_master.quote_mixups = 1
    order = desk.entry("BUY", "RELIANCE-EQ", 10)
    desk.send()
    asked = [c.jdata["token"] for c in noren_master.calls_to("GetQuotes")]
    [placed] = [c.jdata for c in noren_master.calls_to("PlaceOrder")]
    assert asked == ["2885", "2885"]
    assert (placed["prctyp"], placed["prc"], placed["remarks"]) == ("LMT", "2979.50", order.command_id)


def test_two_mixed_up_quotes_and_the_order_is_not_sent(desk, protected, noren_master):
    noren_master.quote_mixups = 2
    order = desk.entry("BUY", "RELIANCE-EQ", 10)
    desk.send()
    order.refresh_from_db()
    assert (order.status, order.tag) == (Status.FAILED, "BROKER_REJECTED:not sent: no valid quote")
    assert "the reply was about NSE:3045:SBIN-EQ" in order.events.get(kind=EventKind.BROKER_REJECTED).detail
    assert not noren_master.calls_to("PlaceOrder")


def test_a_protected_order_left_open_is_told_and_a_square_off_exit_re_priced(desk, strategy, protected, settings,
                                                                             fake_telegram):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S = 3600
    squareoff.close(strategy="demo", actor="api:ops")
    desk.send()
    [exit_order] = Order.objects.filter(execution_type="EXIT")
    assert exit_order.working_price == Decimal("2920.50")
    Order.objects.filter(pk=exit_order.pk).update(sent_at=timezone.now() - timedelta(seconds=31))
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(ref_price=Decimal("2900"))
    desk.watch(2)
    exit_order.refresh_from_db()
    assert exit_order.events.filter(kind=EventKind.PROTECTED_OPEN).count() == 1
    [modification] = OrderModification.objects.filter(order=exit_order)
    assert (modification.price, modification.actor) == (Decimal("2871.00"), "squareoff")
    desk.run_queue()  # the worker's ModifyOrder
    exit_order.refresh_from_db()
    assert exit_order.working_price == Decimal("2871.00")
    assert PaperOrder.objects.get(client_order_id=exit_order.command_id).price == Decimal("2871.00")
