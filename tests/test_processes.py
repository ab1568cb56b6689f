"""A real `manage.py qcluster` process, and nothing else, takes a webhook order to EXECUTED:
with django-q2's ORM broker (the queue is a table in the file-backed test database) and once
with the Redis broker."""

import secrets

import pytest
from django_q.conf import Conf

from brokers.models import PaperOrder
from orders.models import Order, Status
from tests.processes import audit_trail, flush_redis_keys, wait_for_executed

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def run_to_executed(cluster_builder, alert_body, post_alert, redis_url=None, queued_check=None):
    cluster = cluster_builder(redis_url)
    response = post_alert(alert_body(alert_id=f"proc-{secrets.token_hex(4)}"))
    assert response.status_code == 201, response.content
    [reply] = response.json()["orders"]
    assert reply["status"] == "CREATED"
    if queued_check:
        queued_check(reply["command_id"])

    cluster.start()
    order, took = wait_for_executed(reply["command_id"], cluster)
    print(f"EXECUTED {took:.2f}s after the cluster was started")

    assert order.status == Status.EXECUTED, (order.tag, audit_trail(order))
    paper = PaperOrder.objects.get(client_order_id=order.command_id)
    assert order.broker_order_id == paper.broker_order_id
    assert order.filled_qty == 10 and order.avg_price == paper.fill_price
    assert audit_trail(order) == [
        ("CREATED", "", "CREATED", "webhook"),
        ("CLAIMED", "CREATED", "SENT_TO_BROKER", "worker"),
        ("BROKER_ACCEPTED", "SENT_TO_BROKER", "SENT_TO_BROKER", "worker"),
        ("EXECUTED", "SENT_TO_BROKER", "EXECUTED", "watcher"),
    ]
    assert PaperOrder.objects.count() == 1  # one broker call
    return cluster


def test_qcluster_process_takes_an_order_to_executed_orm_broker(
    cluster, paper_instruments, strategy, alert_body, post_alert, q_name
):
    from django_q.models import OrmQ

    def queued_in_the_database(command_id):
        # Committed with the order, under the subprocess's queue name, signed with its salt.
        [task] = [q.task for q in OrmQ.objects.filter(key=q_name)]
        assert (task["func"], task["args"]) == ("orders.tasks.submit_order", (command_id,))

    run_to_executed(cluster, alert_body, post_alert, queued_check=queued_in_the_database)


@pytest.mark.redis
def test_qcluster_process_takes_an_order_to_executed_redis_broker(
    cluster, paper_instruments, strategy, alert_body, post_alert, redis_url, q_name
):
    import redis

    client = redis.Redis.from_url(redis_url)
    run_to_executed(cluster, alert_body, post_alert, redis_url=redis_url,
                    queued_check=lambda command_id: queued_in_redis(client, q_name, command_id))


def queued_in_redis(client, q_name, command_id):
    from django_q.signing import SignedPackage

    [payload] = client.lrange(f"django_q:{q_name}:q", 0, -1)
    task = SignedPackage.loads(payload.decode() if isinstance(payload, bytes) else payload)
    assert (task["func"], task["args"]) == ("orders.tasks.submit_order", (command_id,))


@pytest.mark.redis
def test_redis_push_failing_after_commit_keeps_the_201_and_the_watcher_requeues(
    strategy, alert_body, post_alert, redis_url, q_name, monkeypatch, settings, caplog
):
    """The orders are committed before the push to Redis: a push that fails then must not turn
    the reply into a 500 (a sender's retry without alert_id would register the orders twice).
    The order stays CREATED and the watcher re-enqueues it once Redis is back."""
    import redis

    from orders.watcher import OrderWatcher

    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)  # the database queue's, which wins over Redis
    monkeypatch.setattr(Conf, "PREFIX", q_name)
    monkeypatch.setattr(Conf, "CLUSTER_NAME", q_name)
    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:1/15")  # nothing listens there

    response = post_alert(alert_body())
    assert response.status_code == 201, response.content
    [reply] = response.json()["orders"]
    assert Order.objects.get(command_id=reply["command_id"]).status == Status.CREATED
    assert f"could not enqueue submission of order {reply['command_id']}" in caplog.text

    monkeypatch.setattr(Conf, "REDIS", redis_url)
    client = redis.Redis.from_url(redis_url)
    settings.REQUEUE_CREATED_AFTER_S = 0
    try:
        OrderWatcher().poll_once()
        queued_in_redis(client, q_name, reply["command_id"])
    finally:
        flush_redis_keys(redis_url, q_name)
