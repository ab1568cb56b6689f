"""The soak (benchmarks/soak.py) at 1,000 alerts, as the suite runs it: PostgreSQL + Redis, the
services as production runs them plus a second cluster, the fake Noren server misbehaving at
random, and a process killed every two seconds or so. Nothing is sent twice, nothing is lost,
every order ends terminal."""

import json
import os
import signal
import subprocess
import sys

import pytest
from django.db import connection

from tests.processes import BASE_DIR, descendants

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

ALERTS = 1000


def _alive(pid: int) -> bool:
    try:
        os.getpgid(pid)
    except ProcessLookupError:
        return False
    return True


def test_a_soak_with_kills_sends_nothing_twice_and_loses_nothing(redis_url, tmp_path):
    params = connection.settings_dict
    admin = f"postgres://{params['USER']}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/postgres"
    queue = redis_url.rsplit("/", 1)[0] + "/12"  # the soak's own dbs (12, and 13 for counters)
    figures_file = tmp_path / "soak.json"
    # On a timeout the soak and every service it started (each in a process group of its own)
    # are killed.
    soak = subprocess.Popen(
        [sys.executable, "benchmarks/soak.py", "--alerts", str(ALERTS), "--clients", "8", "--chaos-every", "2",
         "--min-kills", "5", "--grace", "90", "--json", str(figures_file), "--postgres", admin,
         "--database", f"soak_{os.getpid()}", "--redis", queue],
        cwd=BASE_DIR, env={**os.environ, "SOAK_LOGS": str(tmp_path / "logs")}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = soak.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        for group in {os.getpgid(pid) for pid in descendants(soak.pid) if _alive(pid)}:
            os.killpg(group, signal.SIGKILL)
        for service in (tmp_path / "logs").glob("*.log"):
            print(f"--- {service.name} ---\n{service.read_text()[-3000:]}")
        raise
    done = subprocess.CompletedProcess(soak.args, soak.returncode, stdout, stderr)
    print(done.stdout[-4000:], done.stderr[-4000:])
    figures = json.loads(figures_file.read_text())
    assert figures["double_submissions"] == 0
    assert figures["lost_alerts"] == 0
    assert figures["booked_but_unknown"] == 0
    assert figures["audit_mismatches"] == 0, figures["audit_report"]
    assert figures["not_terminal_count"] == 0, figures["not_terminal"]
    assert figures["unanswered"] == 0
    assert figures["accepted"] == ALERTS  # every alert was a fresh pair: none refused
    assert figures["orders"] == ALERTS
    assert sum(figures["kills"].values()) >= 5, figures["kills"]
    assert figures["broker_orders"] >= ALERTS * 0.9  # the fake rejects about 2 %
    assert done.returncode == 0
