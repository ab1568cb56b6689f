"""A real `manage.py qcluster` process, and nothing else, takes a webhook order to EXECUTED:
with django-q2's ORM broker (the queue is a table in the file-backed test database) and once
with the Redis broker."""

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.db import connection
from django_q.conf import Conf

from brokers.models import DEFAULT_INSTRUMENTS, PaperInstrument, PaperOrder
from orders.models import Order, Status

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parent.parent
EXECUTED_TIMEOUT_S = 30


def database_url() -> str:
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        name = settings_dict["NAME"]
        if not name or name == ":memory:" or str(name).startswith("file:"):
            pytest.fail("the process tests need a file-backed SQLite test database")
        return f"sqlite:///{Path(name).resolve()}"
    if connection.vendor == "postgresql":
        auth = settings_dict["USER"] + (f":{settings_dict['PASSWORD']}" if settings_dict["PASSWORD"] else "")
        return (f"postgres://{auth}@{settings_dict['HOST'] or '127.0.0.1'}:{settings_dict['PORT'] or 5432}"
                f"/{settings_dict['NAME']}")
    pytest.fail(f"no DATABASE_URL for {connection.vendor}")


class Cluster:
    """A `manage.py qcluster` subprocess with its own queue name; output goes to a file."""

    def __init__(self, name: str, env: dict):
        self.name = name
        self.env = env
        self.proc = None
        self.log = tempfile.TemporaryFile(mode="w+")

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=BASE_DIR, env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # qcluster's graceful stop
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        finally:
            # The cluster's own process group: also reaps workers a killed parent would orphan.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=5)


@pytest.fixture
def q_name():
    return f"orderdesk-test-{os.getpid()}-{secrets.token_hex(4)}"


@pytest.fixture
def paper_instruments(transactional_db):
    # Flushed after every transactional test: put the migration's instruments back.
    for exchange, symbol, price in DEFAULT_INSTRUMENTS:
        PaperInstrument.objects.get_or_create(exchange=exchange, symbol=symbol, defaults={"ref_price": price})


@pytest.fixture
def cluster(transactional_db, q_name, monkeypatch):
    """Builds (not starts) a qcluster subprocess on the test database and makes this process
    enqueue into its queue. Stopped before the test database is flushed; prints its output
    when the test failed."""
    clusters = []

    def build(redis_url: str | None = None) -> Cluster:
        # django-q2 signs tasks with the cluster `name` (Conf.PREFIX) and queues them under
        # Conf.CLUSTER_NAME: the subprocess gets ORDERDESK_Q_NAME, this process the same values.
        monkeypatch.setattr(Conf, "PREFIX", q_name)
        monkeypatch.setattr(Conf, "CLUSTER_NAME", q_name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERDESK_", "Q_CLUSTER"))}
        env.pop("REDIS_URL", None)
        env.update(
            DATABASE_URL=database_url(),
            ORDERDESK_Q_NAME=q_name,
            ORDERDESK_Q_WORKERS="2",
            PAPER_FILL_DELAY_S="0.2",
            WATCHER_INTERVAL_S="0.2",
            WATCHER_SLICE_S="3",
            PYTHONUNBUFFERED="1",
        )
        if redis_url:
            monkeypatch.setattr(Conf, "ORM", None)
            monkeypatch.setattr(Conf, "REDIS", redis_url)
            env["REDIS_URL"] = redis_url
        clusters.append(Cluster(q_name, env))
        return clusters[-1]

    yield build
    for c in clusters:
        c.stop()
        if c.env.get("REDIS_URL"):  # only now: a running cluster keeps writing its keys
            flush_redis_keys(c.env["REDIS_URL"], c.name)
        # Captured: pytest shows it only when the test failed.
        print(f"--- qcluster {c.name} output ---\n{c.output()}")
        c.log.close()


def flush_redis_keys(redis_url: str, q_name: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"django_q:{q_name}:*"))
    if keys:
        client.delete(*keys)


def trail(order):
    return [(e.kind, e.from_status, e.to_status, e.actor) for e in order.events.order_by("id")]


def wait_for_executed(command_id: str, cluster: Cluster) -> tuple[Order, float]:
    started = time.monotonic()
    deadline = started + EXECUTED_TIMEOUT_S
    while time.monotonic() < deadline:
        order = Order.objects.get(command_id=command_id)
        if order.status in (Status.EXECUTED, Status.FAILED):
            return order, time.monotonic() - started
        assert cluster.proc.poll() is None, f"qcluster exited with {cluster.proc.returncode}"
        time.sleep(0.1)
    pytest.fail(f"order {command_id} is {order.status} after {EXECUTED_TIMEOUT_S}s: {trail(order)}")


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

    assert order.status == Status.EXECUTED, (order.tag, trail(order))
    paper = PaperOrder.objects.get(client_order_id=order.command_id)
    assert order.broker_order_id == paper.broker_order_id
    assert order.filled_qty == 10 and order.avg_price == paper.fill_price
    assert trail(order) == [
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
