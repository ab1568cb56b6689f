"""Square-off: at a strategy's time (a frozen clock, the service in process), by an MTM stop, and
on request (the API, the admin's action, the command); cancel first, then one EXIT per open
position through the intake; never twice."""

import io
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.authtoken.models import Token

from brokers.models import PaperInstrument, PaperOrder
from orders import squareoff
from orders.models import EventKind, Notification, Order, SquareOff, SquareOffDay, Status
from orders.tradingday import local_now
from risk.killswitch import set_mode
from risk.models import MarketHoliday
from risk.services import set_limits

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("paper_instruments")]


def at_ist(hour: int, minute: int) -> datetime:
    """Today (the IST trading day) at hour:minute IST."""
    return local_now().replace(hour=hour, minute=minute, second=0, microsecond=0)


def exits(strategy) -> list[Order]:
    return list(Order.objects.filter(strategy=strategy, execution_type="EXIT").order_by("id"))


@pytest.fixture
def held(desk, strategy, settings):
    """A long 10 RELIANCE-EQ (filled), then a LIMIT entry on SBIN-EQ left open at the broker."""
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S = 3600
    pending = desk.entry("BUY", "SBIN-EQ", 5, price="800")
    desk.send()
    strategy.squareoff_time = time(15, 15)
    strategy.save()
    return pending


def test_at_its_time_the_strategy_is_cancelled_then_exited_once(desk, strategy, held, settings):
    assert squareoff.run_due(at_ist(15, 14)) == [] and not exits(strategy)  # not yet
    [exit_order] = squareoff.run_due(at_ist(15, 15))
    assert (exit_order.symbol, exit_order.side, exit_order.qty, exit_order.source, exit_order.status) == (
        "RELIANCE-EQ", "SELL", 10, "system", Status.CREATED)
    created = exit_order.events.get(kind=EventKind.CREATED)
    assert (created.actor, exit_order.alert.alert_id) == (
        "squareoff", f"time-{at_ist(15, 15):%Y%m%d}-NSE-RELIANCE-EQ-MIS")
    held.refresh_from_db()
    assert held.events.filter(kind=EventKind.CANCEL_REQUESTED, actor="squareoff").exists()
    assert squareoff.run_due(at_ist(15, 16)) == []  # triggered again: nothing new
    assert squareoff.square_off_strategy(strategy, "TIME", at_ist(15, 20)) is None
    assert len(exits(strategy)) == 1 and SquareOffDay.objects.filter(strategy=strategy).count() == 1
    settings.PAPER_FILL_DELAY_S = 0
    desk.run_queue()
    desk.watch()  # the exit fills, the cancel reaches the paper broker
    exit_order.refresh_from_db()
    held.refresh_from_db()
    assert (exit_order.status, held.status, held.tag) == (
        Status.EXECUTED, Status.FAILED, "BROKER_CANCELLED:Canceled by user filled 0/5")
    schedule = Schedule.objects.get(name="squareoff:demo")  # the daily backstop
    assert (schedule.func, schedule.cron) == ("orders.tasks.run_squareoffs", "15 15 * * *")


@pytest.fixture
def adds_to_positions(strategy):
    strategy.block_duplicates = False  # a second entry on the instrument while it is held
    strategy.save()


def test_an_instrument_with_a_live_order_waits_for_its_cancel(desk, strategy, settings, adds_to_positions):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S = 3600
    adding = desk.entry("BUY", "RELIANCE-EQ", 5, price="2900")
    desk.send()
    result = squareoff.close(strategy="demo", actor="api:ops")
    assert result.orders == [] and [(w.symbol, w.done_at) for w in result.waiting] == [("RELIANCE-EQ", None)]
    assert squareoff.run_due() == []  # the cancel has not gone out yet
    desk.run_queue()  # the cancel
    desk.watch()  # the broker's CANCELED: nothing live on the instrument; the same pass exits
    [exit_order] = exits(strategy)
    adding.refresh_from_db()
    assert (adding.status, exit_order.qty, exit_order.side) == (Status.FAILED, 10, "SELL")
    assert SquareOff.objects.get().exit_order == exit_order


def test_a_cancel_that_never_comes_through_gives_way_after_the_wait(desk, strategy, settings, adds_to_positions):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    settings.PAPER_FILL_DELAY_S, settings.SQUAREOFF_CANCEL_WAIT_S = 3600, 10
    desk.entry("BUY", "RELIANCE-EQ", 5, price="2900")
    desk.send()
    [request] = squareoff.close(strategy="demo", actor="api:ops").waiting
    SquareOff.objects.filter(pk=request.pk).update(requested_at=timezone.now() - timedelta(seconds=11))
    [exit_order] = squareoff.run_due()
    assert (exit_order.qty, exit_order.status) == (10, Status.CREATED)


def test_the_halted_kill_switch_still_stops_a_square_off_and_says_so(desk, strategy, held, api_close):
    set_mode("HALTED", actor="test")
    reply = api_close()
    assert reply.status_code == 200
    [exit_order] = reply.json()["orders"]
    assert (exit_order["symbol"], exit_order["status"], exit_order["tag"]) == (
        "RELIANCE-EQ", "FAILED", "RISK_BLOCKED:KILL_SWITCH_HALTED")


def test_a_square_off_passes_the_window_and_the_holiday(desk, strategy, held):
    strategy.window_start, strategy.window_end, strategy.exits_outside_window = time(9, 15), time(9, 16), False
    strategy.save()
    MarketHoliday.objects.create(date=local_now().date(), exchange="", description="test")
    [exit_order] = squareoff.run_due(at_ist(15, 15))
    assert (exit_order.status, exit_order.tag) == (Status.CREATED, "")
    assert "GUARD_BLOCKED:MARKET_CLOSED" in desk.entry("BUY", "INFY-EQ", 1).tag  # an alert still is refused


@pytest.fixture
def api_close(client):
    user = User.objects.create_user("ops", password="pw-ops-not-used-0123")
    user.user_permissions.add(Permission.objects.get(codename="place_manual_order"),
                              Permission.objects.get(codename="cancel_order"))
    token = Token.objects.create(user=user).key

    def post(**body):
        return client.post("/api/positions/close/", body, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Token {token}")

    return post


def test_close_all_through_the_api_then_again_with_nothing_open(desk, strategy, held, api_close, client, settings):
    viewer = Token.objects.create(user=User.objects.create_user("viewer", password="pw-viewer-0123")).key
    denied = client.post("/api/positions/close/", {}, content_type="application/json",
                         HTTP_AUTHORIZATION=f"Token {viewer}")
    assert denied.status_code == 403 and "orders.place_manual_order" in denied.json()["detail"]
    reply = api_close(strategy="demo").json()
    assert [(o["symbol"], o["side"], o["qty"], o["status"]) for o in reply["orders"]] == [
        ("RELIANCE-EQ", "SELL", 10, "CREATED")]
    assert [(c["command_id"], c["cancel"]) for c in reply["cancelled"]] == [(held.command_id, "requested")]
    again = api_close(strategy="demo").json()  # the exit is still live: it covers the position
    assert again["orders"] == [] and len(exits(strategy)) == 1
    settings.PAPER_FILL_DELAY_S = 0
    desk.run_queue()
    desk.watch()
    assert api_close().json() == {"orders": [], "cancelled": [], "waiting": []}  # flat: nothing
    assert len(exits(strategy)) == 1


def test_the_command_and_the_admin_action(desk, strategy, held, admin_client, settings):
    out = io.StringIO()
    call_command("squareoff", "--strategy", "demo", "--symbol", "RELIANCE-EQ", stdout=out)
    assert "exit " in out.getvalue() and "RELIANCE-EQ SELL 10 MIS: CREATED" in out.getvalue()
    settings.PAPER_FILL_DELAY_S = 0
    desk.run_queue()
    desk.watch()
    out = io.StringIO()
    call_command("squareoff", stdout=out)
    assert "nothing open: no exit created" in out.getvalue()
    desk.through(desk.entry("BUY", "INFY-EQ", 3))
    position = strategy.positions.get(symbol="INFY-EQ")
    reply = admin_client.post("/admin/orders/position/", {"action": "square_off", "_selected_action": [position.pk]},
                              follow=True)
    assert "Square-off: SELL 3 INFY-EQ CREATED" in reply.content.decode()


def test_an_mtm_stop_squares_off_and_locks_entries_for_the_day(desk, strategy, settings, fake_telegram):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    set_limits(strategy, actor="test", mtm_stop_loss=Decimal(150))
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(ref_price=Decimal("2940"))
    desk.watch()  # -100: not yet
    assert not exits(strategy)
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(ref_price=Decimal("2930"))
    desk.watch()  # the snapshot at 2930: day P&L -200 <= -150
    [exit_order] = exits(strategy)
    assert (exit_order.side, exit_order.qty, exit_order.source) == ("SELL", 10, "system")
    day = SquareOffDay.objects.get(strategy=strategy, trigger="MTM")
    assert day.detail.startswith("day P&L -200.00 <= -150.00 (MTM stop loss")
    blocked = desk.entry("BUY", "SBIN-EQ", 1)
    assert blocked.tag == "RISK_BLOCKED:MTM_EXIT_DONE day P&L -200.00 <= -150.00"
    desk.watch(2)
    assert len(exits(strategy)) == 1  # once a day
    assert Notification.objects.filter(text__contains="SQUARE-OFF demo (MTM)").exists()
    desk.run_queue()
    assert PaperOrder.objects.filter(client_order_id=exit_order.command_id).exists()


def test_an_mtm_target_squares_off_too(desk, strategy):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    set_limits(strategy, actor="test", mtm_target=Decimal(500))
    PaperInstrument.objects.filter(symbol="RELIANCE-EQ").update(ref_price=Decimal("3000"))
    desk.watch()
    [exit_order] = exits(strategy)
    assert SquareOffDay.objects.get(strategy=strategy).detail.startswith("day P&L 500.00 >= 500.00 (MTM target")
    assert exit_order.qty == 10


def test_clearing_the_time_removes_the_backstop(strategy):
    strategy.squareoff_time = time(15, 15, 30)
    strategy.save()
    assert Schedule.objects.get(name="squareoff:demo").cron == "16 15 * * *"  # the minute after
    strategy.squareoff_time = None
    strategy.save()
    assert not Schedule.objects.filter(name="squareoff:demo").exists()


def test_a_square_off_through_the_fake_noren_server(desk, strategy, shoonya_legacy):
    desk.through(desk.entry("BUY", "RELIANCE-EQ", 10))
    result = squareoff.close(strategy="demo", actor="api:ops")
    desk.send()
    [placed] = [c.jdata for c in shoonya_legacy.calls_to("PlaceOrder") if c.jdata["trantype"] == "S"]
    assert (placed["remarks"], placed["qty"]) == (result.orders[0].command_id, "10")


def test_mtm_exits_are_per_strategy():
    with pytest.raises(CommandError, match="MTM exits are per strategy"):
        call_command("set_limits", "--mtm-stop-loss", "100")
