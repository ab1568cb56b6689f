"""Telegram commands (TELEGRAM_COMMANDS=1): /status, /positions, /orders [failed|open],
/halt, /reduce, /resume.

One reader at a time: a long-lived loop in `manage.py orderwatcher` (never a django-q2 task
slice) that holds the lease "telegram-updates" and long-polls getUpdates. Only the
configured chat is answered (others are logged and ignored); in a group chat the commands that
change anything are taken only from TELEGRAM_ALLOWED_USER_IDS when it is set. Answers are
plain text, times in IST.
"""

import logging
import threading
import time

import requests
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Count, Sum
from django.utils import timezone

from . import health, leases, telegram
from .blocker_registry import kill_switch_control
from .models import Fill, Order, Status
from .selectors import positions_with_prices
from .tradingday import trading_day_start

log = logging.getLogger("orderdesk.telegram")

UPDATES_LEASE = "telegram-updates"
LONG_POLL_S = 10
CHANGES = {"/halt": "HALTED", "/reduce": "REDUCING", "/resume": "ACTIVE"}


def _ist(moment) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def status_text() -> str:
    now = timezone.now()
    day = trading_day_start(now)
    today = Order.objects.filter(created_at__gte=day)
    by_status = dict(today.values_list("status").annotate(n=Count("id")).order_by())
    failures = list(today.filter(status=Status.FAILED).exclude(tag_family="").values_list("tag_family", "tag_code")
                    .annotate(n=Count("id")).order_by("-n")[:8])
    realized = Fill.objects.filter(at__gte=day).aggregate(total=Sum("realized_pnl"))["total"] or 0
    unrealized = positions_with_prices().exclude(net_qty=0).aggregate(total=Sum("unrealized_pnl"))["total"] or 0
    report = health.health_report()
    watcher, broker = report.details.get("watcher", {}), report.details.get("broker", {})
    lines = [f"orderdesk {report.status} at {_ist(now)} IST",
             "today: " + (", ".join(f"{s} {n}" for s, n in sorted(by_status.items())) or "no orders"),
             "failures: " + (", ".join(f"{f}:{c or '-'} {n}" for f, c, n in failures) or "none"),
             f"day P&L: realised {realized:.2f}, unrealised {unrealized:.2f}",
             f"kill switch: {global_kill_switch_mode()}",
             f"broker: {broker.get('name', '?')} session {broker.get('session', '?')}",
             "watcher: " + (f"last pass {watcher.get('last_pass_age_s')}s ago" if watcher.get("holder") else
                            "NOT RUNNING")]
    return "\n".join(lines + [f"! {reason}" for reason in report.details.get("reasons", [])])


def global_kill_switch_mode() -> str:
    """Read by model name: orders reaches risk's code only through the registry."""
    from django.apps import apps

    switch = apps.get_model("risk", "KillSwitch").objects.filter(is_global=True).values_list("mode", flat=True).first()
    return switch or "ACTIVE"


def positions_text() -> str:
    rows = positions_with_prices().exclude(net_qty=0).select_related("strategy").order_by("strategy__name", "symbol")
    lines = [f"{p.strategy.name} {p.exchange}:{p.symbol} {p.product} {p.net_qty:+d} @ {p.avg_price:.2f}"
             + (f" last {p.last_price} uP&L {p.unrealized_pnl:.2f}" if p.last_price is not None else " (no price)")
             for p in rows[:30]]
    return "\n".join(lines) or "no open positions"


def orders_text(which: str) -> str:
    rows = Order.objects.select_related("strategy").order_by("-id")
    if which == "failed":
        rows = rows.filter(status=Status.FAILED)
    elif which == "open":
        rows = rows.filter(status__in=(Status.CREATED, Status.SENT_TO_BROKER))
    lines = [f"{_ist(o.created_at)} {o.strategy.name} {o.side} {o.qty} {o.symbol} {o.status}"
             + (f" filled {o.filled_qty}/{o.qty}" if o.filled_qty else "") + (f" — {o.tag}" if o.tag else "")
             for o in rows[:10]]
    return "\n".join(lines) or "no orders"


def handle_update(update: dict) -> str | None:
    """The answer to one update, or None when it is not for us (logged)."""
    message = update.get("message") or update.get("edited_message") or {}
    chat, sender = message.get("chat") or {}, message.get("from") or {}
    text = (message.get("text") or "").strip()
    if str(chat.get("id")) != str(settings.TELEGRAM_CHAT_ID):
        log.warning("telegram: ignored a message from chat %s (not the configured chat)", chat.get("id"))
        return None
    if not text.startswith("/"):
        return None
    command, _, argument = text.partition(" ")
    command = command.split("@", 1)[0].lower()
    who = sender.get("username") or str(sender.get("id", "?"))
    if command in CHANGES:
        allowed = settings.TELEGRAM_ALLOWED_USER_IDS
        if chat.get("type") in ("group", "supergroup") and allowed and str(sender.get("id")) not in allowed:
            log.warning("telegram: %s from user %s refused (not in TELEGRAM_ALLOWED_USER_IDS)", command, who)
            return f"{command} refused: user {sender.get('id')} may not change the kill switch"
        kill_switch_control()(CHANGES[command], actor=f"telegram:{who}")
        return f"kill switch (global) set to {CHANGES[command]} by telegram:{who}"
    if command == "/status":
        return status_text()
    if command == "/positions":
        return positions_text()
    if command == "/orders":
        return orders_text(argument.strip().lower())
    return "commands: /status /positions /orders [failed|open] /halt /reduce /resume"


def get_updates(offset: int | None) -> list[dict]:
    url = f"{settings.TELEGRAM_API_BASE.rstrip('/')}/bot{settings.TELEGRAM_BOT_TOKEN}/getUpdates"
    params = {"timeout": LONG_POLL_S, **({"offset": offset} if offset is not None else {})}
    response = requests.get(url, params=params, timeout=(settings.TELEGRAM_TIMEOUT_S, LONG_POLL_S + 5))
    body = response.json()
    if not body.get("ok"):
        raise RuntimeError(f"getUpdates: {response.status_code} {str(body.get('description', ''))[:120]}")
    return body.get("result", [])


def read_once(owner: str, offset: int | None) -> int | None:
    """One long poll under the lease; answers each update; returns the next offset."""
    if not leases.acquire(UPDATES_LEASE, owner, LONG_POLL_S * 3):
        return offset
    for update in get_updates(offset):
        offset = update["update_id"] + 1
        try:
            answer = handle_update(update)
        except Exception:  # noqa: BLE001 - one bad command must not stop the reader
            log.exception("telegram: command failed")
            answer = "that command failed; see the orderwatcher's log"
        if answer:
            telegram.send_message(answer)
    return offset


def start_reader(owner: str) -> threading.Thread | None:
    """The reader thread of `manage.py orderwatcher`, when TELEGRAM_COMMANDS is on."""
    if not (settings.TELEGRAM_COMMANDS and telegram.configured()):
        return None

    def loop():
        offset, backoff = None, 1.0
        while True:
            try:
                offset, backoff = read_once(owner, offset), 1.0
            except Exception as exc:  # noqa: BLE001 - Telegram or the database away: keep trying
                log.warning("telegram: reading commands failed (%s); again in %.0fs", type(exc).__name__, backoff)
                time.sleep(backoff)
                backoff = min(60.0, backoff * 2)
            finally:
                close_old_connections()

    thread = threading.Thread(target=loop, name="telegram-commands", daemon=True)
    thread.start()
    return thread
