"""The broker's request rate: at most BROKER_MAX_ORDERS_PER_S placements and cancels in any
sliding second, across every worker (Redis, or the database), cancels and exits first."""

import secrets
import time

import pytest

from orders import broker_rate
from orders.models import Order, Status

pytestmark = pytest.mark.django_db


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)), default=0)


@pytest.fixture(params=["database", "redis"])
def store(request, settings):
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                       "LOCATION": redis_url}}
        from orders import throttles

        throttles._redis.cache_clear()
        client = throttles.redis_client()
        client.delete(broker_rate.KEY, broker_rate.URGENT_KEY)
        yield request.param
        client.delete(broker_rate.KEY, broker_rate.URGENT_KEY)
        throttles._redis.cache_clear()
    else:
        yield request.param


def test_no_window_of_one_second_holds_more_than_the_limit(settings, store):
    settings.BROKER_MAX_ORDERS_PER_S = 3
    taken = []
    for i in range(7):
        broker_rate.take_slot(urgent=False, what=f"t{i}")
        taken.append(time.monotonic())
    assert most_in_one_second(taken) == 3
    assert taken[3] - taken[0] >= 0.95  # the fourth waited for the first to leave the window
    assert taken[2] - taken[0] < 0.5  # a burst up to the limit goes at once


def test_a_waiting_cancel_or_exit_goes_before_entries(settings, store):
    settings.BROKER_MAX_ORDERS_PER_S = 2
    for i in range(2):
        broker_rate.take_slot(urgent=False, what=f"fill{i}")
    assert broker_rate._take(2, True, "cancel") > 0  # full: the cancel waits, and says so
    assert broker_rate._take(2, False, "entry") > 0  # an entry may not overtake it even once there is room
    time.sleep(broker_rate.WINDOW_MS / 1000 + 0.05)
    assert broker_rate._take(2, False, "entry") > 0  # room now, but the cancel is still marked as waiting
    assert broker_rate._take(2, True, "cancel") == 0
    assert broker_rate._take(2, False, "entry") == 0  # the cancel went: entries again


def test_no_limit_for_the_paper_broker_by_default_and_eight_for_shoonya(settings):
    settings.BROKER_MAX_ORDERS_PER_S = None
    settings.ORDERDESK_BROKER = "paper"
    assert broker_rate.limit() == 0
    settings.ORDERDESK_BROKER = "shoonya"
    assert broker_rate.limit() == 8
    settings.BROKER_MAX_ORDERS_PER_S = 0
    assert broker_rate.limit() == 0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_hundred_orders_through_two_workers_stay_under_the_limit(cluster, fake_noren, strategy, alert_body,
                                                                   post_alert, settings):
    strategy.leg_policy = "PER_LEG"
    strategy.save()
    symbols = [f"S{i:03d}-EQ" for i in range(100)]
    for symbol in symbols:
        fake_noren.set_last_price(symbol, "100")
    worker = cluster()
    worker.env.update(ORDERDESK_BROKER="shoonya", BROKER_MAX_ORDERS_PER_S="8", ORDERDESK_Q_WORKERS="2",
                      ORDER_MAX_AGE_S="120", **fake_noren.settings())
    legs = [{"symbol": s, "side": "BUY", "qty": 1, "order_type": "MARKET", "product": "MIS"} for s in symbols]
    run = secrets.token_hex(4)
    for first in range(0, 100, 20):  # an alert holds at most 20 legs
        response = post_alert(alert_body(alert_id=f"rate-{run}-{first}", legs=legs[first:first + 20]))
        assert response.status_code == 201, response.content
    worker.start()
    deadline = time.monotonic() + 60
    while Order.objects.filter(status=Status.CREATED).exists():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.2)
    placed = fake_noren.calls_to("PlaceOrder")
    remarks = [call.jdata["remarks"] for call in placed]
    assert len(remarks) == 100 and len(set(remarks)) == 100  # none lost, none twice
    assert most_in_one_second([call.at for call in placed]) <= 8, worker.output()
    span = max(c.at for c in placed) - min(c.at for c in placed)
    assert span >= 100 / 8 - 1.5, span  # it really was held back
    print(f"100 placements in {span:.1f}s, at most {most_in_one_second([c.at for c in placed])} in a second")
    assert not Order.objects.exclude(status=Status.SENT_TO_BROKER).exclude(status=Status.EXECUTED).exists()
