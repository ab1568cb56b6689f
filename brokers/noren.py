"""A small client for the Noren OMS REST API (Shoonya's broker API), on `requests`.

The wire format, as the official client (`norenrestapioauth`, module NorenRestApiPy) sends it:
every call is a POST to `<base>/<Route>` whose body is the raw string `jData=<json.dumps(values)>`
(not form-encoded: values that may hold `&` or `+`, such as `tsym`, are quote_plus'ed inside
the JSON by the caller). A legacy QuickAuth session appends `&jKey=<susertoken>`; an OAuth
session sends `Authorization: Bearer <access_token>` with `Content-Type: application/json;
charset=utf-8` instead. Login calls carry neither.

Timeouts always apply and nothing is retried here: a PlaceOrder sent twice is two orders.
No request body, token or reply body reaches a log or an exception message unredacted.
"""

import json
import logging
import re
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

log = logging.getLogger("orderdesk.brokers.noren")

OAUTH_CONTENT_TYPE = "application/json; charset=utf-8"
SESSION_EXPIRED_MARKERS = ("session expired", "invalid session key")
NO_DATA_MARKER = "no data"
SNIPPET_CHARS = 160

# Keys whose values are secrets in request or reply bodies, whatever the route.
_SECRET_KEYS = ("pwd", "appkey", "factor2", "checksum", "code", "susertoken", "access_token",
                "refresh_token", "accesstoken", "jKey")
_SECRET_JSON = re.compile(r'("(?:%s)"\s*:\s*")[^"]*(")' % "|".join(_SECRET_KEYS), re.IGNORECASE)
_SECRET_FORM = re.compile(r"(jKey=)[^&\s]*", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Text fit for a log line: secret fields masked, and any known secret value too."""
    text = _SECRET_JSON.sub(r"\1***\2", text)
    text = _SECRET_FORM.sub(r"\1***", text)
    text = _BEARER.sub(r"\1***", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class Auth:
    """How a call proves the session: a legacy jKey or an OAuth bearer token."""

    token: str
    oauth: bool

    def __repr__(self):  # never the token
        return f"Auth(oauth={self.oauth})"


class NorenError(Exception):
    """Base of the transport errors; messages are safe to log."""


class NotSent(NorenError):
    """The request never left this machine (the connection could not be opened)."""


class NoAnswer(NorenError):
    """The request may have reached the broker, but no usable answer came back: a read
    timeout, a connection lost after sending, a 5xx, or a body that is not Noren JSON."""


class Refused(NorenError):
    """An HTTP 4xx without a Noren reply: the server refused to process the request."""

    def __init__(self, message: str, http_status: int):
        super().__init__(message)
        self.http_status = http_status


def encode_body(values: dict, auth: Auth | None) -> str:
    body = "jData=" + json.dumps(values)
    if auth is not None and not auth.oauth:
        body += f"&jKey={auth.token}"
    return body


def headers_for(auth: Auth | None) -> dict:
    if auth is None or not auth.oauth:
        return {}
    return {"Authorization": f"Bearer {auth.token}", "Content-Type": OAUTH_CONTENT_TYPE}


def _not_sent(exc: requests.RequestException) -> bool:
    """True only when the TCP connection was never established, so not one byte of the
    request was written: a connect timeout, a refused connection, a name that does not
    resolve. A reset or a timeout after connecting may come after the broker read the order."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.ProxyError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, NewConnectionError)
    return False


class NorenClient:
    def __init__(self, base_url: str, connect_timeout: float, read_timeout: float,
                 secrets: tuple[str, ...] = ()):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.secrets = secrets  # values to mask in any message this client writes
        self.http = requests.Session()
        # max_retries=0: urllib3 never re-sends a request on its own.
        adapter = HTTPAdapter(max_retries=0)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)

    def post(self, route: str, values: dict, auth: Auth | None = None):
        """One POST; returns the decoded JSON reply (a dict or a list). Raises NotSent,
        NoAnswer or Refused; a Noren `Not_Ok` reply is returned, not raised."""
        url = f"{self.base_url}/{route}"
        started = time.monotonic()
        try:
            response = self.http.post(url, data=encode_body(values, auth), headers=headers_for(auth),
                                      timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            what = redact(f"{type(exc).__name__}: {exc}", self.secrets)
            log.warning("noren %s: no reply after %.2fs: %s", route, time.monotonic() - started, what)
            if _not_sent(exc):
                raise NotSent(f"{route} not sent, cannot connect to the broker: {what}") from None
            raise NoAnswer(f"{route}: no reply from the broker: {what}") from None
        status = response.status_code
        log.debug("noren %s: HTTP %s in %.3fs", route, status, time.monotonic() - started)
        try:
            reply = response.json()
        except ValueError:
            reply = None
        # Redacted before it is cut: a cut can fall inside a token and hide it from the patterns.
        snippet = redact(response.text[:65536], self.secrets)[:SNIPPET_CHARS].replace("\n", " ")
        if status >= 500:
            raise NoAnswer(f"{route}: HTTP {status} from the broker: {snippet!r}")
        if 200 <= status < 300 and isinstance(reply, (dict, list)):
            return reply
        if 400 <= status < 500:
            if _is_noren_reply(reply):  # a Noren answer that came with a 4xx status
                return reply
            raise Refused(f"{route}: HTTP {status} from the broker: {snippet!r}", status)
        # A 2xx that is not JSON, or a redirect (a POST may have been processed before one).
        raise NoAnswer(f"{route}: unreadable reply (HTTP {status}): {snippet!r}")


def _is_noren_reply(reply) -> bool:
    return isinstance(reply, dict) and "stat" in reply


# --- reading replies ----------------------------------------------------------------------

def is_ok(reply) -> bool:
    return isinstance(reply, dict) and reply.get("stat") == "Ok"


def error_message(reply) -> str:
    if isinstance(reply, dict):
        return str(reply.get("emsg") or reply.get("stat") or "no message")
    return "no message"


def is_not_ok(reply) -> bool:
    return isinstance(reply, dict) and reply.get("stat") == "Not_Ok"


def is_session_expired(reply) -> bool:
    """`{"stat": "Not_Ok", "emsg": "Session Expired :  Invalid Session Key"}`."""
    message = error_message(reply).lower()
    return is_not_ok(reply) and any(marker in message for marker in SESSION_EXPIRED_MARKERS)


def is_no_data(reply) -> bool:
    """An empty book or position list: `{"stat": "Not_Ok", "emsg": "Error Occurred : 5 \\"no data\\""}`.
    A successful read of nothing, not an error."""
    return is_not_ok(reply) and NO_DATA_MARKER in error_message(reply).lower()
