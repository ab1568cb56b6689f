"""Shared fixtures. Services (PostgreSQL, Redis) are real; on a developer's laptop a missing
one skips its tests with a message, in CI (CI=true) it fails them."""

import json
import os
import secrets
import time

import pytest
from django.db import connection

from tests.factories import TEST_SECRET, StrategyFactory

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/15")


def service_missing(message: str):
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


def _postgres_unreachable() -> str | None:
    """Why the configured PostgreSQL server cannot be reached, or None."""
    import psycopg

    params = connection.settings_dict
    try:
        psycopg.connect(dbname="postgres", user=params["USER"], password=params["PASSWORD"],
                        host=params["HOST"], port=params["PORT"] or None, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return f"PostgreSQL at {params['HOST']}:{params['PORT'] or 5432} is not reachable: {str(exc).strip()[:200]}"
    return None


def pytest_collection_modifyitems(config, items):
    """PostgreSQL-only tests run in the second, DATABASE_URL=postgres://… run of the suite,
    SQLite-only tests in the first."""
    if connection.vendor == "postgresql":
        problem = _postgres_unreachable()
        if problem and IN_CI:
            pytest.exit(f"{problem} (CI=true: a missing service is a failure)", returncode=1)
        if problem:
            for item in items:
                item.add_marker(pytest.mark.skip(reason=f"{problem}; start it, or run without DATABASE_URL"))
    other_backend = "sqlite" if connection.vendor == "postgresql" else "postgres"
    selected, deselected = [], []
    for item in items:
        (deselected if item.get_closest_marker(other_backend) else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_report_header(config):
    return f"database: {connection.vendor} {connection.settings_dict['NAME']}"


@pytest.fixture
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        service_missing(f"Redis at {REDIS_TEST_URL} is not reachable: {exc}")
    return REDIS_TEST_URL


@pytest.fixture(autouse=True)
def _fast_pipeline(settings):
    """Paper fills at once unless a test says otherwise, and a broker object of the test's own
    (the paper broker remembers the book it read, as a process does over a day)."""
    from brokers import registry
    from orders import submission
    from risk import limits

    settings.PAPER_FILL_DELAY_S = 0
    settings.ORDERDESK_BROKER = "paper"
    registry._broker.cache_clear()
    # What the risk limits keep between intakes: a rolled-back test's ids come round again.
    limits._fill_figures.clear()
    limits._limits_cache.clear()
    submission._watcher_seen_at = None  # a watcher seen running by an earlier test


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test starts with the webhook's rate-limit counters at zero (they live in this
    process's memory, or in the Redis cache a test configures)."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def strategy(db):
    return StrategyFactory(name="demo")


@pytest.fixture
def alert_body():
    def build(**overrides):
        default_leg = {"symbol": "RELIANCE-EQ", "side": "BUY", "qty": 10, "order_type": "MARKET", "product": "MIS"}
        legs = overrides.pop("legs") if "legs" in overrides else [default_leg]
        body = {"strategy": "demo", "secret": TEST_SECRET, "execution_type": "ENTRY", "exchange": "NSE", "legs": legs}
        body.update(overrides)
        return body

    return build


@pytest.fixture
def post_alert(client):
    """POST a body (dict -> JSON) to the webhook the way TradingView does (text/plain)."""

    def post(body, content_type="text/plain; charset=utf-8"):
        raw = json.dumps(body) if isinstance(body, dict | list) else body
        return client.post("/api/webhook/", data=raw, content_type=content_type)

    return post


@pytest.fixture
def run_queue(db):
    """Run the submission tasks waiting in the django-q2 ORM queue, in this process, the way
    a worker would (decode the signed package, call the function). Watcher tasks are
    acknowledged without running (tests drive the watcher themselves). Returns the
    (func, args) of every task found."""
    from django.utils.module_loading import import_string
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    def run(run_watcher_tasks=False):
        broker = get_broker()
        found = []
        while True:
            batch = broker.dequeue()
            if not batch:
                return found
            for ack_id, payload in batch:
                task = SignedPackage.loads(payload)
                found.append((task["func"], task["args"]))
                if task["func"] != "orders.tasks.watch_orders" or run_watcher_tasks:
                    import_string(task["func"])(*task["args"], **task["kwargs"])
                broker.acknowledge(ack_id)

    return run


# --- the Shoonya adapter against the fake Noren server -----------------------------------

@pytest.fixture
def fake_noren():
    from dataclasses import replace

    from brokers.fake_noren import TEST_ACCOUNT, FakeNoren

    # A copy: a test that changes the fake's account must not change the next test's.
    with FakeNoren(account=replace(TEST_ACCOUNT)) as fake:
        yield fake


@pytest.fixture
def fake_telegram(settings):
    """Telegram notifications on, sent to a fake Bot API on loopback."""
    from tests.fake_telegram import CHAT_ID, TOKEN, FakeTelegram

    with FakeTelegram() as fake:
        settings.TELEGRAM_API_BASE, settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID = fake.url, TOKEN, CHAT_ID
        settings.TELEGRAM_TIMEOUT_S = 2
        yield fake


def _use_shoonya(settings, fake, oauth: bool):
    from brokers import registry

    settings.ORDERDESK_BROKER = "shoonya"
    settings.SHOONYA_ALGO_ID = ""
    settings.SHOONYA_LOGIN_RETRY_S = 60
    for name, value in fake.settings(oauth=oauth).items():
        setattr(settings, name, value)
    registry._broker.cache_clear()


@pytest.fixture
def shoonya_legacy(settings, fake_noren, db):
    """ORDERDESK_BROKER=shoonya with QuickAuth credentials: the adapter logs in by itself."""
    from brokers import registry

    _use_shoonya(settings, fake_noren, oauth=False)
    yield fake_noren
    registry._broker.cache_clear()


@pytest.fixture
def shoonya_oauth_without_session(settings, fake_noren, db):
    """ORDERDESK_BROKER=shoonya with OAuth credentials and no session stored yet."""
    from brokers import registry

    _use_shoonya(settings, fake_noren, oauth=True)
    yield fake_noren
    registry._broker.cache_clear()


@pytest.fixture
def shoonya_oauth(shoonya_oauth_without_session):
    """OAuth credentials and a session stored as `manage.py shoonya_login` would."""
    from brokers import shoonya_session

    shoonya_session.gen_acs_tok(shoonya_session.new_client(), shoonya_oauth_without_session.issue_auth_code())
    return shoonya_oauth_without_session


# --- real processes on the test database (helpers in tests/processes.py) ------------------

@pytest.fixture
def q_name():
    return f"orderdesk-test-{os.getpid()}-{secrets.token_hex(4)}"


@pytest.fixture
def paper_instruments(transactional_db):
    # Flushed after every transactional test: put the migration's instruments back.
    from brokers.models import DEFAULT_INSTRUMENTS, PaperInstrument

    for exchange, symbol, price in DEFAULT_INSTRUMENTS:
        PaperInstrument.objects.get_or_create(exchange=exchange, symbol=symbol, defaults={"ref_price": price})


@pytest.fixture
def cluster(transactional_db, q_name, monkeypatch):
    """Builds (not starts) a qcluster subprocess on the test database and makes this process
    enqueue into its queue. Stopped before the test database is flushed; prints its output
    when the test failed."""
    from django_q.conf import Conf

    from tests.processes import Cluster, database_url, flush_redis_keys

    clusters = []

    def build(redis_url: str | None = None, command: str = "qcluster", **env_overrides) -> Cluster:
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
        env.update(env_overrides)
        if redis_url:
            monkeypatch.setattr(Conf, "ORM", None)
            monkeypatch.setattr(Conf, "BROKER_CLASS", None)  # the database queue's, which wins over Redis
            monkeypatch.setattr(Conf, "REDIS", redis_url)
            env["REDIS_URL"] = redis_url
        clusters.append(Cluster(q_name, env, command))
        return clusters[-1]

    yield build
    for c in clusters:
        c.stop()
        if c.env.get("REDIS_URL"):  # only now: a running cluster keeps writing its keys
            flush_redis_keys(c.env["REDIS_URL"], c.name)
        # Captured: pytest shows it only when the test failed.
        print(f"--- {c.command} {c.name} output ---\n{c.output()}")
        c.log.close()


@pytest.fixture
def stack(transactional_db, q_name):
    """Builds and starts `manage.py up` on the test database (the embedded ORM queue, or the
    Redis broker with `redis_url`); stopped before the database is flushed, its output
    printed (pytest shows it when the test failed)."""
    from tests.processes import Stack, database_url, flush_redis_keys

    stacks = []

    def build(redis_url: str | None = None, extra_clusters: int = 0, **env_overrides) -> Stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ORDERDESK_", "Q_CLUSTER"))}
        env.pop("REDIS_URL", None)
        env.update({"DATABASE_URL": database_url(), "ORDERDESK_Q_NAME": q_name, "PAPER_FILL_DELAY_S": "0.2",
                    "WATCHER_INTERVAL_S": "0.2", "PYTHONUNBUFFERED": "1", **env_overrides})
        if redis_url:
            env["REDIS_URL"] = redis_url
        stacks.append(Stack(env, extra_clusters))
        return stacks[-1].start()

    yield build
    for s in stacks:
        s.stop()
        if s.env.get("REDIS_URL"):
            flush_redis_keys(s.env["REDIS_URL"], q_name)
        print(f"--- up output ---\n{s.output()}")
        s.log.close()


# --- the pipeline as production drives it (tests/desk.py) ----------------------------------

@pytest.fixture
def desk(strategy, alert_body, post_alert, run_queue):
    from tests.desk import Desk

    return Desk(alert_body, post_alert, run_queue)


@pytest.fixture
def other(db):
    return StrategyFactory(name="other")


@pytest.fixture
def trading_day_began_an_hour_ago(monkeypatch):
    """Tests backdate orders by seconds; run just after IST midnight, those seconds would cross
    into the previous trading day, whose orders the broker has forgotten (failed as unknown at
    once, rightly). Orders older than an hour still belong to a past day, as they really do."""
    from datetime import timedelta

    from django.utils import timezone

    from orders import watcher
    from orders.tradingday import trading_day_start

    monkeypatch.setattr(watcher, "trading_day_start",
                        lambda now=None: min(trading_day_start(now), (now or timezone.now()) - timedelta(hours=1)))


@pytest.fixture
def private_postgres():
    """A PostgreSQL server of this test's own, started, with an empty `orderdesk` database;
    stopped at the end (tests/processes.PrivatePostgres)."""
    import shutil

    from tests.processes import PrivatePostgres

    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        service_missing("initdb and pg_ctl (PostgreSQL's server binaries) are not installed")
    server = PrivatePostgres()
    try:
        server.start().create_database()
        yield server
    finally:
        server.remove()


# --- every test's orders stay verifiable (orders.audit) -------------------------------------

DB_FIXTURES = {"db", "transactional_db", "django_db_reset_sequences", "django_db_serialized_rollback"}


def _verifiable():
    """The registered orders (with a creation row; factories' bare orders have none) and the
    positions made only from their fills."""
    from orders.models import EventKind, Fill, Order, Position

    registered = Order.objects.filter(events__kind=EventKind.CREATED)
    keys = {}
    for strategy, exchange, symbol, product, has_trail in Fill.objects.values_list(
            "strategy_id", "order__exchange", "order__symbol", "order__product", "order__audit_head"):
        key = (strategy, exchange, symbol, product)
        keys[key] = keys.get(key, True) and bool(has_trail)
    positions = [p for p in Position.objects.all() if keys.get((p.strategy_id, p.exchange, p.symbol, p.product))]
    return registered, positions


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """After each test that passed and used the database: what it left must verify, as
    `manage.py verify_audit` would check it (tests that build rows by hand, or tamper on
    purpose, are marked no_audit_check)."""
    result = yield
    if item.get_closest_marker("no_audit_check") or not (DB_FIXTURES & set(getattr(item, "fixturenames", ()))):
        return result
    from django.db import connection

    from orders import audit

    if connection.needs_rollback:
        return result  # the test ended inside a failed transaction on purpose: nothing to read
    # The test's own processes may still be moving orders (they stop at fixture teardown): a
    # mismatch that is gone a moment later was a read between two of their writes.
    for _ in range(5):
        orders, positions = _verifiable()
        checked = audit.verify(orders=orders, positions=positions)
        if checked.ok:
            break
        time.sleep(0.5)
    assert checked.ok, "the audit trail does not verify after this test:\n" + "\n".join(checked.mismatches[:20])
    return result


class _DataStatements:
    """SELECT/INSERT/UPDATE/DELETE statements run on the default connection within the block,
    by kind (WITH: PostgreSQL's one-statement move, an UPDATE and its event's INSERT);
    transaction control (BEGIN, COMMIT, savepoints) is left out, as it differs inside a
    test's own transaction."""

    def __enter__(self):
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        self._captured = CaptureQueriesContext(connection).__enter__()
        return self

    def __exit__(self, *exc):
        self._captured.__exit__(*exc)
        self.by_kind: dict[str, int] = {}
        for query in self._captured.captured_queries:
            kind = query["sql"].lstrip().split(" ", 1)[0].upper()
            if kind in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
                self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.sql = [q["sql"] for q in self._captured.captured_queries]


@pytest.fixture
def data_statements():
    return _DataStatements
