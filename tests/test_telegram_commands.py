"""Telegram commands, read by the orderwatcher's reader from a fake Bot API on loopback."""

import pytest

from orders.models import Order, Status
from orders.telegram_commands import read_once, start_reader
from risk.models import KillSwitch, KillSwitchChange

pytestmark = pytest.mark.django_db(transaction=True)


def read(fake):
    offset = read_once("test:reader", None)
    read_once("test:reader", offset)  # confirms what was read, as the loop's next poll does
    return fake.texts()


def test_halt_from_the_configured_chat_throws_the_kill_switch_and_is_recorded(fake_telegram):
    fake_telegram.message("/halt", username="ravi")
    [answer] = read(fake_telegram)
    assert answer == "kill switch (global) set to HALTED by telegram:ravi"
    assert KillSwitch.objects.get(is_global=True).mode == "HALTED"
    change = KillSwitchChange.objects.get()
    assert (change.from_mode, change.to_mode, change.actor) == ("ACTIVE", "HALTED", "telegram:ravi")
    fake_telegram.message("/resume", username="ravi")
    read(fake_telegram)
    assert KillSwitch.objects.get(is_global=True).mode == "ACTIVE"


def test_the_same_from_another_chat_changes_nothing(fake_telegram, caplog):
    fake_telegram.message("/halt", chat_id="-999")
    assert read(fake_telegram) == []
    assert not KillSwitch.objects.exists()
    assert "not the configured chat" in caplog.text


def test_in_a_group_only_the_allowed_users_change_anything(fake_telegram, settings):
    settings.TELEGRAM_ALLOWED_USER_IDS = ["7"]
    fake_telegram.message("/reduce", user_id=8, chat_type="supergroup")
    [refused] = read(fake_telegram)
    assert refused.startswith("/reduce refused") and not KillSwitch.objects.exists()
    fake_telegram.message("/reduce", user_id=7, username="", chat_type="supergroup")
    read(fake_telegram)
    assert KillSwitch.objects.get(is_global=True).mode == "REDUCING"
    assert KillSwitchChange.objects.get().actor == "telegram:7"


def test_status_positions_and_orders_answer_in_plain_text(fake_telegram, paper_instruments, desk):
    desk.through(desk.entry("BUY", "SBIN-EQ", 2))
    desk.entry("BUY", "SBIN-EQ", 1)  # a duplicate: FAILED
    for command in ("/status", "/positions", "/orders failed"):
        fake_telegram.message(command)
    status, positions, failed = [t for t in read(fake_telegram) if not t.startswith("❌")]
    assert "today: EXECUTED 1, FAILED 1" in status and "failures: GUARD_BLOCKED:DUPLICATE_POSITION 1" in status
    assert "kill switch: ACTIVE" in status and "day P&L: realised 0.00" in status
    assert "demo NSE:SBIN-EQ MIS +2 @ 815.50" in positions
    [blocked] = Order.objects.filter(status=Status.FAILED)
    assert "demo BUY 1 SBIN-EQ FAILED — GUARD_BLOCKED:DUPLICATE_POSITION" in failed and blocked.tag in failed


def test_the_reader_runs_only_when_commands_are_on(fake_telegram, settings):
    settings.TELEGRAM_COMMANDS = False
    assert start_reader("test:reader") is None
