"""Parse and validate an alert body into plain values, with DRF-style field errors.

Hand-written rather than a DRF serializer: it runs on every webhook inside TradingView's
3-second budget, and every rule here is one a trader should be able to read.
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings

from .models import EXCHANGE_CODES, ExecutionType, OrderType, Product, Side

EXCHANGES = EXCHANGE_CODES
PRICE_MAX_DIGITS = 14
PRICE_DECIMALS = 4
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMALS)
TEXT_MAX = 64
MAX_DEPTH = 8  # object -> legs -> leg -> value is 4; anything much deeper is junk
_QTY_TEXT = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes "١٠"
# ASCII decimal text: Decimal() also takes "१००", "1_000", "NaN" and surrounding junk.
_PRICE_TEXT = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9&_.\-]{0,63}$")
_ID_RE = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, no spaces


class InvalidAlert(Exception):
    def __init__(self, errors: dict):
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True)
class LegRequest:
    leg: int
    symbol: str
    side: str
    qty: int | None  # None when the leg gives lots (orders.legs turns them into a qty)
    order_type: str
    product: str
    price: Decimal | None
    trigger_price: Decimal | None
    lots: int | None = None
    target_qty: int | None = None  # instead of side and qty: the position to reach (orders.targets)
    execution_type: str | None = None  # a target leg's own, computed; else the alert's


@dataclass(frozen=True)
class AlertRequest:
    strategy: str
    secret: str
    alert_id: str | None
    execution_type: str | None  # None only when every leg gives target_qty
    exchange: str
    legs: tuple[LegRequest, ...]
    sent_at: datetime | None = None


def _reject_constant(name):
    raise ValueError(f"{name} is not a number")


def parse_json(raw: bytes) -> dict:
    """The body as a JSON object; prices keep every digit as Decimal; NaN/Infinity refused."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidAlert({"body": ["must be UTF-8 encoded JSON"]}) from None
    if not text.strip():
        raise InvalidAlert({"body": ["is empty: send a JSON object"]})
    try:
        data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidAlert({"body": [f"is not valid JSON: {str(exc)[:120]}"]}) from None
    except InvalidOperation:  # Decimal refuses an exponent beyond its range, 1e99999999999999999999
        raise InvalidAlert({"body": ["is not valid JSON: a number's exponent is out of range"]}) from None
    if not isinstance(data, dict):
        raise InvalidAlert({"body": ["must be a JSON object"]})
    _check_structure(data)
    return data


def _check_structure(data: dict) -> None:
    """Refuse what would break code further on: nesting deep enough to exhaust the stack
    when the payload is printed or stored, and unpaired surrogates ("\\ud800") or NULs,
    valid JSON that a database or a hash cannot take."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidAlert({"body": [f"nests deeper than {MAX_DEPTH} levels"]})
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            for text in (key, value):
                if isinstance(text, str):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        raise InvalidAlert({"body": ["contains an unpaired surrogate escape"]}) from None
                    if "\x00" in text:  # PostgreSQL text and jsonb cannot hold NUL
                        raise InvalidAlert({"body": ["contains a NUL character"]})
            if isinstance(value, dict | list):
                stack.append((value, depth + 1))


def _text(data: dict, key: str, errors: dict, *, required=True, pattern=None) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            errors[key] = ["This field is required."]
        return None
    if not isinstance(value, str) or not value.strip():
        errors[key] = ["must be a non-empty string"]
        return None
    value = value.strip()
    if len(value) > TEXT_MAX:
        errors[key] = [f"must be at most {TEXT_MAX} characters"]
        return None
    if pattern is not None and not pattern.match(value):
        errors[key] = ["contains characters that are not allowed"]
        return None
    return value


def _choice(data: dict, key: str, choices, errors: dict, *, default=None) -> str | None:
    value = data.get(key, default)
    if value is None:
        errors[key] = ["This field is required."]
        return None
    normalized = value.strip().upper() if isinstance(value, str) else None
    if normalized not in choices:
        errors[key] = [f"{str(value)[:32]!r} is not one of {', '.join(choices)}"]
        return None
    return normalized


def _qty(value, errors: dict, key: str = "qty") -> int | None:
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str) and _QTY_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        # 1e999999999 is whole too: clamp before int() builds a billion-digit number.
        bound = settings.MAX_ORDER_QTY + 1
        value = int(max(-bound, min(bound, value)))
    if not isinstance(value, int):
        errors[key] = ["must be a whole number"]
        return None
    if value <= 0:
        errors[key] = ["must be greater than 0"]
        return None
    if value > settings.MAX_ORDER_QTY:
        errors[key] = [f"must be at most {settings.MAX_ORDER_QTY}"]
        return None
    return value


def _price(value, key: str, errors: dict) -> Decimal | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
            raise InvalidOperation
        if isinstance(value, str) and not _PRICE_TEXT.fullmatch(value.strip()):
            raise InvalidOperation
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, ValueError):
        errors[key] = ["must be a number"]
        return None
    if not number.is_finite():
        errors[key] = ["must be a finite number"]
        return None
    if number <= 0:
        errors[key] = ["must be greater than 0"]
        return None
    # Exact comparisons, no context arithmetic: normalize() raised Overflow on 1e999999999
    # and rounded 1e-999999999 down to a price of 0.
    if number >= 10 ** (PRICE_MAX_DIGITS - PRICE_DECIMALS) or number.quantize(PRICE_QUANTUM) != number:
        errors[key] = [f"must have at most {PRICE_MAX_DIGITS - PRICE_DECIMALS} digits before "
                       f"and {PRICE_DECIMALS} after the decimal point"]
        return None
    return number


def _leg(index: int, data, errors: dict) -> LegRequest | None:
    if not isinstance(data, dict):
        errors["non_field_errors"] = ["each leg must be a JSON object"]
        return None
    symbol = _text(data, "symbol", errors, pattern=_SYMBOL_RE)
    if symbol is not None:
        symbol = symbol.upper()  # exchange symbols are upper case; the guard compares them
    side = qty = lots = target = None
    if data.get("target_qty") is not None:
        target = _target(data["target_qty"], errors)
        given = [key for key in ("side", "qty", "lots") if data.get(key) is not None]
        if given:
            errors["target_qty"] = [f"give target_qty instead of {', '.join(given)}: the side and the quantity "
                                    "are computed from the position"]
    else:
        side = _choice(data, "side", Side.values, errors)
        if data.get("lots") is None:
            qty = _qty(data.get("qty"), errors)
        elif data.get("qty") is not None:
            errors["lots"] = ["give qty or lots, not both"]
        else:
            lots = _qty(data["lots"], errors, "lots")
    order_type = _choice(data, "order_type", OrderType.values, errors, default=OrderType.MARKET)
    product = _choice(data, "product", Product.values, errors)
    price = _price(data.get("price"), "price", errors)
    trigger = _price(data.get("trigger_price"), "trigger_price", errors)
    if order_type in (OrderType.LIMIT, OrderType.SL) and price is None and "price" not in errors:
        errors["price"] = [f"is required for {order_type} orders"]
    if order_type in (OrderType.MARKET, OrderType.SL_M) and price is not None:
        errors["price"] = [f"must be null for {order_type} orders (they carry no limit price)"]
    if order_type in (OrderType.SL, OrderType.SL_M) and trigger is None and "trigger_price" not in errors:
        errors["trigger_price"] = [f"is required for {order_type} orders"]
    if order_type in (OrderType.MARKET, OrderType.LIMIT) and trigger is not None:
        errors["trigger_price"] = [f"must be null for {order_type} orders"]
    if errors:
        return None
    return LegRequest(index + 1, symbol, side, qty, order_type, product, price, trigger, lots, target)


_SIGNED_TEXT = re.compile(r"-?[0-9]{1,12}")


def _target(value, errors: dict) -> int | None:
    """A signed whole number of units: 10 long, -10 short, 0 flat."""
    if isinstance(value, str) and _SIGNED_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    elif isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        bound = settings.MAX_ORDER_QTY + 1
        value = int(max(-bound, min(bound, value)))
    if isinstance(value, bool) or not isinstance(value, int):
        errors["target_qty"] = ["must be a whole number: 10 long, -10 short, 0 flat"]
        return None
    if abs(value) > settings.MAX_ORDER_QTY:
        errors["target_qty"] = [f"must be between -{settings.MAX_ORDER_QTY} and {settings.MAX_ORDER_QTY}"]
        return None
    return value


def _timestamp(value, errors: dict) -> datetime | None:
    """ISO 8601 with an offset or Z (TradingView's {{timenow}}: 2026-12-01T09:15:00Z)."""
    if value is None:
        return None
    moment = None
    if isinstance(value, str) and 10 <= len(value.strip()) <= 40:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None or moment.utcoffset() is None:
        errors["sent_at"] = ["must be an ISO 8601 time with an offset or Z, e.g. 2026-12-01T09:15:00Z"]
        return None
    return moment


def validate_alert(data: dict, *, with_secret: bool = True) -> AlertRequest:
    """All field errors at once, or a clean AlertRequest. `with_secret=False`: a signed-in
    user's manual order (the dashboard), authorised by permission, not by the webhook secret."""
    errors: dict = {}
    strategy = _text(data, "strategy", errors)
    secret = data.get("secret") if with_secret else ""
    if with_secret and (not isinstance(secret, str) or not secret):
        errors["secret"] = ["This field is required."]
    alert_id = _text(data, "alert_id", errors, required=False, pattern=_ID_RE)
    legs_data = data.get("legs")
    all_targets = isinstance(legs_data, list) and bool(legs_data) and all(
        isinstance(leg, dict) and leg.get("target_qty") is not None for leg in legs_data)
    execution_type = None
    if not all_targets or data.get("execution_type") is not None:
        execution_type = _choice(data, "execution_type", ExecutionType.values, errors)
    exchange = _choice(data, "exchange", EXCHANGES, errors)
    sent_at = _timestamp(data.get("sent_at"), errors)
    legs: list[LegRequest] = []
    if not isinstance(legs_data, list) or not legs_data:
        errors["legs"] = ["must be a non-empty list of legs"]
    elif len(legs_data) > settings.MAX_LEGS_PER_ALERT:
        errors["legs"] = [f"at most {settings.MAX_LEGS_PER_ALERT} legs per alert"]
    else:
        leg_errors = []
        for index, leg_data in enumerate(legs_data):
            leg_error: dict = {}
            leg = _leg(index, leg_data, leg_error)
            leg_errors.append(leg_error)
            if leg:
                legs.append(leg)
        if any(leg_errors):
            errors["legs"] = leg_errors
    if errors:
        raise InvalidAlert(errors)
    return AlertRequest(strategy, secret, alert_id, execution_type, exchange, tuple(legs), sent_at)


def redacted(data):
    """The payload with every "secret" key (any case, any level) replaced, for storing."""
    if isinstance(data, dict):
        return {k: "***" if isinstance(k, str) and k.strip().lower() == "secret" else redacted(v)
                for k, v in data.items()}
    if isinstance(data, list):
        return [redacted(v) for v in data]
    return data


# The key double-quoted (JSON), single-quoted (a pasted Python dict) or bare (a JavaScript
# object literal); the value quoted either way, or up to the next separator.
_SECRET_IN_TEXT = re.compile(r"""((["']?)secret\2\s*[:=]\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^,}&\s]*)""",
                             re.IGNORECASE)


def redact_text(text: str, cap: int = 4096) -> str:
    """A raw body we could not parse, with anything that looks like the secret hidden."""
    return _SECRET_IN_TEXT.sub(r'\1"***"', text[:cap])


def validate_modification(data) -> tuple[dict, dict]:
    """({qty, price, trigger_price} given, {field: problems}) of a modification's body, with the
    intake's own rules for each number (JSON numbers arrive as Decimals, as at the webhook)."""
    if not isinstance(data, dict):
        return {}, {"non_field_errors": ["the body must be an object with price, trigger_price and/or qty"]}
    errors: dict = {}
    unknown = sorted(set(data) - {"qty", "price", "trigger_price"})
    if unknown:
        errors["non_field_errors"] = [f"unknown field(s): {', '.join(map(str, unknown))}"]
    values = {}
    if data.get("qty") is not None:
        values["qty"] = _qty(data["qty"], errors)
    for key in ("price", "trigger_price"):
        if data.get(key) is not None:
            values[key] = _price(data[key], key, errors)
    if not values and not errors:
        errors["non_field_errors"] = ["give price, trigger_price and/or qty"]
    return ({k: v for k, v in values.items() if v is not None}, errors)
