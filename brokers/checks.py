"""`manage.py check` (which every command, `up` included, runs first): the live broker's
settings, so that a configuration that can never place an order stops the desk at start
with the variable's name, instead of failing every order at the market's open. No value
of a secret is ever shown."""

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register

LEGACY = ("SHOONYA_PASSWORD", "SHOONYA_TOTP_SECRET", "SHOONYA_VENDOR_CODE", "SHOONYA_API_KEY")
OAUTH = ("SHOONYA_CLIENT_ID", "SHOONYA_SECRET")
URLS = {"SHOONYA_BASE_URL": ("https", "http"), "SHOONYA_OAUTH_URL": ("https", "http"),
        "SHOONYA_WS_URL": ("wss", "ws")}


def totp_problem(secret: str) -> str | None:
    """What pyotp itself says of a TOTP secret (it wants base32 and at least 112 bits), or None."""
    import pyotp

    try:
        pyotp.TOTP(secret).now()
    except Exception as exc:  # noqa: BLE001 - binascii.Error, ValueError: pyotp's own words
        return f"{type(exc).__name__}: {exc}"
    return None


def shoonya_problems() -> list[tuple[str, str, str]]:
    """(id, message, hint) of every problem with the Shoonya settings."""
    problems = []
    if not settings.SHOONYA_USER_ID:
        problems.append(("E101", "ORDERDESK_BROKER=shoonya needs SHOONYA_USER_ID", "your Shoonya client id"))
    legacy = [name for name in LEGACY if getattr(settings, name)]
    oauth = [name for name in OAUTH if getattr(settings, name)]
    if legacy and len(legacy) < len(LEGACY):
        missing = ", ".join(name for name in LEGACY if name not in legacy)
        problems.append(("E102", f"QuickAuth login needs {missing} as well (set: {', '.join(legacy)})",
                         "set all of SHOONYA_PASSWORD, SHOONYA_TOTP_SECRET, SHOONYA_VENDOR_CODE and "
                         "SHOONYA_API_KEY, or none of them and use OAuth"))
    if oauth and len(oauth) < len(OAUTH):
        missing = ", ".join(name for name in OAUTH if name not in oauth)
        problems.append(("E103", f"OAuth login needs {missing} as well", "set SHOONYA_CLIENT_ID and SHOONYA_SECRET"))
    if not legacy and not oauth:
        problems.append(("E104", "no Shoonya login method: set SHOONYA_CLIENT_ID and SHOONYA_SECRET (OAuth), or "
                                 "SHOONYA_PASSWORD, SHOONYA_TOTP_SECRET, SHOONYA_VENDOR_CODE and SHOONYA_API_KEY",
                         "see README, Live broker: Shoonya"))
    if settings.SHOONYA_TOTP_SECRET and (problem := totp_problem(settings.SHOONYA_TOTP_SECRET)):
        problems.append(("E105", f"SHOONYA_TOTP_SECRET is not a usable TOTP secret ({problem})",
                         "the base32 key shown when you enabled TOTP for the account (at least 112 bits)"))
    for name, schemes in URLS.items():
        value = getattr(settings, name)
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            problems.append(("E106", f"{name} is not a {' or '.join(schemes)} URL: {value!r}",
                             f"for example the default, {schemes[0]}://api.shoonya.com/…"))
    return problems


@register()
def check_broker_settings(app_configs, **kwargs):
    if settings.ORDERDESK_BROKER != "shoonya":
        return []
    return [Error(message, hint=hint, id=f"orderdesk.{code}") for code, message, hint in shoonya_problems()]
