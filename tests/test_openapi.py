"""The OpenAPI description, and schemathesis against the running app: every operation, with a
token, generated requests; no 5xx, only documented status codes, and bodies that match the
schema."""

from datetime import date
from decimal import Decimal

import pytest
import schemathesis
from django.contrib.auth.models import Permission, User
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from brokers.models import Instrument
from tests.factories import TEST_SECRET, StrategyFactory

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(live_server):
    return schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")


@pytest.fixture
def token(transactional_db, live_server):
    """A user with a token, and orders for the API to list (a registered and a blocked one)."""
    import requests

    user = User.objects.create_user("fuzz", password="fuzz-password-0123456789", is_staff=True)
    # cancels, modifications and closes answer 200/202 and 409 too
    user.user_permissions.add(*Permission.objects.filter(codename__in=["cancel_order", "modify_order", "place_manual_order"]))
    StrategyFactory(name="demo")
    Instrument.objects.create(exchange="NFO", token="35001", trading_symbol="NIFTY26DEC24000CE", symbol="NIFTY",
                              instrument_type="OPTIDX", expiry=date(2026, 12, 31), strike=Decimal(24000),
                              option_type="CE", lot_size=75, tick_size=Decimal("0.05"), freeze_qty=1800)
    leg = {"symbol": "RELIANCE-EQ", "side": "BUY", "qty": 1, "product": "MIS"}
    for execution_type in ("ENTRY", "EXIT"):  # the EXIT is blocked: no position
        body = {"strategy": "demo", "secret": TEST_SECRET, "execution_type": execution_type, "exchange": "NSE",
                "legs": [leg]}
        assert requests.post(f"{live_server.url}/api/webhook/", json=body, timeout=10).status_code == 201
    return Token.objects.create(user=user).key


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, token):
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)


def test_schema_lists_every_endpoint_with_its_errors(client):
    spec = client.get("/api/schema/?format=json").json()
    operations = {(path, method): op for path, item in spec["paths"].items() for method, op in item.items()}
    assert set(operations) == {
        ("/api/webhook/", "post"), ("/api/orders/", "get"), ("/api/orders/{command_id}/", "get"),
        ("/api/health/", "get"), ("/api/token/", "post"), ("/api/webhook/explain/", "post"),
        ("/api/orders/{command_id}/cancel/", "post"), ("/api/orders/cancel-all/", "post"),
        ("/api/orders/{command_id}/modify/", "post"), ("/api/instruments/", "get"),
        ("/api/positions/close/", "post"), ("/api/external-orders/", "get"), ("/api/reconciliation/", "get"),
    }
    webhook = operations[("/api/webhook/", "post")]
    assert {"200", "201", "400", "401", "403", "413", "415", "429", "503"} <= set(webhook["responses"])
    body = webhook["requestBody"]["content"]
    assert {"application/json", "text/plain"} <= set(body)
    alert = spec["components"]["schemas"]["WebhookAlertRequest"]
    assert {"strategy", "secret", "exchange", "legs"} <= set(alert["required"])  # execution_type: not with targets
    leg = spec["components"]["schemas"]["WebhookLegRequest"]
    assert set(leg["properties"]) == {"symbol", "side", "target_qty", "qty", "lots", "order_type", "product",
                                      "price", "trigger_price"}
    assert "TradingViewAlertMessage" in body["application/json"]["examples"]
    for key in (("/api/orders/", "get"), ("/api/orders/{command_id}/", "get"), ("/api/instruments/", "get"),
                ("/api/external-orders/", "get")):
        assert {"401", "403", "404"} <= set(operations[key]["responses"])
    assert {"200", "401", "403", "404", "409"} <= set(operations[("/api/orders/{command_id}/cancel/", "post")]["responses"])


def test_docs_are_served_without_a_cdn(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "/static/drf_spectacular_sidecar/" in html
    assert "cdn." not in html and "unpkg" not in html and "jsdelivr" not in html
