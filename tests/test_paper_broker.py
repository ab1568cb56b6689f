"""The paper broker on its own: placement, the order book over time, switches, positions."""

from contextlib import nullcontext
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
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


@pytest.mark.parametrize("in_transaction", [False, True], ids=["autocommit", "in a transaction"])
def test_a_colliding_broker_order_id_is_drawn_again(paper_instruments, monkeypatch, in_transaction):
    """In autocommit the failed INSERT needs no savepoint; in a caller's transaction it must
    not break the transaction."""
    ids = iter(["X1", "X1", "X2"])
    monkeypatch.setattr(paper, "_new_broker_order_id", lambda now: next(ids))
    broker = PaperBroker()
    with transaction.atomic() if in_transaction else nullcontext():
        assert [broker.place(request()).broker_order_id for _ in range(2)] == ["X1", "X2"]
    assert sorted(PaperOrder.objects.values_list("broker_order_id", flat=True)) == ["X1", "X2"]


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


# --- reading a busy day from its last changes on ------------------------------------------------

def test_each_process_reads_the_book_from_its_last_changes_and_sees_the_others_moves(settings):
    settings.PAPER_FILL_DELAY_S = 30
    placing, watching = PaperBroker(), PaperBroker()  # a worker's broker object, the watcher's
    ids = [placing.place(request(client_order_id=f"cid-{i}")).broker_order_id for i in range(3)]
    assert {e.broker_order_id: e.status for e in watching.order_book()} == dict.fromkeys(ids, BookStatus.OPEN)
    PaperOrder.objects.filter(broker_order_id=ids[0]).update(due_at=timezone.now())
    assert [e.broker_order_id for e in placing.advance()] == [ids[0]]  # moved by the other process
    later = placing.place(request(client_order_id="cid-late")).broker_order_id
    book = {e.broker_order_id: e for e in watching.order_book()}
    assert (book[ids[0]].status, book[ids[0]].filled_qty) == (BookStatus.COMPLETE, 10)
    assert book[ids[1]].status == BookStatus.OPEN and later in book


def test_an_admin_edit_of_a_paper_order_reaches_the_book():
    broker = PaperBroker()
    placed = broker.place(request()).broker_order_id
    broker.order_book()
    order = PaperOrder.objects.get(broker_order_id=placed)
    order.status, order.reason = "REJECTED", "edited by hand"
    order.save()  # auto_now: a changed row
    assert book_entry(broker, placed).reason == "edited by hand"


def test_orders_leave_the_book_a_day_after_they_were_placed(settings):
    settings.PAPER_FILL_DELAY_S = 30
    broker = PaperBroker()
    old, new = (broker.place(request(client_order_id=c)).broker_order_id for c in ("a", "b"))
    PaperOrder.objects.filter(broker_order_id=old).update(placed_at=timezone.now() - timedelta(days=2),
                                                          changed_at=timezone.now())
    broker._purged_at = None  # the once-a-minute purge is due
    assert [e.broker_order_id for e in broker.order_book()] == [new]
    assert broker.order_status(old).broker_order_id == old  # its history still knows it


def test_positions_added_up_as_fills_come_equal_a_fresh_count(settings):
    settings.PAPER_FILL_DELAY_S = 30
    following = PaperBroker()
    for i, (side, qty) in enumerate([("BUY", 10), ("BUY", 5), ("SELL", 12)]):
        following.place(request(side=side, qty=qty, client_order_id=f"p{i}"))
        PaperOrder.objects.update(due_at=timezone.now())
        following.advance()
        following.positions()
    (position,) = following.positions()
    (fresh,) = PaperBroker().positions()
    assert position == fresh
    assert (position.net_qty, position.net_avg_price) == (3, Decimal("2950.0000"))
