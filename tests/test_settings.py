"""Settings from the environment (issue 3): safe local defaults, and the task queue's contract."""

import importlib.util
import os
import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

import orderdesk.settings

SETTINGS_FILE = Path(orderdesk.settings.__file__)


def load_settings(monkeypatch, **env):
    """A fresh copy of orderdesk/settings.py read under `env` (Django's own settings untouched)."""
    for name in ("DATABASE_URL", "REDIS_URL", "ORDERDESK_Q_WORKERS", "DEBUG", "ALLOWED_HOSTS",
                 "ORDERDESK_PROCESS_ROLE", "ORDERDESK_WEB_THREADS", "ORDERDESK_DB_POOL_MAX",
                 "ORDERDESK_DB_POOL_TIMEOUT_S", "ORDERDESK_DB_PREPARED", "ORDERDESK_HTTPS", "TRUSTED_PROXIES", "REDIS_CACHE_URL",
                 "WEBHOOK_TRUST_X_FORWARDED_FOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("orderdesk_settings_under_test", SETTINGS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_sqlite_wal_immediate_busy_timeout_and_the_orm_queue(monkeypatch):
    s = load_settings(monkeypatch)
    db = s.DATABASES["default"]
    assert db["ENGINE"] == "orderdesk.sqlite"  # Django's, writers queued on a flock()
    assert Path(db["NAME"]).parent == SETTINGS_FILE.parent.parent / "db"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert db["OPTIONS"]["timeout"] >= 5
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert s.Q_CLUSTER["orm"] == "default" and "redis" not in s.Q_CLUSTER
    assert s.Q_CLUSTER["broker_class"] == "orders.queue.DatabaseQueue"  # the ORM queue, claimed in bulk
    assert s.Q_CLUSTER["workers"] == s.Q_CLUSTER["bulk"] == 8
    assert s.DEBUG is False


def test_environment_overrides(monkeypatch):
    s = load_settings(monkeypatch, DATABASE_URL="postgres://u:p%40ss@db.example:6543/desk",
                      REDIS_URL="redis://127.0.0.1:6379/3", ORDERDESK_Q_WORKERS="8", DEBUG="true",
                      SECRET_KEY="k" * 50, ALLOWED_HOSTS="desk.example, 10.0.0.5")
    db = s.DATABASES["default"]
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "desk", "u", "p@ss", "db.example", 6543)
    assert "pool" not in db["OPTIONS"] and db["CONN_MAX_AGE"] > 0  # not a web process
    assert s.Q_CLUSTER["redis"] == "redis://127.0.0.1:6379/3" and "orm" not in s.Q_CLUSTER
    assert "broker_class" not in s.Q_CLUSTER and "bulk" not in s.Q_CLUSTER
    assert (s.Q_CLUSTER["workers"], s.DEBUG, s.SECRET_KEY, s.ALLOWED_HOSTS) == (8, True, "k" * 50,
                                                                                 ["desk.example", "10.0.0.5"])


def test_the_queue_never_runs_a_task_twice_at_once_and_gives_up(monkeypatch):
    """A task is killed before it would be redelivered (timeout < retry), attempts are bounded,
    failures are acknowledged, and missed schedules are not caught up."""
    q = load_settings(monkeypatch).Q_CLUSTER
    assert q["timeout"] < q["retry"]
    assert 1 <= q["max_attempts"] <= 5
    assert q["ack_failures"] is True
    assert q["catch_up"] is False


def test_database_url_query_options_survive(monkeypatch):
    s = load_settings(monkeypatch, DATABASE_URL="postgres://u@db.example/desk?sslmode=require&connect_timeout=5")
    options = s.DATABASES["default"]["OPTIONS"]
    assert (options["sslmode"], options["connect_timeout"]) == ("require", 5)


def test_sqlite_url_keeps_the_pragmas_and_immediate_transactions(monkeypatch, tmp_path):
    s = load_settings(monkeypatch, DATABASE_URL=f"sqlite:///{tmp_path}/desk.sqlite3")
    db = s.DATABASES["default"]
    assert db["NAME"] == f"{tmp_path}/desk.sqlite3"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE" and "journal_mode=WAL" in db["OPTIONS"]["init_command"]


def test_unsupported_database_url_is_a_configuration_error(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        load_settings(monkeypatch, DATABASE_URL="mssql://u@host/db")


def test_web_processes_pool_their_postgresql_connections_bounded_by_their_threads(monkeypatch):
    s = load_settings(monkeypatch, DATABASE_URL="postgres://u@db/desk", ORDERDESK_PROCESS_ROLE="web",
                      ORDERDESK_WEB_THREADS="6")
    db = s.DATABASES["default"]
    assert db["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 6, "timeout": 2}
    assert db["CONN_MAX_AGE"] == 0  # Django requires it with a pool
    s = load_settings(monkeypatch, DATABASE_URL="postgres://u@db/desk", ORDERDESK_PROCESS_ROLE="web",
                      ORDERDESK_DB_POOL_MAX="3", ORDERDESK_DB_POOL_TIMEOUT_S="0.5")
    assert s.DATABASES["default"]["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 3, "timeout": 0.5}


def test_postgresql_binds_on_the_server_and_prepares_unless_turned_off(monkeypatch):
    for role in ("web", "worker"):
        options = load_settings(monkeypatch, DATABASE_URL="postgres://u@db/desk",
                                ORDERDESK_PROCESS_ROLE=role).DATABASES["default"]["OPTIONS"]
        assert (options["server_side_binding"], options["prepare_threshold"]) == (True, 2)
    options = load_settings(monkeypatch, DATABASE_URL="postgres://u@db/desk",
                            ORDERDESK_DB_PREPARED="false").DATABASES["default"]["OPTIONS"]
    assert "server_side_binding" not in options and "prepare_threshold" not in options
    sqlite = load_settings(monkeypatch, DATABASE_URL="sqlite:////tmp/x.sqlite3").DATABASES["default"]["OPTIONS"]
    assert "server_side_binding" not in sqlite


def test_without_secret_key_or_its_file_every_process_stops_naming_it(monkeypatch, tmp_path):
    from orderdesk import secret_key

    monkeypatch.setattr(secret_key, "SECRET_KEY_FILE", tmp_path / "secret_key")
    monkeypatch.delenv("SECRET_KEY")
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        secret_key.secret_key()


def test_up_creates_the_key_file_once_with_mode_0600(monkeypatch, tmp_path):
    from orderdesk import secret_key

    monkeypatch.setattr(secret_key, "SECRET_KEY_FILE", tmp_path / "db" / "secret_key")
    monkeypatch.delenv("SECRET_KEY")
    secret_key.ensure_secret_key_file()
    key = secret_key.secret_key()
    assert len(key) >= 50
    assert (tmp_path / "db" / "secret_key").stat().st_mode & 0o777 == 0o600
    secret_key.ensure_secret_key_file()  # a second start keeps it: sessions and queued tasks stay valid
    assert secret_key.secret_key() == key
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert secret_key.secret_key() == "from-the-environment"


def test_a_command_without_secret_key_fails_and_up_creates_it(tmp_path):
    """As a newcomer runs it: a copy of the project without db/secret_key."""
    import shutil
    import subprocess
    import sys

    root = SETTINGS_FILE.parent.parent
    copy = tmp_path / "desk"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("orderdesk", "orders", "brokers", "risk"):
        shutil.copytree(root / name, copy / name, ignore=ignore)
    shutil.copy(root / "manage.py", copy)
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DJANGO_SETTINGS_MODULE", "DATABASE_URL")}
    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=copy, env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "ImproperlyConfigured" in check.stderr and "SECRET_KEY" in check.stderr
    up = subprocess.run([sys.executable, "manage.py", "up", "--no-serve"], cwd=copy, env=env,
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert (copy / "db" / "secret_key").stat().st_mode & 0o777 == 0o600
    check = subprocess.run([sys.executable, "manage.py", "check"], cwd=copy, env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# --- secure by default (issue 9) -----------------------------------------------------------


def test_the_removed_forwarded_for_switch_is_a_startup_error_naming_its_replacement(monkeypatch):
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        load_settings(monkeypatch, WEBHOOK_TRUST_X_FORWARDED_FOR="1")
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        load_settings(monkeypatch, WEBHOOK_TRUST_X_FORWARDED_FOR="0")  # set at all: it no longer means anything


def test_trusted_proxies_are_addresses_and_networks(monkeypatch):
    s = load_settings(monkeypatch, TRUSTED_PROXIES="10.0.0.1, 172.16.0.0/12 ::1")
    assert [str(n) for n in s.TRUSTED_PROXIES] == ["10.0.0.1/32", "172.16.0.0/12", "::1/128"]
    assert s.SECURE_PROXY_SSL_HEADER == ("HTTP_X_FORWARDED_PROTO", "https")
    assert load_settings(monkeypatch).SECURE_PROXY_SSL_HEADER is None  # no proxy of ours: nobody is believed
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES.*'proxy.local'"):
        load_settings(monkeypatch, TRUSTED_PROXIES="10.0.0.1,proxy.local")


def test_https_turns_on_secure_cookies_hsts_and_the_redirect_for_pages_only(monkeypatch):
    plain = load_settings(monkeypatch)
    assert not getattr(plain, "SECURE_SSL_REDIRECT", False) and not getattr(plain, "SESSION_COOKIE_SECURE", False)
    s = load_settings(monkeypatch, ORDERDESK_HTTPS="1")
    assert s.SESSION_COOKIE_SECURE and s.CSRF_COOKIE_SECURE and s.SECURE_SSL_REDIRECT
    assert s.SECURE_HSTS_SECONDS >= 31_536_000 and s.SECURE_HSTS_INCLUDE_SUBDOMAINS
    assert s.SECURE_REDIRECT_EXEMPT == [r"^api/"]


@pytest.mark.parametrize("queue, cache", [("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1"),
                                          ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379/1"),
                                          ("redis://:pw@10.0.0.5:6380/15", "redis://:pw@10.0.0.5:6380/14")])
def test_the_rate_limit_cache_is_never_the_queue_database(monkeypatch, queue, cache):
    s = load_settings(monkeypatch, REDIS_URL=queue)
    assert s.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert s.CACHES["default"]["LOCATION"] == cache
    with pytest.raises(ImproperlyConfigured, match="REDIS_CACHE_URL"):
        load_settings(monkeypatch, REDIS_URL=queue, REDIS_CACHE_URL=queue)
    assert load_settings(monkeypatch).CACHES["default"]["BACKEND"].endswith("LocMemCache")  # per process


def test_deploy_check_is_clean_with_production_settings(tmp_path):
    """`manage.py check --deploy` as an operator runs it: warnings fail it (W021, the HSTS
    preload list, is silenced on purpose; see the settings)."""
    import secrets
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DEBUG")}
    env.update({"DJANGO_SETTINGS_MODULE": "orderdesk.settings", "ORDERDESK_HTTPS": "1",
                "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "desk.example.com",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}"})
    check = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                           cwd=SETTINGS_FILE.parent.parent, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "System check identified no issues (1 silenced)." in check.stdout
    env.pop("ORDERDESK_HTTPS")
    plain = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=SETTINGS_FILE.parent.parent,
                           env=env, capture_output=True, text=True, timeout=120)
    assert {"security.W004", "security.W008", "security.W012", "security.W016"} <= set(
        re.findall(r"security\.W\d+", plain.stdout + plain.stderr))
