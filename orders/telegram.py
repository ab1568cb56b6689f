"""Telegram's Bot API, as much as the desk uses: sendMessage. Never raises; never logs the token."""

from dataclasses import dataclass

import requests
from django.conf import settings


@dataclass(frozen=True)
class Sent:
    ok: bool
    retry_after_s: float | None = None  # Telegram's 429: wait this long before the next message
    error: str = ""


def configured() -> bool:
    return bool(settings.TELEGRAM_BOT_TOKEN and settings.TELEGRAM_CHAT_ID)


def send_message(text: str) -> Sent:
    url = f"{settings.TELEGRAM_API_BASE.rstrip('/')}/bot{settings.TELEGRAM_BOT_TOKEN}/sendMessage"
    timeout = settings.TELEGRAM_TIMEOUT_S
    try:
        response = requests.post(url, json={"chat_id": settings.TELEGRAM_CHAT_ID, "text": text[:4096],
                                            "disable_web_page_preview": True}, timeout=(timeout, timeout))
    except requests.RequestException as exc:
        return Sent(False, error=f"{type(exc).__name__}")  # the message can carry the URL, and so the token
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and body.get("ok"):
        return Sent(True)
    if response.status_code == 429:
        retry = (body.get("parameters") or {}).get("retry_after", 5)
        return Sent(False, retry_after_s=float(retry), error="429 Too Many Requests")
    return Sent(False, error=f"{response.status_code} {str(body.get('description', ''))[:200]}")
