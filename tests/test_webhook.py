"""The webhook contract: POST /api/webhook/ (status codes, bodies, rows written, queue)."""

import json
from decimal import Decimal

import pytest
from django.conf import settings
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from orders import queue, services
from orders.models import Alert, Order, OrderEvent, RejectedAlert
from orders.validation import validate_alert
from tests.factories import TEST_SECRET, StrategyFactory

pytestmark = pytest.mark.django_db

URL = "/api/webhook/"
LIMIT = settings.WEBHOOK_MAX_BYTES


def leg(**fields):
    return {"symbol": "RELIANCE-EQ", "side": "BUY", "qty": 10, "order_type": "MARKET", "product": "MIS", **fields}


def queued():
    """(func, args) of every task waiting in the django-q2 ORM queue."""
    return [(t["func"], t["args"]) for t in (SignedPackage.loads(q.payload) for q in OrmQ.objects.order_by("id"))]


def submissions(*command_ids):
    return [("orders.tasks.submit_order", (c,)) for c in command_ids]


def error_at(response, *path):
    node = response.json()["errors"]
    for key in path:
        node = node[key]
    assert isinstance(node, list) and node and all(isinstance(m, str) for m in node), node
    return node


def counts():
    return Alert.objects.count(), Order.objects.count(), OrderEvent.objects.count(), OrmQ.objects.count()


def stored_text():
    """Everything the intake stored that could hold a copy of the secret."""
    rows = [json.dumps(a.payload) for a in Alert.objects.all()]
    rows += [f"{r.reason} {r.body} {r.strategy_name}" for r in RejectedAlert.objects.all()]
    return "\n".join(rows)


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "text/plain; charset=utf-8"])
def test_registers_every_leg_as_created_and_queues_it(strategy, alert_body, post_alert, content_type):
    legs = [
        leg(),
        leg(side="SELL", qty=3, order_type="LIMIT", price=2950.05, product="CNC"),
        leg(symbol="SBIN-EQ", order_type="SL", price=801.5, trigger_price=800.25),
        leg(symbol="INFY-EQ", order_type="SL-M", trigger_price="1500.1", product="NRML"),
    ]
    response = post_alert(alert_body(legs=legs, alert_id="tv-1"), content_type=content_type)

    assert response.status_code == 201, response.content
    alert = Alert.objects.get()
    orders = list(alert.orders.order_by("leg"))
    assert response.json() == {
        "alert_id": "tv-1",
        "orders": [
            {"command_id": o.command_id, "leg": i, "slice": 1, "symbol": o.symbol, "side": o.side, "qty": o.qty,
             "status": "CREATED", "tag": ""}
            for i, o in enumerate(orders, start=1)
        ],
    }
    assert (alert.strategy, alert.source, alert.actor, alert.client_supplied_id) == (strategy, "webhook", "webhook", True)
    assert alert.sender_ip == "127.0.0.1"
    assert [(o.symbol, o.side, o.qty, o.order_type, o.price, o.trigger_price, o.product) for o in orders] == [
        ("RELIANCE-EQ", "BUY", 10, "MARKET", None, None, "MIS"),
        ("RELIANCE-EQ", "SELL", 3, "LIMIT", Decimal("2950.05"), None, "CNC"),
        ("SBIN-EQ", "BUY", 10, "SL", Decimal("801.5"), Decimal("800.25"), "MIS"),
        ("INFY-EQ", "BUY", 10, "SL-M", None, Decimal("1500.1"), "NRML"),
    ]
    assert {(o.strategy, o.source, o.execution_type, o.exchange, o.status, o.tag) for o in orders} == {
        (strategy, "webhook", "ENTRY", "NSE", "CREATED", "")
    }
    assert [list(o.events.values_list("kind", "actor")) for o in orders] == [[("CREATED", "webhook")]] * 4
    assert alert.payload["secret"] == "***"
    assert alert.payload["legs"][1]["price"] == "2950.05"  # kept as the exact decimal text
    assert TEST_SECRET not in stored_text()
    assert queued() == submissions(*(o.command_id for o in orders))


def test_url_without_trailing_slash_and_lower_case_symbol(strategy, alert_body, client):
    response = client.post("/api/webhook", data=json.dumps(alert_body(legs=[leg(symbol="sbin-eq")])),
                           content_type="text/plain")
    assert response.status_code == 201
    assert response.json()["orders"][0]["symbol"] == Order.objects.get().symbol == "SBIN-EQ"


def test_generated_alert_id_when_client_sends_none(strategy, alert_body, post_alert):
    first, second = post_alert(alert_body()), post_alert(alert_body())
    assert first.status_code == second.status_code == 201
    assert first.json()["alert_id"] != second.json()["alert_id"]
    assert Order.objects.count() == 2 and not Alert.objects.filter(client_supplied_id=True).exists()


def test_repeated_alert_id_returns_the_original_orders_and_registers_nothing(strategy, alert_body, post_alert):
    first = post_alert(alert_body(alert_id="tv-42", legs=[leg(), leg(symbol="SBIN-EQ")]))
    assert first.status_code == 201
    before = counts()

    again = post_alert(alert_body(alert_id="tv-42", legs=[leg(qty=99)]))  # a different body changes nothing

    assert again.status_code == 200
    assert again.json() == first.json()
    assert counts() == before


def test_same_alert_id_under_another_strategy_is_a_new_alert(strategy, alert_body, post_alert):
    StrategyFactory(name="other")
    assert post_alert(alert_body(alert_id="k")).status_code == 201
    assert post_alert(alert_body(alert_id="k", strategy="other")).status_code == 201
    assert Alert.objects.filter(alert_id="k").count() == 2


def test_disabled_strategy_registers_failed_orders_and_queues_nothing(strategy, alert_body, post_alert):
    strategy.enabled = False
    strategy.save()
    response = post_alert(alert_body(legs=[leg(), leg(symbol="SBIN-EQ")]))
    assert response.status_code == 201
    assert [(o["status"], o["tag"]) for o in response.json()["orders"]] == [
        ("FAILED", "GUARD_BLOCKED:STRATEGY_DISABLED")
    ] * 2
    assert set(Order.objects.values_list("status", "tag")) == {("FAILED", "GUARD_BLOCKED:STRATEGY_DISABLED")}
    assert queued() == []


def test_webhook_does_no_broker_io(strategy, alert_body, post_alert, monkeypatch):
    def no_broker(*args, **kwargs):
        raise AssertionError("the webhook must not touch the broker")

    # The registry last: a module first imported here must not bind the patched function for good.
    for target in ("orders.submission.get_broker", "orders.watcher.get_broker",
                   "brokers.paper.PaperBroker.place", "brokers.paper.PaperBroker.order_book",
                   "brokers.paper.PaperBroker.positions", "brokers.registry.get_broker"):
        monkeypatch.setattr(target, no_broker)
    assert post_alert(alert_body()).status_code == 201


def test_answers_json_whatever_the_accept_header(strategy, alert_body, client):
    response = client.post(URL, data=json.dumps(alert_body()), content_type="text/plain", headers={"accept": "text/html"})
    assert response.status_code == 201 and response.json()["orders"][0]["status"] == "CREATED"


# --- enqueue and the intake transaction -------------------------------------------------


def test_redis_like_queue_enqueues_only_on_commit(strategy, alert_body, post_alert, monkeypatch,
                                                  django_capture_on_commit_callbacks):
    monkeypatch.setattr(queue, "queue_in_database", lambda *args, **kwargs: False)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_alert(alert_body())
    assert response.status_code == 201
    assert OrmQ.objects.count() == 0  # nothing pushed before the commit

    for callback in callbacks:
        callback()
    assert queued() == submissions(response.json()["orders"][0]["command_id"])


def test_orm_queue_is_written_inside_the_intake_transaction(strategy, alert_body, post_alert,
                                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = post_alert(alert_body())
    # Queued with the orders, no commit callback run.
    assert queued() == submissions(response.json()["orders"][0]["command_id"])


def test_every_leg_that_passes_is_queued_and_a_blocked_one_is_not(strategy, alert_body, post_alert):
    # The third leg repeats the first's symbol and side: the guard blocks it as a duplicate,
    # and (PER_LEG) the others go on.
    strategy.leg_policy = "PER_LEG"
    strategy.save()
    body = alert_body(legs=[leg(symbol="SBIN-EQ"), leg(symbol="INFY-EQ"), leg(symbol="SBIN-EQ")])
    orders = post_alert(body).json()["orders"]
    assert [o["status"] for o in orders] == ["CREATED", "CREATED", "FAILED"], orders
    assert queued() == submissions(orders[0]["command_id"], orders[1]["command_id"])


def test_failure_after_enqueue_rolls_back_alert_orders_and_queue(strategy, alert_body, monkeypatch):
    real_enqueue = services.Submissions.enqueue

    def enqueue_then_fail(self, command_ids):
        real_enqueue(self, command_ids)
        assert OrmQ.objects.count() == len(command_ids)  # it was written ...
        raise RuntimeError("crash after enqueue")

    monkeypatch.setattr(services.Submissions, "enqueue", enqueue_then_fail)
    with pytest.raises(RuntimeError):
        services.register_alert(strategy=strategy, request=validate_alert(alert_body(legs=[leg(), leg()])),
                                source="webhook", actor="webhook", payload={})
    assert counts() == (0, 0, 0, 0)  # ... and rolled back with everything else


# --- 400: field errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, path",
    [
        ({"legs": [leg(side="HOLD")]}, ("legs", 0, "side")),
        ({"legs": [leg(qty=0)]}, ("legs", 0, "qty")),
        ({"legs": [leg(qty=-5)]}, ("legs", 0, "qty")),
        ({"legs": [leg(qty=settings.MAX_ORDER_QTY + 1)]}, ("legs", 0, "qty")),
        ({"legs": [leg(qty=1.5)]}, ("legs", 0, "qty")),
        ({"legs": [leg(qty=True)]}, ("legs", 0, "qty")),
        ({"legs": [leg(qty="²")]}, ("legs", 0, "qty")),
        ({"legs": [leg(order_type="LIMIT")]}, ("legs", 0, "price")),
        ({"legs": [leg(order_type="SL", price=100)]}, ("legs", 0, "trigger_price")),
        ({"legs": [leg(order_type="SL-M")]}, ("legs", 0, "trigger_price")),
        ({"legs": [leg(price=100)]}, ("legs", 0, "price")),
        ({"legs": [leg(trigger_price=100)]}, ("legs", 0, "trigger_price")),
        ({"legs": [leg(order_type="LIMIT", price=0)]}, ("legs", 0, "price")),
        ({"legs": [leg(order_type="LIMIT", price="123456789012.12345")]}, ("legs", 0, "price")),
        ({"legs": [leg(order_type="LIMIT", price="1.00001")]}, ("legs", 0, "price")),
        ({"legs": [leg(order_type="LIMIT", price="1e999999999")]}, ("legs", 0, "price")),
        ({"legs": [leg(order_type="LIMIT", price="१००")]}, ("legs", 0, "price")),  # Decimal() reads 100
        ({"legs": [leg(order_type="LIMIT", price="1_000")]}, ("legs", 0, "price")),  # Decimal() reads 1000
        ({"legs": [leg(), leg(qty="ten")]}, ("legs", 1, "qty")),
        ({"legs": [leg(symbol="RELIANCE EQ")]}, ("legs", 0, "symbol")),
        ({"legs": [leg(product="BO")]}, ("legs", 0, "product")),
        ({"legs": []}, ("legs",)),
        ({"legs": [leg()] * (settings.MAX_LEGS_PER_ALERT + 1)}, ("legs",)),
        ({"exchange": "NYSE"}, ("exchange",)),
        ({"execution_type": "HOLD"}, ("execution_type",)),
        ({"alert_id": "has space"}, ("alert_id",)),
        ({"strategy": ""}, ("strategy",)),
        ({"secret": None}, ("secret",)),
    ],
)
def test_field_errors(strategy, alert_body, post_alert, overrides, path):
    response = post_alert({**alert_body(), **overrides})
    assert response.status_code == 400, response.content
    error_at(response, *path)
    assert counts() == (0, 0, 0, 0)
    assert RejectedAlert.objects.get().status_code == 400


def test_every_error_at_once_and_valid_legs_have_no_errors(strategy, alert_body, post_alert):
    body = alert_body(legs=[leg(), leg(side="X", qty=0)])
    del body["exchange"]
    response = post_alert(body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"exchange", "legs"}
    assert errors["legs"][0] == {} and set(errors["legs"][1]) == {"side", "qty"}


def test_missing_legs(strategy, alert_body, post_alert):
    body = alert_body()
    del body["legs"]
    error_at(post_alert(body), "legs")


@pytest.mark.parametrize(
    "raw_qty, raw_price",
    [
        ("1", "NaN"),
        ("1", "Infinity"),
        ("1", "-Infinity"),
        ("NaN", "100"),
        ("9" * 5000, "100"),  # over Python's int-parsing limit
    ],
)
def test_non_finite_and_oversized_numbers_are_bad_json(strategy, alert_body, post_alert, raw_qty, raw_price):
    body = alert_body(legs=[leg(order_type="LIMIT", qty="@@", price=None)])
    raw = json.dumps(body).replace('"@@"', raw_qty).replace('"price": null', f'"price": {raw_price}')
    assert raw_qty in raw and raw_price in raw
    response = post_alert(raw)
    assert response.status_code == 400
    error_at(response, "body")


def test_price_with_too_many_digits_as_a_json_number(strategy, alert_body, post_alert):
    raw = json.dumps(alert_body(legs=[leg(order_type="LIMIT", price="@@")])).replace('"@@"', "123456789012.12345")
    response = post_alert(raw)
    assert response.status_code == 400
    error_at(response, "legs", 0, "price")


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"a string"', "42", "null", "   "])
def test_body_must_be_a_json_object(strategy, post_alert, raw):
    response = post_alert(raw)
    assert response.status_code == 400
    error_at(response, "body")


# --- garbage never gives a 500 ---------------------------------------------------------

VALID = {"strategy": "demo", "secret": TEST_SECRET, "execution_type": "ENTRY", "exchange": "NSE", "legs": [leg()]}


def garbage_body(**changes):
    return json.dumps({**VALID, **changes})


def garbage_leg(**changes):
    return garbage_body(legs=[{**leg(), **changes}])


def deep(n):
    return "[" * n + "]" * n


def raw_in(text, raw_json):
    return text.replace('"@@"', raw_json).encode()


GARBAGE = {
    "binary": b"\x00\x01\x02\xff\xfe\xfd" * 50,
    "invalid utf-8": b'{"strategy": "\xc3\x28"}',
    "utf-16": json.dumps(VALID).encode("utf-16"),
    "nested arrays 100000": b"[" * 100_000,
    "nested arrays under the size limit": b"[" * (LIMIT - 10),
    "nested closed arrays": b"[" * 3000 + b"]" * 3000,
    "nested objects": b'{"a":' * 10_000,
    **{f"extra field nested {n}": raw_in(garbage_body(extra="@@"), deep(n)) for n in (100, 500, 800, 900)},
    "leg field nested 700": raw_in(garbage_leg(note="@@"), deep(700)),
    "huge string": json.dumps("x" * (LIMIT - 100)).encode(),
    "huge symbol": garbage_leg(symbol="A" * 60_000).encode(),
    "null body": b"null",
    "true body": b"true",
    "float body": b"1e999999",
    "all nulls": json.dumps(dict.fromkeys(VALID)).encode(),
    "strategy list": garbage_body(strategy=["demo"]).encode(),
    "strategy lone surrogate": garbage_body(strategy="\ud800").encode(),
    "secret dict": garbage_body(secret={"a": 1}).encode(),
    "secret lone surrogate": garbage_body(secret="\udfff" * 30).encode(),
    "execution_type list": garbage_body(execution_type=["ENTRY"]).encode(),
    "exchange number": garbage_body(exchange=1).encode(),
    "alert_id number": garbage_body(alert_id=123).encode(),
    "alert_id lone surrogate": garbage_body(alert_id="\ud800").encode(),
    "NUL in an extra field": garbage_body(comment="a\u0000b").encode(),
    "NUL in a key": raw_in(garbage_body(extra="@@"), '{"a\\u0000": 1}'),
    "legs dict": garbage_body(legs={"0": leg()}).encode(),
    "legs string": garbage_body(legs="RELIANCE").encode(),
    "legs non-dict items": garbage_body(legs=[1, None, "x", []]).encode(),
    "legs many": garbage_body(legs=[leg()] * 100).encode(),
    "symbol number": garbage_leg(symbol=123).encode(),
    "symbol unicode": garbage_leg(symbol="ＲＥＬＩＡＮＣＥ").encode(),
    "symbol emoji": garbage_leg(symbol="🚀-EQ").encode(),
    "symbol newline": garbage_leg(symbol="RELIANCE\n-EQ").encode(),
    "side number": garbage_leg(side=1).encode(),
    "side dict": garbage_leg(side={"BUY": 1}).encode(),
    "qty string": garbage_leg(qty="ten").encode(),
    "qty list": garbage_leg(qty=[10]).encode(),
    "qty superscript": garbage_leg(qty="²").encode(),
    "qty arabic digits": garbage_leg(qty="١٠").encode(),
    "qty exponent": raw_in(garbage_leg(qty="@@"), "1e400"),
    "order_type null": garbage_leg(order_type=None).encode(),
    "product number": garbage_leg(product=5).encode(),
    "price list": garbage_leg(order_type="LIMIT", price=[1]).encode(),
    "price huge exponent": garbage_leg(order_type="LIMIT", price="1e999999999").encode(),
    "price tiny exponent": garbage_leg(order_type="LIMIT", price="1e-999999999").encode(),
    "price signalling nan": garbage_leg(order_type="LIMIT", price="sNaN").encode(),
    "trigger dict": garbage_leg(order_type="SL-M", trigger_price={}).encode(),
    "bom then junk": b"\xef\xbb\xbf\x00garbage",
}


@pytest.mark.parametrize("raw", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_never_gives_a_500_and_is_recorded(strategy, client, raw):
    response = client.post(URL, data=raw, content_type="text/plain; charset=utf-8")
    assert 400 <= response.status_code < 500
    assert response.json()  # a JSON reason, not an HTML error page
    assert RejectedAlert.objects.get().status_code == response.status_code
    assert counts() == (0, 0, 0, 0)


# --- 401 --------------------------------------------------------------------------------


def test_unknown_strategy_and_wrong_secret_get_the_same_answer(strategy, alert_body, post_alert):
    wrong_secret = "wrong-secret-which-is-also-long-0000"
    unknown = post_alert(alert_body(strategy="nobody"))
    wrong = post_alert(alert_body(secret=wrong_secret))

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    assert unknown.json() == {"detail": "unknown strategy or wrong secret"}
    rejected = list(RejectedAlert.objects.order_by("id"))
    assert [(r.status_code, r.strategy_name) for r in rejected] == [(401, "nobody"), (401, "demo")]
    assert counts() == (0, 0, 0, 0)
    assert TEST_SECRET not in stored_text() and wrong_secret not in stored_text()


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({**VALID, "legs": []}),  # 400 on a parsed object
        json.dumps({**VALID, "Secret": TEST_SECRET, "secret": None}),  # the key in the wrong case
        json.dumps(VALID)[:-3] + ",,",  # unparseable text
        json.dumps(VALID)[: json.dumps(VALID).index(TEST_SECRET) + 20],  # cut mid-secret
        str(VALID),  # a Python dict pasted as the body: single quotes, not JSON
        json.dumps(VALID).replace('"secret"', "secret"),  # a JavaScript object literal
    ],
)
def test_rejected_bodies_never_store_the_secret(strategy, post_alert, raw):
    assert TEST_SECRET[:20] in raw
    assert post_alert(raw).status_code == 400
    assert RejectedAlert.objects.get().body
    assert TEST_SECRET[:10] not in stored_text()


# --- 413, 415, 405 ------------------------------------------------------------------------


def padded(body: dict, size: int) -> bytes:
    raw = json.dumps(body).encode()
    return raw + b" " * (size - len(raw))


def test_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(strategy, alert_body, client):
    ok = client.post(URL, data=padded(alert_body(), LIMIT), content_type="application/json")
    too_big = client.post(URL, data=padded(alert_body(), LIMIT + 1), content_type="application/json")
    assert ok.status_code == 201
    assert too_big.status_code == 413
    assert RejectedAlert.objects.get().status_code == 413


class CountingStream:
    """A body without Content-Length (a chunked upload) that counts what is read: `content`,
    then endless `filler`; each read returns at most `chunk` bytes, as a socket may."""

    def __init__(self, content: bytes = b"", filler: bytes = b"x", chunk: int = 4096):
        self.content, self.filler, self.chunk, self.read_bytes = content, filler, chunk, 0

    def read(self, size=-1):
        if size is None or size < 0:
            size = 10 * 1024 * 1024  # "read everything": far more than any limit
        size = min(size, self.chunk)
        chunk = self.content[self.read_bytes:self.read_bytes + size]
        chunk += self.filler * (size - len(chunk)) if self.filler else b""
        self.read_bytes += len(chunk)
        return chunk

    def readline(self, size=-1):
        return self.read(size)


def post_without_content_length(client, stream):
    return client.generic("POST", URL, CONTENT_TYPE="text/plain",
                          **{"wsgi.input": stream, "wsgi.input_terminated": True})


def test_413_without_content_length_reads_at_most_the_limit_plus_one(strategy, client):
    stream = CountingStream()
    response = post_without_content_length(client, stream)
    assert response.status_code == 413
    assert 0 < stream.read_bytes <= LIMIT + 1
    assert RejectedAlert.objects.get().status_code == 413


def test_413_with_content_length_reads_nothing(strategy, client):
    stream = CountingStream()
    response = client.generic("POST", URL, CONTENT_TYPE="application/json", CONTENT_LENGTH=str(10 * LIMIT),
                              **{"wsgi.input": stream})
    assert response.status_code == 413 and stream.read_bytes == 0


def test_body_without_content_length_is_accepted(strategy, alert_body, client):
    stream = CountingStream(json.dumps(alert_body()).encode(), filler=b"", chunk=16)
    assert post_without_content_length(client, stream).status_code == 201


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml", ""],
)
def test_415_for_other_content_types(strategy, alert_body, client, content_type):
    response = client.generic("POST", URL, json.dumps(alert_body()), CONTENT_TYPE=content_type)
    assert response.status_code == 415
    assert "detail" in response.json()
    assert RejectedAlert.objects.get().status_code == 415
    assert counts() == (0, 0, 0, 0)


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_are_405(client, method, db):
    response = getattr(client, method)(URL)
    assert response.status_code == 405
    assert response.json()["detail"]
