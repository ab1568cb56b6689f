"""Target positions: a leg's target_qty becomes the order that moves the strategy's position
(live orders counted) toward it: from flat, long, short, at the target, and a flip (the exit
now, the entry once it is executed), against the paper broker and the fake Noren server."""

import pytest
from django.utils import timezone

from brokers.models import PaperOrder
from orders import targets
from orders.models import EventKind, FollowUpStatus, Order, Status, TargetFollowUp

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]


def target(desk, qty, symbol="RELIANCE-EQ", **fields):
    """POST a target leg (no execution_type); the reply's JSON."""
    leg = {"symbol": symbol, "target_qty": qty, "product": "MIS", **fields}
    body = desk.alert_body(legs=[leg])
    del body["execution_type"]
    response = desk.post_alert(body)
    assert response.status_code == 201, response.content
    return response.json()


def orders_of(reply) -> list[Order]:
    return [Order.objects.get(command_id=o["command_id"]) for o in reply["orders"]]


def test_from_flat_a_target_is_an_entry_and_its_audit_row_says_why(desk):
    [order] = orders_of(target(desk, 10))
    assert (order.execution_type, order.side, order.qty, order.status) == ("ENTRY", "BUY", 10, Status.CREATED)
    assert order.events.get(kind=EventKind.CREATED).detail == "target +10: position +0, live orders +0: ENTRY BUY 10"
    [short] = orders_of(target(desk, -5, symbol="SBIN-EQ"))
    assert (short.execution_type, short.side, short.qty) == ("ENTRY", "SELL", 5)


def test_from_long_more_is_an_entry_less_is_an_exit_and_live_orders_count(desk, settings):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    [more] = orders_of(target(desk, 15))  # no DUPLICATE_POSITION: the computation counted the position
    assert (more.execution_type, more.side, more.qty, more.tag) == ("ENTRY", "BUY", 5, "")
    settings.PAPER_FILL_DELAY_S = 3600
    desk.send()  # the BUY 5 is live at the broker: the position is still +10
    [less] = orders_of(target(desk, 12))
    assert (less.execution_type, less.side, less.qty) == ("EXIT", "SELL", 3)
    assert less.events.get(kind=EventKind.CREATED).detail == (
        "target +12: position +10, live orders +5: EXIT SELL 3")


def test_from_short_to_flat_is_an_exit(desk):
    desk.through(desk.entry("SELL", "RELIANCE-EQ", 10))
    [order] = orders_of(target(desk, 0))
    assert (order.execution_type, order.side, order.qty) == ("EXIT", "BUY", 10)


def test_at_the_target_no_order_and_a_note(desk):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    reply = target(desk, 10)
    assert reply["orders"] == []
    assert reply["note"] == "leg 1: target +10: position +10, live orders +0: at the target, no order"
    assert Order.objects.count() == 1  # the alert is recorded, no order


def test_a_flip_exits_now_and_enters_once_the_exit_is_executed(desk, strategy):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    [exit_order] = orders_of(target(desk, -5))
    assert (exit_order.execution_type, exit_order.side, exit_order.qty) == ("EXIT", "SELL", 10)
    [follow_up] = TargetFollowUp.objects.all()
    assert (follow_up.side, follow_up.qty, follow_up.status, follow_up.after) == ("SELL", 5, "WAITING", exit_order)
    assert targets.run_due() == []  # the exit is not executed yet
    desk.through(exit_order)  # executed; the watcher's pass registers the entry
    follow_up.refresh_from_db()
    entry = follow_up.entry
    assert (follow_up.status, entry.execution_type, entry.side, entry.qty, entry.status) == (
        FollowUpStatus.REGISTERED, "ENTRY", "SELL", 5, Status.CREATED)
    assert entry.alert.alert_id == f"target-follow-up-{follow_up.pk}"
    desk.through(entry)
    assert strategy.positions.get(symbol="RELIANCE-EQ").net_qty == -5
    assert targets.run_due() == []  # once


def test_a_cancelled_follow_up_never_enters(desk, admin_client, settings):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S = 3600
    [exit_order] = orders_of(target(desk, -5))
    reply = admin_client.post("/admin/orders/targetfollowup/", {
        "action": "cancel_follow_ups", "_selected_action": [TargetFollowUp.objects.get().pk]}, follow=True)
    assert "1 follow-up entries cancelled" in reply.content.decode()
    settings.PAPER_FILL_DELAY_S = 0
    desk.through(exit_order)
    assert TargetFollowUp.objects.get().status == FollowUpStatus.CANCELLED
    assert not Order.objects.filter(execution_type="ENTRY", side="SELL").exists()
    [entry] = orders_of(target(desk, 5))  # flat now: an entry
    assert entry.execution_type == "ENTRY"


def test_a_flip_whose_exit_fails_is_void(desk, admin_client):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    [exit_order] = orders_of(target(desk, -5))
    admin_client.post("/admin/orders/order/", {"action": "cancel_orders", "_selected_action": [exit_order.pk]})
    exit_order.refresh_from_db()
    assert exit_order.status == Status.FAILED  # cancelled before it was sent
    assert targets.run_due() == []
    follow_up = TargetFollowUp.objects.get()
    assert (follow_up.status, follow_up.entry) == (FollowUpStatus.VOID, None)


def test_target_legs_need_no_side_and_refuse_one(desk):
    body = desk.alert_body(legs=[{"symbol": "RELIANCE-EQ", "target_qty": 5, "side": "BUY", "product": "MIS"}])
    reply = desk.post_alert(body)
    assert reply.status_code == 400
    assert reply.json()["errors"]["legs"][0]["target_qty"][0].startswith("give target_qty instead of side")
    mixed = desk.alert_body(legs=[{"symbol": "RELIANCE-EQ", "target_qty": 5, "product": "MIS"},
                                  {"symbol": "SBIN-EQ", "side": "BUY", "qty": 1, "product": "MIS"}])
    del mixed["execution_type"]
    assert desk.post_alert(mixed).json()["errors"] == {"execution_type": ["This field is required."]}


def test_a_target_through_the_fake_noren_server(desk, shoonya_legacy):
    [order] = orders_of(target(desk, 7))
    desk.send()
    [placed] = [c.jdata for c in shoonya_legacy.calls_to("PlaceOrder")]
    assert (placed["remarks"], placed["qty"], placed["trantype"]) == (order.command_id, "7", "B")


def test_a_later_target_replaces_the_entry_a_flip_left_waiting(desk, strategy, settings):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S = 3600
    [exit_order] = orders_of(target(desk, -5))
    desk.send()  # the exit SELL 10 is live at the broker, the ENTRY SELL 5 waits for it
    reply = target(desk, 0)
    assert reply["orders"] == [] and "(a waiting follow-up entry cancelled)" in reply["note"]
    assert TargetFollowUp.objects.get().status == FollowUpStatus.CANCELLED
    settings.PAPER_FILL_DELAY_S = 0
    PaperOrder.objects.filter(client_order_id=exit_order.command_id).update(due_at=timezone.now())
    desk.watch()
    assert strategy.positions.get(symbol="RELIANCE-EQ").net_qty == 0  # flat, as the last target said
    assert not Order.objects.filter(execution_type="ENTRY", side="SELL").exists()


def test_an_exit_closes_only_what_is_held(desk, strategy, settings):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 5))
    settings.PAPER_FILL_DELAY_S = 3600
    strategy.block_duplicates = False
    strategy.save()
    desk.entry("BUY", "RELIANCE-EQ", 10, price="2900")
    desk.send()  # a live BUY 10 beside the position of 5
    [order] = orders_of(target(desk, 0))
    assert (order.execution_type, order.side, order.qty) == ("EXIT", "SELL", 5)
    assert order.events.get(kind=EventKind.CREATED).detail == (
        "target +0: position +5, live orders +10: EXIT SELL 5; live entries of 10 stay: cancel them to go further")
