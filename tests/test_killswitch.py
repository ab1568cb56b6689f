"""The kill switch: global and per strategy, set by service, command and admin; blocks at
intake (ENTRY under REDUCING, everything under HALTED) and HALTED again at claim time."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from brokers.models import PaperOrder
from orders import submission
from orders.models import EventKind, Status
from orders.submission import submit_order
from risk.killswitch import HALTED_TAG, REDUCING_TAG, effective_mode, set_mode
from risk.models import KillSwitch, KillSwitchChange
from tests.desk import assert_blocked, assert_passed, position, queued
from tests.factories import trail

pytestmark = pytest.mark.django_db


def changes():
    return [(c.strategy.name if c.strategy_id else None, c.from_mode, c.to_mode, c.actor)
            for c in KillSwitchChange.objects.order_by("id")]


# --- setting it ---------------------------------------------------------------------------

def test_set_mode_records_who_and_when(strategy):
    before = timezone.now()
    set_mode("REDUCING", actor="ops:anna")
    set_mode("HALTED", actor="ops:ben", strategy=strategy)
    set_mode("ACTIVE", actor="ops:anna")
    assert changes() == [(None, "ACTIVE", "REDUCING", "ops:anna"), ("demo", "ACTIVE", "HALTED", "ops:ben"),
                         (None, "REDUCING", "ACTIVE", "ops:anna")]
    assert all(before <= c.at <= timezone.now() for c in KillSwitchChange.objects.all())
    glob = KillSwitch.objects.get(is_global=True)
    assert (glob.mode, glob.updated_by, glob.strategy) == ("ACTIVE", "ops:anna", None)
    assert KillSwitch.objects.count() == 2  # one global row, one for demo


def test_set_mode_refuses_an_unknown_mode(strategy):
    with pytest.raises(ValueError):
        set_mode("PAUSED", actor="x")
    assert not KillSwitch.objects.exists() and not KillSwitchChange.objects.exists()


@pytest.mark.parametrize("global_mode, strategy_mode, expected", [
    (None, None, "ACTIVE"),
    ("REDUCING", None, "REDUCING"),
    (None, "REDUCING", "REDUCING"),
    ("REDUCING", "HALTED", "HALTED"),
    ("HALTED", "ACTIVE", "HALTED"),
    ("HALTED", "REDUCING", "HALTED"),
    ("ACTIVE", "REDUCING", "REDUCING"),
    ("REDUCING", "ACTIVE", "REDUCING"),
])
def test_the_stricter_switch_wins(strategy, other, global_mode, strategy_mode, expected):
    if global_mode:
        set_mode(global_mode, actor="t")
    if strategy_mode:
        set_mode(strategy_mode, actor="t", strategy=strategy)
    set_mode("HALTED", actor="t", strategy=other)  # another strategy's switch never applies
    assert effective_mode(strategy.pk) == expected


def test_effective_mode_is_one_query(strategy, django_assert_num_queries):
    set_mode("REDUCING", actor="t")
    with django_assert_num_queries(1):
        effective_mode(strategy.pk)


def test_command_sets_global_and_strategy_switches(strategy, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "anna")
    out = StringIO()
    call_command("killswitch", "HALTED", stdout=out)
    assert "kill switch global: HALTED" in out.getvalue()
    call_command("killswitch", "--strategy", "demo", "REDUCING", stdout=StringIO())
    assert changes() == [(None, "ACTIVE", "HALTED", "cli:anna"), ("demo", "ACTIVE", "REDUCING", "cli:anna")]
    assert effective_mode(strategy.pk) == "HALTED"

    listing = StringIO()
    call_command("killswitch", stdout=listing)  # no mode: show the switches, change nothing
    lines = listing.getvalue().splitlines()
    assert lines[0].startswith("global: HALTED  (by cli:anna at ") and lines[1].startswith("demo: REDUCING")
    assert len(changes()) == 2


def test_command_refuses_unknown_strategy_and_mode(strategy):
    with pytest.raises(CommandError, match="no strategy 'nope'"):
        call_command("killswitch", "--strategy", "nope", "HALTED")
    with pytest.raises(CommandError):
        call_command("killswitch", "STOP")
    assert not KillSwitchChange.objects.exists()


def test_command_without_a_known_user(strategy, monkeypatch):
    """A container without a passwd entry or $USER: getpass.getuser() raises; the switch must
    still be thrown (an emergency is no time for a traceback)."""
    def no_user():
        raise OSError("No username set in the environment")

    monkeypatch.setattr("getpass.getuser", no_user)
    call_command("killswitch", "HALTED", stdout=StringIO())
    assert effective_mode(strategy.pk) == "HALTED"
    assert KillSwitchChange.objects.get().actor.startswith("cli:")


def test_admin_changelist_edit_records_the_change(admin_client, strategy):
    glob = set_mode("ACTIVE", actor="setup")
    mine = set_mode("ACTIVE", actor="setup", strategy=strategy)
    data = {
        "form-TOTAL_FORMS": "2", "form-INITIAL_FORMS": "2", "form-MIN_NUM_FORMS": "0", "form-MAX_NUM_FORMS": "1000",
        "form-0-id": str(glob.pk), "form-0-mode": "ACTIVE",
        "form-1-id": str(mine.pk), "form-1-mode": "HALTED",
        "_save": "Save",
    }
    response = admin_client.post("/admin/risk/killswitch/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert changes()[2:] == [("demo", "ACTIVE", "HALTED", "admin:admin")]  # the unchanged row: no record
    mine.refresh_from_db()
    assert (mine.mode, mine.updated_by) == ("HALTED", "admin:admin")
    assert effective_mode(strategy.pk) == "HALTED"
    assert admin_client.get("/admin/risk/killswitch/").status_code == 200
    assert admin_client.get("/admin/risk/killswitchchange/").status_code == 200


def test_admin_change_form_and_add(admin_client, strategy):
    response = admin_client.post("/admin/risk/killswitch/add/", {"strategy": str(strategy.pk), "mode": "REDUCING"})
    assert response.status_code == 302
    response = admin_client.post("/admin/risk/killswitch/add/", {"strategy": "", "mode": "HALTED"})
    assert response.status_code == 302
    switch = KillSwitch.objects.get(is_global=True)
    response = admin_client.post(f"/admin/risk/killswitch/{switch.pk}/change/", {"mode": "ACTIVE"})
    assert response.status_code == 302
    assert changes() == [("demo", "ACTIVE", "REDUCING", "admin:admin"), (None, "ACTIVE", "HALTED", "admin:admin"),
                         (None, "HALTED", "ACTIVE", "admin:admin")]
    assert KillSwitch.objects.count() == 2
    # nobody deletes a switch or rewrites its history
    assert admin_client.post(f"/admin/risk/killswitch/{switch.pk}/delete/", {"post": "yes"}).status_code == 403
    change = KillSwitchChange.objects.first()
    assert admin_client.post(f"/admin/risk/killswitchchange/{change.pk}/delete/",
                             {"post": "yes"}).status_code == 403


def test_admin_add_of_a_second_global_switch_updates_the_one_global(admin_client, strategy):
    set_mode("REDUCING", actor="setup")
    response = admin_client.post("/admin/risk/killswitch/add/", {"strategy": "", "mode": "HALTED"})
    assert response.status_code == 302
    assert KillSwitch.objects.filter(is_global=True).get().mode == "HALTED"
    assert KillSwitch.objects.count() == 1
    assert changes()[-1] == (None, "REDUCING", "HALTED", "admin:admin")


# --- blocking at intake -------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["global", "strategy"])
def test_reducing_blocks_entries_and_lets_exits_through(desk, strategy, scope):
    desk.hold("BUY", 10)
    set_mode("REDUCING", actor="t", strategy=strategy if scope == "strategy" else None)
    assert_blocked(desk.entry("SELL", symbol="SBIN-EQ"), REDUCING_TAG, "kill switch REDUCING")
    exit_ = desk.exit("SELL", qty=10)
    assert_passed(exit_)
    desk.through(exit_)  # and it reaches the broker
    assert position()[0] == 0


@pytest.mark.parametrize("scope", ["global", "strategy"])
def test_halted_blocks_entries_and_exits(desk, strategy, scope):
    desk.hold("BUY", 10)
    set_mode("HALTED", actor="t", strategy=strategy if scope == "strategy" else None)
    assert_blocked(desk.entry("BUY", symbol="SBIN-EQ"), HALTED_TAG, "kill switch HALTED")
    assert_blocked(desk.exit("SELL", qty=10), HALTED_TAG, "kill switch HALTED")
    assert position()[0] == 10


def test_a_strategy_switch_leaves_other_strategies_alone(desk, strategy, other):
    set_mode("HALTED", actor="t", strategy=strategy)
    assert_blocked(desk.entry(), HALTED_TAG)
    assert_passed(desk.entry("BUY", strategy="other"))


def test_strategy_active_does_not_lift_a_global_halt(desk, strategy):
    set_mode("HALTED", actor="t")
    set_mode("ACTIVE", actor="t", strategy=strategy)
    assert_blocked(desk.entry(), HALTED_TAG)


def test_back_to_active_lets_entries_through(desk):
    set_mode("HALTED", actor="t")
    assert_blocked(desk.entry(), HALTED_TAG)
    set_mode("ACTIVE", actor="t")
    assert_passed(desk.entry())  # the blocked order was never live: no duplicate


def test_multi_leg_entry_under_reducing(desk):
    set_mode("REDUCING", actor="t")
    first, second = desk.post("ENTRY", [{"symbol": "SBIN-EQ", "side": "BUY", "qty": 1, "product": "MIS"},
                                        {"symbol": "INFY-EQ", "side": "SELL", "qty": 1, "product": "MIS"}])
    assert_blocked(first, REDUCING_TAG)
    assert_blocked(second, REDUCING_TAG)


# --- HALTED at claim time -----------------------------------------------------------------

def test_halted_at_claim_time_fails_queued_orders(desk, strategy, other):
    mine, theirs = desk.entry(), desk.entry("BUY", symbol="SBIN-EQ", strategy="other")
    assert queued() == [mine.command_id, theirs.command_id]
    set_mode("HALTED", actor="t", strategy=strategy)  # thrown while the tasks wait in the queue

    desk.send()
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.status, mine.tag) == (Status.FAILED, HALTED_TAG)
    assert trail(mine) == [("CREATED", "", "CREATED", "", "webhook"),
                           ("FAILED", "CREATED", "FAILED", HALTED_TAG, "worker")]
    assert mine.events.last().detail == "kill switch HALTED at claim time"
    assert not PaperOrder.objects.filter(client_order_id=mine.command_id).exists()
    assert theirs.status == Status.SENT_TO_BROKER  # its strategy's switch is ACTIVE
    assert list(PaperOrder.objects.values_list("client_order_id", flat=True)) == [theirs.command_id]


def test_a_switch_thrown_just_before_the_claim_still_stops_the_order(desk, strategy, monkeypatch):
    """The claim's own UPDATE checks the switch: no window between a read and the claim."""
    entry = desk.entry()
    real_get_broker = submission.get_broker

    def throw_the_switch_then_get_broker():  # the submission's last step before its claim
        set_mode("HALTED", actor="ops", strategy=strategy)
        return real_get_broker()

    monkeypatch.setattr(submission, "get_broker", throw_the_switch_then_get_broker)
    assert submit_order(entry.command_id) == "halted"
    entry.refresh_from_db()
    assert (entry.status, entry.tag) == (Status.FAILED, HALTED_TAG)
    assert not PaperOrder.objects.exists()


def test_global_halt_at_claim_time_also_stops_exits(desk):
    desk.hold("BUY", 10)
    exit_ = desk.exit("SELL", qty=10)
    set_mode("HALTED", actor="t")
    desk.send()
    exit_.refresh_from_db()
    assert (exit_.status, exit_.tag) == (Status.FAILED, HALTED_TAG)
    assert PaperOrder.objects.count() == 1  # only the entry that made the position


def test_reducing_at_claim_time_does_not_stop_a_queued_order(desk):
    """Only HALTED is re-checked when a worker claims: an ENTRY that passed the intake before
    the switch went to REDUCING is still sent."""
    entry = desk.entry()
    set_mode("REDUCING", actor="t")
    desk.send()
    entry.refresh_from_db()
    assert entry.status == Status.SENT_TO_BROKER


def test_halted_after_the_claim_does_not_touch_a_sent_order(desk):
    entry = desk.entry()
    desk.send()
    set_mode("HALTED", actor="t")
    desk.watch()  # the watcher keeps converging to the broker's truth
    entry.refresh_from_db()
    assert entry.status == Status.EXECUTED
    assert EventKind.BLOCKED not in entry.events.values_list("kind", flat=True)


def test_a_redelivered_task_after_the_halt_changes_nothing(desk, strategy):
    entry = desk.entry()
    set_mode("HALTED", actor="t")
    desk.send()
    assert submit_order(entry.command_id) == "not claimable (FAILED)"
    assert entry.events.count() == 2


def test_switch_times_are_utc(strategy):
    switch = set_mode("HALTED", actor="t", strategy=strategy)
    assert switch.updated_at.utcoffset() == timedelta(0)
