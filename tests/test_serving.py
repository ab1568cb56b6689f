"""Production serving (issue 8): `manage.py up` as a user runs it — gunicorn, qcluster and the
orderwatcher — takes a burst of TradingView deliveries without losing an alert or answering
5xx, and on PostgreSQL its whole stack stays within a bounded number of connections (the
development server opened one per concurrent request and ran out: 84 alerts lost)."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psycopg
import pytest
from django.db import connection

from brokers.models import PaperOrder
from orders.models import Alert, Order, RejectedAlert, Status
from tests.factories import TEST_SECRET
from tests.processes import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ALERTS = 200
DELIVERIES = 3  # TradingView retries; a sender may fire the same alert at once from several places
MAX_STACK_CONNECTIONS = 60


def alert(i: int) -> bytes:
    return json.dumps({
        "strategy": "demo", "secret": TEST_SECRET, "alert_id": f"burst-{i}", "execution_type": "ENTRY",
        "exchange": "NSE",
        "legs": [{"symbol": "RELIANCE-EQ", "side": "BUY", "qty": 1, "order_type": "MARKET", "product": "MIS"}],
    }).encode()


def deliver_all_at_once(port: int, bodies: list[bytes]) -> list:
    """One connection per delivery, all released together; the HTTP status of each (or the
    exception a client met)."""
    barrier = threading.Barrier(len(bodies))
    results: list = [None] * len(bodies)

    def deliver(i: int):
        try:
            barrier.wait(timeout=30)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", "/api/webhook/", body=bodies[i], headers={"Content-Type": "text/plain"})
            response = conn.getresponse()
            response.read()
            results[i] = response.status
            conn.close()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            results[i] = f"{type(exc).__name__}: {exc}"

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


class ConnectionSampler(threading.Thread):
    """The peak number of server connections to the test database while it runs (its own
    sampling connection excluded)."""

    def __init__(self):
        super().__init__(daemon=True)
        params = connection.settings_dict
        self.dsn = dict(dbname=params["NAME"], user=params["USER"], password=params["PASSWORD"],
                        host=params["HOST"] or "127.0.0.1", port=params["PORT"] or 5432)
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        with psycopg.connect(**self.dsn, autocommit=True) as conn:
            while not self.done.is_set():
                [(count,)] = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
                self.peak = max(self.peak, count)
                time.sleep(0.02)

    def stop(self) -> int:
        self.done.set()
        self.join(timeout=5)
        return self.peak


def wait_until_no_order_is_waiting(timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while Order.objects.filter(status__in=[Status.CREATED, Status.SENT_TO_BROKER]).exists():
        assert time.monotonic() < deadline, list(Order.objects.exclude(status=Status.FAILED).values("status", "tag"))
        time.sleep(0.2)


def assert_the_burst_lost_nothing(statuses: list) -> None:
    # Every delivery answered: the first of each alert_id 201, its repeats 200 (nothing new).
    assert Counter(statuses) == {201: ALERTS, 200: ALERTS * (DELIVERIES - 1)}, Counter(statuses)
    assert Alert.objects.count() == ALERTS
    assert Order.objects.count() == ALERTS  # each alert registered once, with its one leg
    assert set(Alert.objects.values_list("alert_id", flat=True)) == {f"burst-{i}" for i in range(ALERTS)}
    # The same entry 200 times: the guard lets exactly one through, even under the burst.
    wait_until_no_order_is_waiting()
    assert Order.objects.filter(status=Status.EXECUTED).count() == 1
    assert set(Order.objects.filter(status=Status.FAILED).values_list("tag", flat=True)) <= {
        "GUARD_BLOCKED:DUPLICATE_LIVE_ORDER", "GUARD_BLOCKED:DUPLICATE_POSITION"}
    assert PaperOrder.objects.count() == 1  # one order reached the broker, once


@pytest.mark.postgres
def test_burst_on_postgresql_and_redis_loses_nothing_and_connections_stay_bounded(
    stack, strategy, paper_instruments, redis_url
):
    desk = stack(redis_url=redis_url, extra_clusters=1)  # scaled out: a second qcluster
    sampler = ConnectionSampler()
    sampler.start()
    statuses = deliver_all_at_once(desk.port, [alert(i) for i in range(ALERTS) for _ in range(DELIVERIES)])
    peak = sampler.stop()

    assert_the_burst_lost_nothing(statuses)
    print(f"peak connections to the database during the burst: {peak}")
    assert 0 < peak <= MAX_STACK_CONNECTIONS
    log = desk.output()
    assert "too many clients" not in log and "Traceback" not in log, log[-4000:]


@pytest.mark.postgres
def test_a_web_worker_of_one_thread_serves_from_a_pool_of_one_connection(stack, strategy, paper_instruments):
    # The pool holds as many connections as the worker has threads; the warm-up request
    # before the first one must give its connection back, or the one thread waits for the
    # pool and every request answers 503.
    desk = stack(ORDERDESK_WEB_WORKERS="1", ORDERDESK_WEB_THREADS="1")
    statuses = deliver_all_at_once(desk.port, [alert(i) for i in range(4)])

    assert statuses == [201] * 4, statuses
    assert Alert.objects.count() == 4


@pytest.mark.sqlite
def test_burst_on_sqlite_several_web_workers_never_meet_a_locked_database(stack, strategy, paper_instruments):
    desk = stack(ORDERDESK_WEB_WORKERS="3")
    statuses = deliver_all_at_once(desk.port, [alert(i) for i in range(ALERTS) for _ in range(DELIVERIES)])

    assert_the_burst_lost_nothing(statuses)
    log = desk.output()
    assert "database is locked" not in log and "Traceback" not in log, log[-4000:]


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = open(f"/proc/{child}/cmdline").read().replace("\0", " ")
            except OSError:
                continue
            todo.append(child)
    return found


def test_up_serves_with_gunicorn_beside_qcluster_and_the_orderwatcher_and_ctrl_c_stops_them_all(
    stack, strategy, paper_instruments
):
    desk = stack()
    processes = descendants(desk.proc.pid)
    commands = " | ".join(processes.values())
    assert "gunicorn -c python:orderdesk.gunicorn_conf" in commands and "runserver" not in commands
    assert "manage.py qcluster" in commands and "manage.py orderwatcher" in commands

    conn = http.client.HTTPConnection("127.0.0.1", desk.port, timeout=10)
    conn.request("POST", "/api/webhook/", body=alert(1), headers={"Content-Type": "text/plain"})
    accepted = conn.getresponse()
    accepted.read()
    assert accepted.status == 201
    wait_until_no_order_is_waiting()
    assert Order.objects.get().status == Status.EXECUTED
    conn.request("GET", "/static/admin/css/base.css", headers={"Accept-Encoding": "gzip"})  # WhiteNoise
    static = conn.getresponse()
    static.read()
    assert (static.status, static.getheader("Content-Encoding")) == (200, "gzip")
    assert '"POST /api/webhook/ HTTP/1.1" 201' in desk.output()  # the access log is on

    desk.stop()
    time.sleep(0.5)
    still_running = [pid for pid in processes if os.path.exists(f"/proc/{pid}") and
                     open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not still_running, {pid: processes[pid] for pid in still_running}


def test_a_second_ctrl_c_while_stopping_still_stops_every_child(stack, strategy):
    """An impatient user presses Ctrl-C twice; a supervisor may send SIGTERM again."""
    desk = stack()
    processes = descendants(desk.proc.pid)
    assert any("gunicorn" in command for command in processes.values())
    desk.proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    desk.proc.send_signal(signal.SIGINT)
    desk.proc.send_signal(signal.SIGTERM)
    desk.proc.wait(timeout=20)
    time.sleep(0.5)
    still_running = [pid for pid in processes if os.path.exists(f"/proc/{pid}") and
                     open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not still_running, {pid: processes[pid] for pid in still_running}


def test_behind_gunicorn_a_forwarded_https_counts_only_from_a_trusted_proxy(stack, strategy, paper_instruments):
    """ORDERDESK_HTTPS=1 as deployed: a client on the proxy's own machine that claims HTTPS is
    refused (and recorded) unless 127.0.0.1 is a trusted proxy; then the client address is the
    one the proxy forwarded."""
    for i, (trusted, expected) in enumerate((("", 403), ("127.0.0.1", 201))):
        desk = stack(ORDERDESK_HTTPS="1", TRUSTED_PROXIES=trusted)
        conn = http.client.HTTPConnection("127.0.0.1", desk.port, timeout=10)
        conn.request("POST", "/api/webhook/", body=alert(i), headers={
            "Content-Type": "text/plain", "X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
        response = conn.getresponse()
        assert (response.status, response.getheader("Location")) == (expected, None)
        assert json.loads(response.read())
        desk.stop()
    assert RejectedAlert.objects.get().status_code == 403
    assert Alert.objects.get().sender_ip == "198.51.100.7"


def test_the_orderwatcher_process_outlives_an_unreachable_database():
    """Under `up`, a child that exits stops the whole stack: a database that is down for a
    while must not end the watcher (it retries each interval)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERDESK_")}
    env.update(DATABASE_URL="postgres://postgres@127.0.0.1:1/nothing_listens", WATCHER_INTERVAL_S="0.2")
    done = subprocess.run([sys.executable, "manage.py", "orderwatcher", "--seconds", "2"], cwd=BASE_DIR, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("passes=0")
    assert done.stderr.count("could not take the lease; retrying") >= 3
