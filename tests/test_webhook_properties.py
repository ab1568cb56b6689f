"""Property: whatever body arrives, the webhook answers 2xx or 4xx, in JSON, and leaves
exactly one record of the delivery: an Alert for a 2xx, a RejectedAlert for a 4xx.

Bodies arrive as TradingView sends them (text/plain): mutations of a valid alert, arbitrary
JSON documents and arbitrary bytes, carrying what breaks JSON intakes: exponents beyond
Decimal's range, integers over Python's 4300-digit parsing limit, deep nesting, NULs, lone
surrogates, duplicate keys, 10k legs, and the wrong type in every field.
"""

import json

import pytest
from django.db import transaction
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from orders.models import Alert, Order, RejectedAlert
from tests.factories import TEST_SECRET

pytestmark = pytest.mark.django_db

URL = "/api/webhook/"


class Raw(str):
    """JSON text written as is: numbers no Python value dumps to, and nesting too deep to
    build as Python values."""


class Obj(tuple):
    """A JSON object as (key, value) pairs, so that a key can repeat."""


def dump(node, ascii_only: bool) -> str:
    if isinstance(node, Raw):
        return node
    if isinstance(node, Obj):
        return "{" + ",".join(f"{dump(k, ascii_only)}:{dump(v, ascii_only)}" for k, v in node) + "}"
    if isinstance(node, list):
        return "[" + ",".join(dump(v, ascii_only) for v in node) + "]"
    return json.dumps(node, ensure_ascii=ascii_only)


def encode(node, ascii_only: bool) -> bytes:
    # Not ASCII-only: a lone surrogate goes out as the (invalid UTF-8) bytes that encode it.
    return dump(node, ascii_only).encode("utf-8", "surrogatepass")


LEGS = Raw("[]")  # stands for the generated legs until they are built
VALID_LEG = (("symbol", "RELIANCE-EQ"), ("side", "BUY"), ("qty", 10), ("order_type", "MARKET"), ("product", "MIS"))
VALID_ALERT = (("strategy", "demo"), ("secret", TEST_SECRET), ("execution_type", "ENTRY"), ("exchange", "NSE"),
               ("legs", LEGS))
VALID_BODY = encode(Obj((*VALID_ALERT[:-1], ("legs", [Obj(VALID_LEG)]))), ascii_only=True)


def nested(depth: int, kind: str) -> Raw:
    return Raw("[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth)


def many(item: Obj | int, count: int) -> Raw:
    return Raw("[" + ",".join([dump(item, True)] * count) + "]")


strings = st.text(st.characters() | st.characters(categories=["Cs"]) | st.just("\x00"), max_size=12)
special_strings = st.sampled_from([
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "\ud83d\ude80", "🚀-EQ", "ＲＥＬＩＡＮＣＥ", "१००", "²", "x" * 70,
    "BUY", " sell ", "LIMIT", "SL-M", "MIS", "NSE", "ENTRY", "EXIT", "demo", "demo ", TEST_SECRET,
    "1e99999999999999999999",
])
json_numbers = st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,24})?", fullmatch=True).map(Raw)
extreme_numbers = st.sampled_from([
    "1e99999999999999999999", "-1E+99999999999999999999", "1e-99999999999999999999", "1E999999999999999999",
    "1e-999999999", "-0", "0.00001", "10.0", "1e1", "NaN", "Infinity", "-Infinity",
]).map(Raw) | st.sampled_from([
    # (sign, digits, fraction digits): 4300 digits is the most int() parses, so 4301 is a ValueError
    ("", 4300, 0), ("-", 4300, 0), ("", 4301, 0), ("", 1, 5000), ("", 11, 4),
]).map(lambda n: Raw(n[0] + "9" * n[1] + ("." + "9" * n[2] if n[2] else "")))
nestings = st.builds(nested, st.sampled_from([1, 6, 7, 8, 9, 50, 1000, 5000, 20_000]),
                     st.sampled_from(["array", "object"]))
# 10k empty or numeric legs fit in a body; 10k real ones do not (413); 20 is the most allowed.
big_lists = st.sampled_from([(Obj(()), 10_000), (1, 10_000), (Obj(VALID_LEG), 20), (Obj(VALID_LEG), 21),
                             (Obj(VALID_LEG), 10_000)]).map(lambda spec: many(*spec))
scalars = (st.none() | st.booleans() | st.integers() | json_numbers | extreme_numbers | strings | special_strings)
field_names = st.sampled_from(["strategy", "secret", "Secret", "alert_id", "execution_type", "exchange", "legs",
                               "symbol", "side", "qty", "order_type", "product", "price", "trigger_price"])
keys = field_names | strings | special_strings
json_values = st.recursive(
    scalars | nestings | big_lists,
    lambda children: st.lists(children, max_size=4) | st.lists(st.tuples(keys, children), max_size=4).map(Obj),
    max_leaves=10,
)
# Values a sender could mean, so that mutated alerts are often still valid and get a 201.
plausible = {
    "alert_id": st.from_regex(r"[\x21-\x7e]{1,70}", fullmatch=True),
    "execution_type": st.sampled_from(["ENTRY", "EXIT", "entry"]),
    "exchange": st.sampled_from(["NSE", "NFO", "BSE", "MCX", "nse"]),
    "symbol": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9&_.\-]{0,70}", fullmatch=True),
    "side": st.sampled_from(["BUY", "SELL", "sell"]),
    "qty": st.integers(-5, 2_000_000) | st.sampled_from(["10", " 7 ", Raw("1e3"), Raw("5.0")]),
    "order_type": st.sampled_from(["MARKET", "LIMIT", "SL", "SL-M"]),
    "product": st.sampled_from(["MIS", "CNC", "NRML"]),
    "price": st.decimals(min_value=0, max_value=10**11, places=5).map(lambda d: Raw(str(d))) | st.none(),
    "trigger_price": st.decimals(min_value=0, max_value=10**11, places=5).map(str) | st.none(),
    "legs": big_lists | st.just([]),
}


@st.composite
def mutated_alerts(draw) -> Obj:
    """A valid alert of 1-3 legs with 0-5 mutations, each on the alert or on one leg: a field
    replaced (by a plausible or an arbitrary value), deleted, repeated or added."""
    objects = [list(VALID_ALERT)] + [list(VALID_LEG) for _ in range(draw(st.integers(1, 3)))]
    for _ in range(draw(st.integers(0, 5))):
        pairs = draw(st.sampled_from(objects))
        mutation = draw(st.sampled_from(["replace", "delete", "repeat", "add"]))
        if mutation in ("replace", "delete", "repeat") and pairs:
            index = draw(st.integers(0, len(pairs) - 1))
            key = pairs[index][0]
            value = draw(plausible.get(key, st.nothing()) | json_values)
            if mutation == "replace":
                pairs[index] = (key, value)
            elif mutation == "delete":
                del pairs[index]
            else:
                pairs.insert(draw(st.integers(0, len(pairs))), (key, value))
        else:
            key = draw(keys)
            pairs.append((key, draw(plausible.get(key, st.nothing()) | json_values)))
    legs = [Obj(leg) for leg in objects[1:]]
    return Obj((key, legs if value is LEGS else value) for key, value in objects[0])


def post_and_check(client, body: bytes) -> None:
    """Posts one body in its own rolled-back transaction, so that every example starts from
    the same database: only the strategy, no orders, no positions."""
    with transaction.atomic():
        response = client.post(URL, data=body, content_type="text/plain; charset=utf-8")
        status = response.status_code
        event(f"status {status}")  # pytest --hypothesis-show-statistics: how often each answer came
        assert 200 <= status < 300 or 400 <= status < 500, (status, response.content[:500], body[:300])
        assert response["Content-Type"] == "application/json"
        reply = response.json()
        if status < 300:
            assert status == 201, reply  # 200 is a repeated alert_id: impossible in an empty database
            assert RejectedAlert.objects.count() == 0
            alert = Alert.objects.get()  # reads the stored payload back
            assert alert.payload["secret"] == "***"
            assert Order.objects.count() == len(reply["orders"]) >= 1
        else:
            assert (Alert.objects.count(), Order.objects.count()) == (0, 0)
            assert RejectedAlert.objects.get().status_code == status
        transaction.set_rollback(True)


# Function-scoped fixtures are shared by every example: safe here, because each example rolls
# back what it wrote (post_and_check) and the strategy and the client are only read. Slow
# generation is the point: 10k legs, 20k levels of nesting.
examples = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def valid_alert_with(key: str, value) -> Obj:
    return Obj((*VALID_ALERT[:-1], ("legs", [Obj(VALID_LEG)]), (key, value)))


@settings(examples, max_examples=150)
@given(alert=mutated_alerts(), ascii_only=st.booleans())
@example(alert=valid_alert_with("note", Raw("1e99999999999999999999")), ascii_only=True)  # 400: beyond Decimal
@example(alert=valid_alert_with("note", Raw("1E999999999999999999")), ascii_only=True)  # 201: stored as text
@example(alert=valid_alert_with("note", Raw("9" * 4300)), ascii_only=True)  # 201: a JSON number in the JSONField
@example(alert=valid_alert_with("note", Raw("9" * 4301)), ascii_only=True)  # 400: over int()'s limit
@example(alert=valid_alert_with("secret", "not-the-secret"), ascii_only=True)  # 401: the last duplicate wins
@example(alert=valid_alert_with("legs", many(Obj(()), 10_000)), ascii_only=True)  # 400: 10k legs
def test_mutated_alerts(strategy, client, alert, ascii_only):
    post_and_check(client, encode(alert, ascii_only))


@settings(examples, max_examples=100)
@given(document=json_values, ascii_only=st.booleans())
def test_arbitrary_json_documents(strategy, client, document, ascii_only):
    post_and_check(client, encode(document, ascii_only))


@settings(examples, max_examples=100)
@given(body=st.binary(max_size=300)
       | st.integers(0, len(VALID_BODY)).map(lambda n: VALID_BODY[:n])
       | st.tuples(st.integers(0, len(VALID_BODY) - 1), st.binary(min_size=1, max_size=3)).map(
           lambda cut: VALID_BODY[:cut[0]] + cut[1] + VALID_BODY[cut[0] + 1:]))
def test_arbitrary_bytes_and_damaged_alerts(strategy, client, body):
    post_and_check(client, body)
