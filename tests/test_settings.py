"""Settings from the environment (issue 3): safe local defaults, and the task queue's contract."""

import importlib.util
from pathlib import Path

import orderdesk.settings

SETTINGS_FILE = Path(orderdesk.settings.__file__)


def load_settings(monkeypatch, **env):
    """A fresh copy of orderdesk/settings.py read under `env` (Django's own settings untouched)."""
    for name in ("DATABASE_URL", "REDIS_URL", "ORDERDESK_Q_WORKERS", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"):
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
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(db["NAME"]).parent == SETTINGS_FILE.parent.parent / "db"
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert db["OPTIONS"]["timeout"] >= 5
    assert "journal_mode=WAL" in db["OPTIONS"]["init_command"]
    assert s.Q_CLUSTER["orm"] == "default" and "redis" not in s.Q_CLUSTER
    assert s.Q_CLUSTER["workers"] == 4
    assert s.DEBUG is False


def test_environment_overrides(monkeypatch):
    s = load_settings(monkeypatch, DATABASE_URL="postgres://u:p%40ss@db.example:6543/desk",
                      REDIS_URL="redis://127.0.0.1:6379/3", ORDERDESK_Q_WORKERS="8", DEBUG="true",
                      SECRET_KEY="k" * 50, ALLOWED_HOSTS="desk.example, 10.0.0.5")
    db = s.DATABASES["default"]
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "desk", "u", "p@ss", "db.example", "6543")
    assert s.Q_CLUSTER["redis"] == "redis://127.0.0.1:6379/3" and "orm" not in s.Q_CLUSTER
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
