"""The soak (benchmarks/soak.py) at 1,000 alerts, as the suite runs it: PostgreSQL + Redis, the
services as production runs them plus a second cluster, the fake Noren server misbehaving at
random, and a process killed every two seconds or so. Nothing is sent twice, nothing is lost,
every order ends terminal."""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from tests.processes import BASE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

ALERTS = 1000


def test_a_soak_with_kills_sends_nothing_twice_and_loses_nothing(redis_url, tmp_path):
    params = connection.settings_dict
    admin = f"postgres://{params['USER']}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/postgres"
    queue = redis_url.rsplit("/", 1)[0] + "/12"  # the soak's own dbs (12, and 13 for counters)
    figures_file = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/soak.py", "--alerts", str(ALERTS), "--clients", "8", "--chaos-every", "2",
         "--grace", "90", "--json", str(figures_file), "--postgres", admin, "--database", f"soak_{os.getpid()}",
         "--redis", queue],
        cwd=BASE_DIR, env={**os.environ, "SOAK_LOGS": str(tmp_path / "logs")}, capture_output=True, text=True,
        timeout=600)
    print(done.stdout[-4000:], done.stderr[-4000:])
    figures = json.loads(figures_file.read_text())
    assert figures["double_submissions"] == 0
    assert figures["lost_alerts"] == 0
    assert figures["not_terminal_count"] == 0, figures["not_terminal"]
    assert figures["unanswered"] == 0
    assert figures["accepted"] == ALERTS  # every alert was a fresh pair: none refused
    assert figures["orders"] == ALERTS
    assert sum(figures["kills"].values()) >= 5, figures["kills"]
    assert figures["broker_orders"] >= ALERTS * 0.9  # the fake rejects about 2 %
    assert done.returncode == 0
