"""A missing service: on a developer's laptop its tests skip with a message; in CI the run fails."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE_PG = "postgres://postgres@127.0.0.1:1/test"  # port 1: nothing listens there


def run_suite_against_a_missing_postgres(ci: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": UNREACHABLE_PG, "CI": "true" if ci else ""}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_models.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_missing_postgres_skips_with_a_message_on_a_laptop():
    result = run_suite_against_a_missing_postgres(ci=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "skipped" in result.stdout and "passed" not in result.stdout
    assert "PostgreSQL at 127.0.0.1:1 is not reachable" in result.stdout


@pytest.mark.slow
def test_missing_postgres_fails_the_run_in_ci():
    result = run_suite_against_a_missing_postgres(ci=True)
    assert result.returncode != 0
    assert "CI=true: a missing service is a failure" in result.stdout + result.stderr
