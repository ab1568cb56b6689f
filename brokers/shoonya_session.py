"""Shoonya credentials (from settings, i.e. the environment), logins, and the stored session.

The session lives in the database (one BrokerSession row) so that every worker and the
watcher use the same login. Nothing here logs a credential or a token.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import signals
from .models import BrokerSession, SessionKind
from .noren import Auth, NorenClient, NorenError, error_message

log = logging.getLogger("orderdesk.brokers.shoonya")

BROKER = "shoonya"
QUICKAUTH_APK_VERSION = "1.0.0"  # what the official client sends


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LoginFailed(Exception):
    """No session could be obtained; the message is the broker's or ours, never a secret."""


class LoginUnanswered(LoginFailed):
    """The login request got no usable answer (network, 5xx, garbage): not a refusal of the
    credentials, so it does not hold back the next login."""


@dataclass(frozen=True)
class Session:
    user_id: str
    kind: str
    token: str

    @property
    def auth(self) -> Auth:
        return Auth(token=self.token, oauth=self.kind == SessionKind.OAUTH)

    def __repr__(self):  # never the token
        return f"Session({self.user_id!r}, {self.kind})"


# --- credentials ----------------------------------------------------------------------------

def user_id() -> str:
    return settings.SHOONYA_USER_ID


def account_id() -> str:
    return settings.SHOONYA_ACCOUNT_ID or settings.SHOONYA_USER_ID


def legacy_configured() -> bool:
    """With these set, workers and the watcher log in by themselves (QuickAuth)."""
    return all((settings.SHOONYA_USER_ID, settings.SHOONYA_PASSWORD, settings.SHOONYA_TOTP_SECRET,
                settings.SHOONYA_VENDOR_CODE, settings.SHOONYA_API_KEY))


def oauth_configured() -> bool:
    return bool(settings.SHOONYA_USER_ID and settings.SHOONYA_CLIENT_ID and settings.SHOONYA_SECRET)


def secret_values() -> tuple[str, ...]:
    """Every configured secret and what is derived from it, for redaction."""
    values = [settings.SHOONYA_PASSWORD, settings.SHOONYA_TOTP_SECRET, settings.SHOONYA_API_KEY,
              settings.SHOONYA_SECRET]
    if settings.SHOONYA_PASSWORD:
        values.append(sha256_hex(settings.SHOONYA_PASSWORD))
    if settings.SHOONYA_API_KEY:
        values.append(sha256_hex(f"{settings.SHOONYA_USER_ID}|{settings.SHOONYA_API_KEY}"))
    return tuple(v for v in values if v)


def new_client() -> NorenClient:
    return NorenClient(settings.SHOONYA_BASE_URL, settings.BROKER_CONNECT_TIMEOUT_S,
                       settings.BROKER_READ_TIMEOUT_S, secrets=secret_values())


# --- logins ---------------------------------------------------------------------------------

def current_totp() -> str:
    import pyotp

    return pyotp.TOTP(settings.SHOONYA_TOTP_SECRET).now()


def quickauth_values() -> dict:
    uid = settings.SHOONYA_USER_ID
    return {
        "source": "API",
        "apkversion": QUICKAUTH_APK_VERSION,
        "uid": uid,
        "pwd": sha256_hex(settings.SHOONYA_PASSWORD),
        "factor2": current_totp(),
        "vc": settings.SHOONYA_VENDOR_CODE,
        "appkey": sha256_hex(f"{uid}|{settings.SHOONYA_API_KEY}"),
        "imei": settings.SHOONYA_IMEI,
    }


def gen_acs_tok_values(code: str) -> dict:
    return {
        "code": code,
        "checksum": sha256_hex(settings.SHOONYA_CLIENT_ID + settings.SHOONYA_SECRET + code),
        "uid": settings.SHOONYA_USER_ID,
    }


def oauth_login_url() -> str:
    # The official client's getOAuthURL: "<login page>?client_id=<client id>".
    return f"{settings.SHOONYA_OAUTH_URL}?client_id={settings.SHOONYA_CLIENT_ID}"


def _login(client: NorenClient, route: str, values: dict, token_field: str) -> tuple[str, dict]:
    """The new token and the whole reply. Raises LoginFailed (LoginUnanswered: no answer)."""
    try:
        reply = client.post(route, values)
    except NorenError as exc:
        raise LoginUnanswered(f"{route} failed: {exc}") from None
    # The official client takes the token when it is there (GenAcsTok's reply need not carry
    # `stat`); a `Not_Ok` reply carries the reason in `emsg`.
    token = reply.get(token_field) if isinstance(reply, dict) and reply.get("stat", "Ok") == "Ok" else None
    if not token:
        raise LoginFailed(f"{route} refused: {error_message(reply)}")
    return str(token), reply


def quick_auth(client: NorenClient) -> Session:
    """Legacy login; stores and returns the new session. Raises LoginFailed."""
    log.info("shoonya: logging in %s with QuickAuth", user_id())
    try:
        values = quickauth_values()
    except ValueError as exc:  # pyotp refuses the secret (binascii.Error is a ValueError): nothing was sent
        raise LoginFailed(f"SHOONYA_TOTP_SECRET is not a usable TOTP secret ({type(exc).__name__}: {exc})") from None
    try:
        token, _ = _login(client, "QuickAuth", values, "susertoken")
    except LoginUnanswered:
        raise  # a network blip is not a wrong password: the next call may try again
    except LoginFailed as exc:
        note_login_failure(str(exc))  # refused: wait before the next try (an account lock-out)
        raise
    return store(SessionKind.LEGACY, token)


def gen_acs_tok(client: NorenClient, code: str) -> Session:
    """OAuth: trade the login page's auth code for an access token; stores the session.
    The reply's refresh_token is not kept: the Noren API has no route that takes it (the
    official client has none either), so an expired token needs a new login."""
    code = code.strip()
    if not code:
        raise LoginFailed("no auth code given")
    client.secrets = client.secrets + (code,)
    token, reply = _login(client, "GenAcsTok", gen_acs_tok_values(code), "access_token")
    # The login page takes any account: a token for another one must not become this user's
    # session (the orders would go to the account that logged in).
    logged_in = str(reply.get("USERID") or "").strip()
    if logged_in and logged_in.upper() != user_id().strip().upper():
        raise LoginFailed(f"the login page was used by {logged_in}, but SHOONYA_USER_ID is {user_id()}: "
                          f"log in as {user_id()}")
    return store(SessionKind.OAUTH, token)


# --- the stored session ---------------------------------------------------------------------

def load() -> Session | None:
    """The valid stored session of the configured user, if any."""
    row = BrokerSession.objects.filter(broker=BROKER, user_id=user_id(), valid=True).exclude(token="").first()
    return Session(row.user_id, row.kind, row.token) if row else None


def store(kind: str, token: str) -> Session:
    now = timezone.now()
    BrokerSession.objects.update_or_create(
        broker=BROKER,
        defaults=dict(user_id=user_id(), kind=kind, token=token, valid=True, obtained_at=now,
                      invalidated_at=None, login_failed_at=None, note=""),
    )
    log.info("shoonya: new %s session stored for %s", kind, user_id())
    signals.tell_on_commit(__name__, change="stored", broker=BROKER, user=user_id(), reason=f"new {kind} session")
    return Session(user_id(), kind, token)


def invalidate(session: Session, reason: str) -> bool:
    """Marks this session invalid, unless the stored one has since been replaced."""
    with transaction.atomic():
        changed = BrokerSession.objects.filter(broker=BROKER, token=session.token, valid=True).update(
            valid=False, invalidated_at=timezone.now(), note=reason[:255])
        if changed:
            signals.tell_on_commit(__name__, change="invalidated", broker=BROKER, user=session.user_id, reason=reason)
    return bool(changed)


def note_login_failure(reason: str) -> None:
    now = timezone.now()
    updated = BrokerSession.objects.filter(broker=BROKER).update(login_failed_at=now, note=reason[:255])
    if not updated:
        BrokerSession.objects.create(broker=BROKER, user_id=user_id(), kind=SessionKind.LEGACY, token="",
                                     valid=False, login_failed_at=now, note=reason[:255])
    signals.tell_on_commit(__name__, change="login_failed", broker=BROKER, user=user_id(), reason=reason)


def login_blocked() -> str | None:
    """Why an automatic login must wait (the last one failed recently), or None."""
    row = BrokerSession.objects.filter(broker=BROKER).values("login_failed_at", "note").first()
    if not row or row["login_failed_at"] is None:
        return None
    wait = timedelta(seconds=settings.SHOONYA_LOGIN_RETRY_S) - (timezone.now() - row["login_failed_at"])
    if wait.total_seconds() <= 0:
        return None
    return f"the last login failed ({row['note']}); next attempt in {wait.total_seconds():.0f}s"
