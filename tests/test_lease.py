"""The watcher lease: one poller at a time, for the queued task and the foreground command."""

import os
import subprocess
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from django_q.signing import SignedPackage

from orders import tasks
from orders.models import WatcherLease
from orders.queue import WATCH_TASK
from orders.watcher import (LEASE_NAME, acquire_lease, new_owner, release_lease, renew_lease, run_watcher,
                            watcher_running)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_loop(settings):
    settings.WATCHER_INTERVAL_S = 0.01
    settings.WATCHER_SLICE_S = 0.05
    settings.WATCHER_LEASE_TTL_S = 10


def lease():
    return WatcherLease.objects.get(name=LEASE_NAME)


def expire():
    WatcherLease.objects.filter(name=LEASE_NAME).update(expires_at=timezone.now() - timedelta(seconds=1))


def queued_funcs():
    return [SignedPackage.loads(q.payload)["func"] for q in OrmQ.objects.all()]


class Watcher:
    """Stands in for OrderWatcher: counts passes, optionally does something during one."""

    def __init__(self, during=None):
        self.during, self.passes = during, 0

    def poll_once(self):
        self.passes += 1
        if self.during:
            self.during()
        return True


def test_acquire_renew_release():
    assert not watcher_running()
    assert acquire_lease("a") and watcher_running() and lease().owner == "a"
    assert not acquire_lease("b")  # live lease held by another owner
    assert acquire_lease("a")  # the holder may re-acquire
    assert renew_lease("a") and not renew_lease("b")
    release_lease("b")  # not b's to release
    assert watcher_running()
    release_lease("a")
    assert not watcher_running()
    assert acquire_lease("b") and lease().owner == "b"


def test_an_expired_lease_is_free_and_its_old_owner_cannot_renew_it():
    assert acquire_lease("a")
    expire()
    assert acquire_lease("b")
    assert not renew_lease("a")
    assert lease().owner == "b" and lease().expires_at > timezone.now()


def test_run_watcher_does_nothing_when_the_lease_is_held_elsewhere():
    acquire_lease("other")
    watcher = Watcher()
    assert run_watcher("me", seconds=1, watcher=watcher) is None
    assert watcher.passes == 0 and lease().owner == "other"


def test_run_watcher_polls_until_the_deadline_then_releases():
    watcher = Watcher()
    passes = run_watcher("me", seconds=0.1, watcher=watcher)
    assert passes == watcher.passes >= 2
    assert not watcher_running()


def test_run_watcher_stops_when_its_lease_is_taken_over():
    def steal():
        WatcherLease.objects.filter(name=LEASE_NAME).update(
            owner="thief", expires_at=timezone.now() + timedelta(minutes=1))

    assert run_watcher("me", seconds=60, watcher=Watcher(during=steal)) == 1
    assert lease().owner == "thief" and watcher_running()  # not released by the loser


def test_run_watcher_outlives_a_failing_pass():
    def fail():
        raise RuntimeError("boom")

    assert run_watcher("me", seconds=0.1, watcher=Watcher(during=fail)) >= 2


def run_command():
    out = StringIO()
    call_command("orderwatcher", "--seconds", "0.3", "--no-wait", stdout=out)
    return out.getvalue()


def test_command_exits_when_another_watcher_holds_the_lease():
    acquire_lease("other")
    assert "another watcher holds the lease" in run_command()


def test_command_polls_under_the_lease():
    output = run_command()
    passes = int(output.rsplit("passes=", 1)[1])
    assert passes >= 1 and "another watcher" not in output
    assert not watcher_running()


def test_watch_task_hands_over_to_a_successor():
    assert tasks.watch_orders() >= 1
    assert queued_funcs() == [WATCH_TASK]
    assert not watcher_running()


def test_watch_task_exits_without_successor_when_the_lease_is_held():
    acquire_lease("other")
    assert tasks.watch_orders() == 0
    assert queued_funcs() == []


def test_migration_schedules_the_watcher_every_minute():
    schedule = Schedule.objects.get(name="orderwatcher")
    assert (schedule.func, schedule.schedule_type, schedule.minutes, schedule.repeats) == (
        WATCH_TASK, Schedule.MINUTES, 1, -1)


def holder(pid: int, host: str | None = None) -> str:
    kind, this_host, _, token = new_owner("task").split(":")
    return f"{kind}:{host or this_host}:{pid}:{token}"


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.parametrize("owner, free", [
    (lambda: holder(dead_pid()), True),  # killed mid-slice on this machine: no need to wait out its lease
    (lambda: holder(os.getpid()), False),  # alive
    (lambda: holder(dead_pid(), host="another-machine"), False),  # we cannot tell: wait for expiry
], ids=["dead here", "alive here", "elsewhere"])
def test_a_lease_whose_holder_died_on_this_machine_is_free(owner, free):
    owner = owner()
    assert acquire_lease(owner)
    assert watcher_running() is not free
    assert acquire_lease("task:other:1:abcdef") is free


def test_a_new_run_keeps_the_rhythm_of_the_previous_ones(settings):
    settings.WATCHER_INTERVAL_S = 60
    assert run_watcher("a", seconds=0.05, watcher=Watcher()) == 1
    later = Watcher()
    assert run_watcher("b", seconds=0.2, watcher=later) == 0  # the last pass was just now: none due
    assert later.passes == 0 and not watcher_running()


def test_watch_task_hands_over_even_between_two_passes(settings):
    settings.WATCHER_INTERVAL_S = 60
    assert tasks.watch_orders() == 1
    OrmQ.objects.all().delete()
    assert tasks.watch_orders() == 0  # no pass due in this slice, but the chain goes on
    assert queued_funcs() == [WATCH_TASK]


def test_a_long_interval_does_not_shorten_the_slice(settings, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "TIMEOUT", 60)
    settings.WATCHER_SLICE_S, settings.BROKER_CONNECT_TIMEOUT_S, settings.BROKER_READ_TIMEOUT_S = 20, 3, 10
    for interval in (1, 60):
        settings.WATCHER_INTERVAL_S = interval
        assert tasks.watcher_slice_seconds() == 20
    settings.BROKER_READ_TIMEOUT_S = 50  # a pass that may take 53 s: the slice ends in time for it
    assert tasks.watcher_slice_seconds() == 6
