"""The push feed of order updates: the Noren websocket (against the fake Noren server's) and
the paper broker's, listened to by orders.feed as `manage.py orderwatcher` does, with the REST
poll so slow (60 s) that only the feed can explain what happens."""

import json
import logging
import threading
import time
from decimal import Decimal

import pytest

from brokers.fake_noren import Behaviour, FeedMode
from orders import feed, feedstate, leases
from orders.models import EventKind, Fill, Order, OrderEvent, OrderFeedState, Position
from orders.watcher import OrderWatcher, pass_period
from tests.factories import trail

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate, timeout=8.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(autouse=True)
def _slow_poll_fast_feed(settings):
    settings.WATCHER_INTERVAL_S = 60
    settings.WATCHER_RECONCILE_S = 60
    settings.SHOONYA_WS_HEARTBEAT_S = 0.2
    settings.SHOONYA_WS_LOGIN_TIMEOUT_S = 0.5
    settings.ORDER_FEED_STALE_S = 1.5
    settings.PAPER_FEED_TICK_S = 0.02


@pytest.fixture
def listening():
    """orders.feed.listen in a thread of its own, as in manage.py orderwatcher."""
    stop = threading.Event()
    threads = []

    def start():
        owner = leases.new_owner("test")
        thread = threading.Thread(target=feed.listen, args=(owner, stop), daemon=True)
        thread.start()
        threads.append(thread)
        return owner

    yield start
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def send(post_alert, alert_body, run_queue, symbol="RELIANCE-EQ", qty=10, side="BUY") -> Order:
    legs = [{"symbol": symbol, "side": side, "qty": qty, "order_type": "MARKET", "product": "MIS"}]
    response = post_alert(alert_body(legs=legs))
    assert response.status_code == 201, response.content
    run_queue()
    return Order.objects.get(command_id=response.json()["orders"][0]["command_id"])


def status_of(order: Order, status: str):
    return lambda: Order.objects.filter(pk=order.pk, status=status).first()


def subscribed(fake, n=1):
    return wait_for(lambda: fake.feed.subscribers() >= n, what="a subscribed feed")


def conflicts():
    return list(OrderEvent.objects.filter(kind=EventKind.CONFLICT).values_list("detail", flat=True))


# --- the Noren websocket ------------------------------------------------------------------

def test_a_pushed_fill_executes_the_order_without_a_poll(shoonya_legacy, strategy, alert_body, post_alert, run_queue,
                                                         listening):
    shoonya_legacy.fill_delay_s = 0.3
    listening()
    subscribed(shoonya_legacy)
    # Logged in the legacy way (the adapter's own QuickAuth session), then subscribed.
    assert shoonya_legacy.feed.logins == [
        {"t": "c", "uid": "FT4242", "actid": "FT4242", "source": "API", "token": "LEGACY"}]
    order = send(post_alert, alert_body, run_queue)
    executed = wait_for(status_of(order, "EXECUTED"), what="EXECUTED")
    assert (executed.filled_qty, executed.avg_price, executed.tag) == (10, Decimal("2950.00"), "")
    assert trail(executed)[-1] == ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "", "watcher")
    fake_order = shoonya_legacy.order_for(order.command_id)
    fill_id = next(m["flid"] for m in shoonya_legacy.feed.announced if m.get("reporttype") == "Fill")
    assert list(Fill.objects.values_list("qty", "cum_qty", "broker_fill_id")) == [
        (10, 10, f"{fake_order.norenordno}:{fill_id}")]
    assert shoonya_legacy.calls_to("OrderBook")  # the catch-up read after connecting, only that
    assert len(shoonya_legacy.calls_to("OrderBook")) == 1
    assert conflicts() == []


def test_oauth_login_and_the_other_spelling_of_the_order_number(shoonya_oauth, strategy, alert_body, post_alert,
                                                                run_queue, listening):
    shoonya_oauth.feed.spelling = "norenoordno"
    listening()
    subscribed(shoonya_oauth)
    assert [(login["t"], login["token"]) for login in shoonya_oauth.feed.logins] == [("a", "OAUTH")]
    order = send(post_alert, alert_body, run_queue)
    wait_for(status_of(order, "EXECUTED"), what="EXECUTED")
    assert "norenordno" not in shoonya_oauth.feed.announced[-1]


def test_partial_fills_then_complete(shoonya_legacy, strategy, alert_body, post_alert, run_queue, listening):
    listening()
    subscribed(shoonya_legacy)
    shoonya_legacy.set_behaviour(Behaviour.PARTIAL, symbol="SBIN-EQ", fill_qty=4)
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    wait_for(lambda: Order.objects.filter(pk=order.pk, filled_qty=4).first(), what="the partial fill")
    assert Order.objects.get(pk=order.pk).status == "SENT_TO_BROKER"
    shoonya_legacy.complete(order.command_id)
    executed = wait_for(status_of(order, "EXECUTED"), what="EXECUTED")
    assert executed.filled_qty == 10
    assert list(Fill.objects.order_by("cum_qty").values_list("qty", "cum_qty")) == [(4, 4), (6, 10)]
    assert Fill.objects.filter(broker_fill_id__isnull=True).count() == 0
    assert Position.objects.get(symbol="SBIN-EQ").net_qty == 10
    assert [e[0] for e in trail(executed)][-2:] == ["FILL", "EXECUTED"]


def test_a_rejection_on_the_feed_carries_the_rejreason(shoonya_legacy, strategy, alert_body, post_alert, run_queue,
                                                       listening):
    listening()
    subscribed(shoonya_legacy)
    shoonya_legacy.set_behaviour(Behaviour.REJECT_LATER, symbol="SBIN-EQ", reason="RED:Margin Shortfall")
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")
    failed = wait_for(status_of(order, "FAILED"), what="FAILED")
    assert failed.tag == "BROKER_REJECTED:RED:Margin Shortfall"


def test_an_in_doubt_order_is_adopted_from_its_acknowledgement(shoonya_legacy, strategy, alert_body, post_alert,
                                                               run_queue, listening, settings):
    settings.BROKER_READ_TIMEOUT_S = 0.5
    listening()
    subscribed(shoonya_legacy)
    shoonya_legacy.set_behaviour(Behaviour.TIMEOUT, symbol="SBIN-EQ", sleep_s=1.5)
    shoonya_legacy.fill_delay_s = 3
    order = send(post_alert, alert_body, run_queue, symbol="SBIN-EQ")  # the reply timed out
    adopted = wait_for(lambda: Order.objects.filter(pk=order.pk, broker_order_id__isnull=False).first(),
                       what="adoption")
    assert adopted.broker_order_id == shoonya_legacy.order_for(order.command_id).norenordno
    assert adopted.tag == "" and adopted.status == "SENT_TO_BROKER"
    assert EventKind.BROKER_ID_ADOPTED in [e[0] for e in trail(adopted)]
    assert len(shoonya_legacy.calls_to("PlaceOrder")) == 1
    wait_for(status_of(order, "EXECUTED"), what="EXECUTED")


def test_nothing_is_lost_while_the_feed_is_down(shoonya_legacy, strategy, alert_body, post_alert, run_queue,
                                                listening):
    listening()
    subscribed(shoonya_legacy)
    shoonya_legacy.fill_delay_s = 0.3
    shoonya_legacy.feed.mode = FeedMode.REFUSE_SILENTLY  # reconnects get no answer for now
    shoonya_legacy.feed.drop()
    wait_for(lambda: shoonya_legacy.feed.subscribers() == 0, what="the drop")
    order = send(post_alert, alert_body, run_queue)
    wait_for(lambda: shoonya_legacy.order_for(order.command_id).status == "COMPLETE", what="the fill at the broker")
    time.sleep(0.5)
    assert Order.objects.get(pk=order.pk).status == "SENT_TO_BROKER"  # nobody told us
    state = OrderFeedState.objects.get()
    assert state.connected_since is None and state.last_error

    shoonya_legacy.feed.mode = FeedMode.NORMAL
    executed = wait_for(status_of(order, "EXECUTED"), timeout=15, what="EXECUTED after the reconnect")
    assert executed.filled_qty == 10
    assert len(shoonya_legacy.feed.logins) >= 2
    assert feedstate.state()["reconnects_today"] >= 1
    assert conflicts() == []


def test_a_silently_refused_login_is_closed_and_tried_again(shoonya_legacy, listening):
    shoonya_legacy.feed.mode = FeedMode.REFUSE_SILENTLY
    listening()
    wait_for(lambda: len(shoonya_legacy.feed.logins) >= 2, timeout=10, what="a second login")
    assert "no login acknowledgement (ck) within 0.5s" in OrderFeedState.objects.get().last_error
    assert shoonya_legacy.feed.subscribers() == 0
    shoonya_legacy.feed.mode = FeedMode.NORMAL
    subscribed(shoonya_legacy)
    wait_for(lambda: feedstate.state()["connected"], what="connected")


def test_a_stalled_feed_is_noticed_and_reconnected(shoonya_legacy, listening):
    listening()
    subscribed(shoonya_legacy)
    wait_for(feedstate.healthy, what="a healthy feed")
    shoonya_legacy.feed.mode = FeedMode.STALL  # no updates, no heartbeat replies, socket open
    wait_for(lambda: "no frame and no heartbeat reply" in OrderFeedState.objects.get().last_error, timeout=10,
             what="the stall noticed")
    shoonya_legacy.feed.mode = FeedMode.NORMAL
    wait_for(lambda: len(shoonya_legacy.feed.logins) >= 2 and feedstate.healthy(), timeout=10, what="reconnected")


def test_malformed_frames_are_ignored_and_logged(shoonya_legacy, strategy, alert_body, post_alert, run_queue,
                                                 listening, caplog):
    caplog.set_level(logging.WARNING, logger="orderdesk.brokers.shoonya.feed")
    listening()
    subscribed(shoonya_legacy)
    shoonya_legacy.feed.send_malformed()
    wait_for(lambda: len([r for r in caplog.records if "ignored" in r.getMessage()]) >= 5, what="five warnings")
    order = send(post_alert, alert_body, run_queue)  # the feed goes on
    wait_for(status_of(order, "EXECUTED"), what="EXECUTED")
    assert len(shoonya_legacy.feed.logins) == 1


def test_push_and_poll_reporting_the_same_fill_count_once(shoonya_legacy, strategy, alert_body, post_alert, run_queue,
                                                          listening):
    listening()
    subscribed(shoonya_legacy)
    order = send(post_alert, alert_body, run_queue)
    wait_for(status_of(order, "EXECUTED"), what="EXECUTED")
    events = OrderEvent.objects.filter(order=order).count()
    assert OrderWatcher().poll_once() is True  # the poll reads the same fill
    assert OrderEvent.objects.filter(order=order).count() == events
    assert Fill.objects.count() == 1 and Position.objects.get().net_qty == 10
    assert conflicts() == []


def test_the_feed_state_is_in_health_and_slows_the_poll(shoonya_legacy, listening, client, django_user_model,
                                                        settings):
    settings.WATCHER_INTERVAL_S, settings.WATCHER_RECONCILE_S = 1, 5
    assert pass_period() == 1  # no feed
    owner = listening()
    subscribed(shoonya_legacy)
    wait_for(feedstate.healthy, what="a healthy feed")
    assert pass_period() == 5
    user = django_user_model.objects.create_user("ops", password="pw-ops-123456")
    client.force_login(user)
    body = client.get("/api/health/").json()
    assert body["feed"]["connected"] and body["feed"]["healthy"]
    assert body["feed"]["holder"] == owner and body["feed"]["broker"] == "shoonya"
    assert "token" not in json.dumps(body["feed"]).lower()
    shoonya_legacy.feed.mode = FeedMode.STALL
    wait_for(lambda: pass_period() == 1, timeout=10, what="polling again")


# --- the paper broker ---------------------------------------------------------------------

def test_the_paper_feed_executes_at_the_fill_delay(paper_instruments, strategy, alert_body, post_alert, run_queue,
                                                   listening, settings):
    settings.PAPER_FILL_DELAY_S = 0.3
    listening()
    wait_for(lambda: feedstate.state()["connected"], what="the paper feed")
    order = send(post_alert, alert_body, run_queue)
    sent_at = Order.objects.get(pk=order.pk).sent_at
    executed = wait_for(status_of(order, "EXECUTED"), what="EXECUTED")
    assert trail(executed)[-1] == ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "", "watcher")
    took = (executed.updated_at - sent_at).total_seconds()
    assert 0.3 <= took < 1.5, took
    assert Fill.objects.get().qty == 10


def test_only_one_process_listens(shoonya_legacy, listening):
    first = listening()
    subscribed(shoonya_legacy)
    assert feed.listen(leases.new_owner("other"), threading.Event()) is False  # the lease is held
    assert leases.live_holder(feedstate.FEED_NAME) == first
    assert shoonya_legacy.feed.subscribers() == 1


def test_no_feed_when_turned_off(settings, shoonya_legacy):
    settings.ORDER_FEED = False
    assert feed.listen(leases.new_owner("test"), threading.Event()) is None
    assert feed.start_listener(leases.new_owner("test")) is None


# --- as `up` runs it ------------------------------------------------------------------------

@pytest.mark.slow
def test_up_executes_on_the_paper_feed_long_before_the_next_poll(stack, strategy, alert_body, paper_instruments):
    import urllib.request

    desk = stack(WATCHER_INTERVAL_S="60", WATCHER_RECONCILE_S="60", PAPER_FILL_DELAY_S="0.3")
    wait_for(lambda: feedstate.state()["connected"], timeout=30, what="the orderwatcher's feed")
    request = urllib.request.Request(f"{desk.url}/api/webhook/", data=json.dumps(alert_body()).encode(),
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        command_id = json.loads(response.read())["orders"][0]["command_id"]
    order = Order.objects.get(command_id=command_id)
    executed = wait_for(status_of(order, "EXECUTED"), timeout=10, what="EXECUTED")
    took = (executed.updated_at - executed.created_at).total_seconds()
    assert took < 5, took  # the next poll is a minute away
    assert trail(executed)[-1][-1] == "watcher"
    assert "listening to the broker's order feed" in desk.output()
