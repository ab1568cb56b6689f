"""The paper broker on its own: placement, the order book over time, switches, positions."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from brokers import paper
from brokers.base import BookStatus, BrokerInDoubt, PlaceOutcome, PlaceRequest
from brokers.models import Behaviour, PaperInstrument, PaperOrder
from brokers.paper import PaperBroker

pytestmark = pytest.mark.django_db


def request(symbol="RELIANCE-EQ", side="BUY", qty=10, order_type="MARKET", price=None, trigger_price=None,
            exchange="NSE", client_order_id="cid-1"):
    return PlaceRequest(client_order_id, exchange, symbol, side, qty, order_type, "MIS",
                        None if price is None else Decimal(price),
                        None if trigger_price is None else Decimal(trigger_price))


def book_entry(broker, broker_order_id):
    return next(e for e in broker.order_book() if e.broker_order_id == broker_order_id)


def test_default_instruments_exist():
    names = set(PaperInstrument.objects.filter(exchange="NSE").values_list("symbol", flat=True))
    assert {"RELIANCE-EQ", "SBIN-EQ", "INFY-EQ", "TCS-EQ"} <= names


@pytest.mark.parametrize("symbol, exchange, disable", [
    ("NOSUCH-EQ", "NSE", False),
    ("SBIN-EQ", "NSE", True),
    ("SBIN-EQ", "BSE", False),  # listed on NSE only
])
def test_unknown_or_disabled_symbol_is_rejected_in_norens_words(symbol, exchange, disable):
    PaperInstrument.objects.filter(symbol=symbol).update(enabled=not disable)
    result = PaperBroker().place(request(symbol=symbol, exchange=exchange))
    assert (result.outcome, result.message, result.broker_order_id) == (
        PlaceOutcome.REJECTED, "Invalid Trading Symbol", None)
    assert not PaperOrder.objects.exists()


@pytest.mark.parametrize("order_type, price, trigger, fill", [
    ("MARKET", None, None, "2950"),  # the reference price
    ("LIMIT", "2901.5", None, "2901.5"),
    ("SL-M", None, "2990", "2990"),
])
def test_accepted_order_stays_open_for_the_delay_then_completes(settings, order_type, price, trigger, fill):
    settings.PAPER_FILL_DELAY_S = 30
    broker = PaperBroker()
    result = broker.place(request(order_type=order_type, price=price, trigger_price=trigger))
    assert result.outcome == PlaceOutcome.ACCEPTED and result.broker_order_id
    entry = book_entry(broker, result.broker_order_id)
    assert (entry.status, entry.raw_status, entry.filled_qty, entry.client_order_id) == (
        BookStatus.OPEN, "OPEN", 0, "cid-1")
    PaperOrder.objects.update(due_at=timezone.now() - timedelta(seconds=1))
    entry = book_entry(broker, result.broker_order_id)
    assert (entry.status, entry.filled_qty, entry.avg_price) == (BookStatus.COMPLETE, 10, Decimal(fill))


def test_timeout_on_place_records_the_order_then_raises_in_doubt():
    PaperInstrument.objects.filter(symbol="TCS-EQ").update(behaviour=Behaviour.TIMEOUT_ON_PLACE)
    broker = PaperBroker()
    with pytest.raises(BrokerInDoubt):
        broker.place(request(symbol="TCS-EQ", client_order_id="lost-reply"))
    [entry] = broker.order_book()
    assert entry.client_order_id == "lost-reply"


def test_a_colliding_broker_order_id_is_drawn_again(monkeypatch):
    ids = iter(["X1", "X1", "X2"])
    monkeypatch.setattr(paper, "_new_broker_order_id", lambda now: next(ids))
    broker = PaperBroker()
    assert [broker.place(request()).broker_order_id for _ in range(2)] == ["X1", "X2"]


def test_positions_net_qty_average_and_pnl():
    broker = PaperBroker()
    broker.place(request(side="BUY", qty=10))  # at the reference price 2950
    broker.place(request(side="BUY", qty=10, order_type="LIMIT", price="2850"))  # average 2900
    broker.place(request(side="SELL", qty=4, order_type="LIMIT", price="3000"))
    broker.order_book()  # fills everything (no delay in tests)
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(ref_price=Decimal("3000"))
    [position] = broker.positions()
    assert (position.symbol, position.net_qty, position.net_avg_price, position.last_price) == (
        "RELIANCE-EQ", 16, Decimal("2900"), Decimal("3000"))
    assert position.realized_pnl == Decimal("400")  # (3000 - 2900) * 4
    assert position.unrealized_pnl == Decimal("1600")  # (3000 - 2900) * 16
