"""Faults of the services around the workers (issue 17), with real processes: the
`orderwatcher` killed while it holds its leases, the database restarted during a burst, a
gunicorn worker killed mid-request. Nothing is lost, nothing is sent twice, every process
recovers without a restart of its own."""

import http.client
import json
import os
import random
import signal
import threading
import time

import psycopg
import pytest

from brokers.models import PaperOrder
from orders.feedstate import FEED_NAME
from orders.models import Alert, Order, Status, WatcherLease
from orders.telegram_commands import UPDATES_LEASE
from orders.watcher import LEASE_NAME
from tests.factories import TEST_SECRET
from tests.fake_telegram import CHAT_ID, TOKEN
from tests.processes import audit_trail, command_line, descendants, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def holder_pid(lease_name: str) -> int | None:
    """The pid in the lease's owner (`kind:host:pid:token`) while it is unexpired."""
    from django.utils import timezone

    lease = WatcherLease.objects.filter(name=lease_name, expires_at__gt=timezone.now()).first()
    return int(lease.owner.split(":")[2]) if lease and lease.owner else None


def alert(i: int, symbol: str = "RELIANCE-EQ", secret: str = TEST_SECRET) -> bytes:
    return json.dumps({"strategy": "demo", "secret": secret, "alert_id": f"fault-{i}", "execution_type": "ENTRY",
                       "exchange": "NSE", "legs": [{"symbol": symbol, "side": "BUY", "qty": 1,
                                                    "order_type": "MARKET", "product": "MIS"}]}).encode()


def deliver(port: int, body: bytes) -> tuple[int, dict | str]:
    """(status, JSON reply), or (0, what the client met) when no HTTP answer came."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/webhook/", body=body, headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")[:200]


def deliver_until_answered(port: int, bodies: dict[int, bytes], clients: int, timeout_s: float = 120):
    """Each body from one of `clients` threads, delivered again (same alert_id) after a 503 or
    no answer, as a sender that retries does. {i: [every status seen]}, {i: last reply}."""
    seen = {i: [] for i in bodies}
    replies = {}
    todo = list(bodies)
    lock = threading.Lock()
    deadline = time.monotonic() + timeout_s

    def client():
        while time.monotonic() < deadline:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            status, reply = deliver(port, bodies[i])
            seen[i].append(status)
            if status in (0, 503):
                time.sleep(0.3)
                with lock:
                    todo.append(i)
            else:
                replies[i] = reply

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s + 10)
    return seen, replies


def test_an_orderwatcher_killed_holding_its_leases_is_replaced_and_fills_keep_coming(
        cluster, strategy, alert_body, post_alert, paper_instruments, fake_telegram):
    telegram = dict(TELEGRAM_API_BASE=fake_telegram.url, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_CHAT_ID=CHAT_ID,
                    TELEGRAM_COMMANDS="1", TELEGRAM_ALLOWED_USER_IDS="42", WATCHER_LEASE_TTL_S="5")
    workers = cluster(**telegram)
    first = cluster(command="orderwatcher", **telegram)
    second = cluster(command="orderwatcher", **telegram)
    workers.start()
    first.start()
    wait_until(lambda: all(holder_pid(name) == first.proc.pid for name in (FEED_NAME, UPDATES_LEASE)), 60,
               "the first orderwatcher holds the feed and Telegram leases")
    [before] = post_alert(alert_body(alert_id="before-the-kill")).json()["orders"]
    wait_until(lambda: Order.objects.get(command_id=before["command_id"]).status == Status.EXECUTED, 30,
               "the first order EXECUTED")
    second.start()
    time.sleep(2)
    assert holder_pid(FEED_NAME) == holder_pid(UPDATES_LEASE) == first.proc.pid  # the second one waits

    os.killpg(first.proc.pid, signal.SIGKILL)  # mid-pass or mid-fill: it polls every 0.2 s
    first.proc.wait(timeout=10)
    [after] = post_alert(alert_body(alert_id="after-the-kill", legs=[
        {"symbol": "SBIN-EQ", "side": "BUY", "qty": 5, "order_type": "MARKET", "product": "MIS"}])).json()["orders"]
    # Within the lease TTL (5 s; at once here, as the holder's pid is gone on this machine).
    wait_until(lambda: all(holder_pid(name) == second.proc.pid for name in (FEED_NAME, UPDATES_LEASE)), 10,
               f"the second orderwatcher holds the feed and Telegram leases ({second.output()[-2000:]})")
    wait_until(lambda: holder_pid(LEASE_NAME) in (second.proc.pid, *descendants(workers.proc.pid)), 10,
               "a live process holds the watcher's lease")
    wait_until(lambda: Order.objects.get(command_id=after["command_id"]).status == Status.EXECUTED, 30,
               f"the second order EXECUTED ({audit_trail(Order.objects.get(command_id=after['command_id']))})")
    # A command sent to the bot is still answered, by the new reader.
    fake_telegram.message("/status")
    wait_until(lambda: any(text.startswith("orderdesk ") for text in fake_telegram.texts()), 20,
               f"an answer to /status ({fake_telegram.texts()})")
    for command_id in (before["command_id"], after["command_id"]):
        assert PaperOrder.objects.filter(client_order_id=command_id).count() == 1


@pytest.mark.postgres
def test_a_database_restart_during_a_burst_is_503_or_201_never_500_and_every_process_recovers(
        stack, private_postgres):
    from orders.models import secret_digest

    desk = stack(DATABASE_URL=private_postgres.url, WATCHER_INTERVAL_S="0.5")
    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        conn.execute("UPDATE orders_strategy SET secret_digest = %s WHERE name = 'demo'", (secret_digest(TEST_SECRET),))
    bodies = {i: alert(i) for i in range(150)}
    restarted = threading.Event()

    def restart_once_the_burst_runs():
        wait_until(lambda: count("SELECT count(*) FROM orders_alert") >= 30, 60, "30 alerts in")
        private_postgres.stop()
        time.sleep(2)
        private_postgres.start()
        restarted.set()

    def count(sql: str) -> int:
        with psycopg.connect(private_postgres.url, autocommit=True) as conn:
            return conn.execute(sql).fetchone()[0]

    restarter = threading.Thread(target=restart_once_the_burst_runs, daemon=True)
    restarter.start()
    seen, replies = deliver_until_answered(desk.port, bodies, clients=8)
    restarter.join(timeout=60)
    assert restarted.is_set()
    statuses = [s for history in seen.values() for s in history]
    assert 500 not in statuses and all(s in (0, 200, 201, 503) for s in statuses), sorted(set(statuses))
    assert statuses.count(503) > 0, "the restart was not felt: the test proved nothing"
    assert len(replies) == len(bodies), f"unanswered: {sorted(set(bodies) - set(replies))}"
    # Nothing half-registered: each alert once, with its one order; the same order in every reply.
    assert count("SELECT count(*) FROM orders_alert") == len(bodies)
    assert count("SELECT count(*) FROM orders_order") == len(bodies)
    assert count("SELECT count(*) FROM orders_alert a WHERE NOT EXISTS"
                 " (SELECT 1 FROM orders_order o WHERE o.alert_id = a.id)") == 0
    # Every process recovered by itself: up still runs all three, and a new order on another
    # symbol goes all the way to the broker.
    assert desk.proc.poll() is None, desk.output()[-3000:]
    status, reply = deliver(desk.port, alert(999, symbol="SBIN-EQ"))
    assert status == 201, reply
    command_id = reply["orders"][0]["command_id"]
    wait_until(lambda: count(f"SELECT count(*) FROM orders_order WHERE command_id = '{command_id}'"
                             " AND status = 'EXECUTED'"), 60, f"the new order EXECUTED ({desk.output()[-3000:]})")
    assert count("SELECT count(*) FROM brokers_paperorder WHERE symbol = 'SBIN-EQ'") == 1
    assert count("SELECT count(*) FROM brokers_paperorder WHERE symbol = 'RELIANCE-EQ'") == 1  # the one entry


def gunicorn_workers(desk) -> list[int]:
    masters = [pid for pid in descendants(desk.proc.pid) if "gunicorn" in " ".join(command_line(pid))
               and pid != desk.proc.pid]
    master = min(masters)  # the master starts before its workers
    return [pid for pid in descendants(master) if pid != master]


def test_a_gunicorn_worker_killed_mid_request_loses_nothing_and_a_retry_yields_the_same_orders(
        stack, strategy, paper_instruments):
    desk = stack(ORDERDESK_WEB_WORKERS="2")
    bodies = {i: alert(i) for i in range(200)}
    kills = []
    stop = threading.Event()

    def killer():
        while not stop.wait(0.4):
            workers = gunicorn_workers(desk)
            if workers:
                victim = random.choice(workers)
                os.kill(victim, signal.SIGKILL)  # gunicorn's master starts another
                kills.append(victim)

    chaos = threading.Thread(target=killer, daemon=True)
    chaos.start()
    seen, replies = deliver_until_answered(desk.port, bodies, clients=8)
    stop.set()
    chaos.join(timeout=5)
    statuses = [s for history in seen.values() for s in history]
    assert len(kills) >= 3
    assert 500 not in statuses and all(s in (0, 200, 201, 503) for s in statuses), sorted(set(statuses))
    assert len(replies) == len(bodies)
    assert Alert.objects.count() == len(bodies)
    for i, reply in replies.items():
        registered = list(Order.objects.filter(alert__alert_id=f"fault-{i}").values_list("command_id", flat=True))
        assert [o["command_id"] for o in reply["orders"]] == registered  # a retried delivery: the same orders
    retried = [i for i, history in seen.items() if len(history) > 1]
    print(f"{len(kills)} gunicorn workers killed; {len(retried)} alerts delivered again; "
          f"{statuses.count(0)} deliveries without an answer")
    assert desk.proc.poll() is None, desk.output()[-3000:]
