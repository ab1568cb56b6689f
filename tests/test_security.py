"""Secure by default: plain HTTP under ORDERDESK_HTTPS, per-strategy allow-lists, the
webhook's rate limits, counted rejected alerts, and django-axes' login lockout."""

import json
from datetime import timedelta

import pytest
import redis
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from orders import throttles
from orders.models import TRADINGVIEW_SENDER_IPS, Alert, Order, RejectedAlert
from orders.services import prune_rejected_alerts, record_rejected_alert
from tests.factories import StrategyFactory

URL = "/api/webhook/"


def post(client, body, **extra):
    return client.post(URL, data=json.dumps(body), content_type="text/plain", **extra)


# --- plain HTTP under ORDERDESK_HTTPS ---------------------------------------------------------


@pytest.fixture
def https_only(settings):
    """What ORDERDESK_HTTPS=1 sets (tests/test_settings.py checks the settings file does)."""
    settings.ORDERDESK_HTTPS = True
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^api/"]
    settings.SECURE_HSTS_SECONDS = 31_536_000


def test_a_plain_http_webhook_is_refused_with_json_and_recorded_never_redirected(https_only, strategy, alert_body,
                                                                                  client):
    response = post(client, alert_body())
    assert response.status_code == 403 and "Location" not in response
    assert response.json() == {"detail": "HTTPS required: this API is served only over https://"}
    assert RejectedAlert.objects.get().status_code == 403
    assert not Alert.objects.exists()
    assert post(client, alert_body(), secure=True).status_code == 201


def test_plain_http_api_is_a_json_403_and_pages_are_redirected(https_only, client, django_user_model):
    user = django_user_model.objects.create_user("ops", password="ops-password-0123")
    token = Token.objects.create(user=user).key
    api = client.get("/api/orders/", HTTP_AUTHORIZATION=f"Token {token}")
    assert api.status_code == 403 and api.json()["detail"].startswith("HTTPS required")
    assert client.get("/api/orders/", HTTP_AUTHORIZATION=f"Token {token}", secure=True).status_code == 200
    page = client.get("/admin/login/")
    assert page.status_code == 301 and page["Location"].startswith("https://")
    assert client.get("/api/health/").status_code == 200  # load balancers probe the web tier directly
    secure = client.get("/admin/login/", secure=True)
    assert secure.status_code == 200 and "max-age=31536000" in secure["Strict-Transport-Security"]


# --- allow-lists ------------------------------------------------------------------------------


def test_an_address_outside_allowed_ips_is_refused_and_recorded(db, alert_body, client):
    StrategyFactory(name="demo", allowed_ips="10.1.0.0/16, 192.0.2.7")
    refused = post(client, alert_body(), REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 403
    assert "203.0.113.9" in refused.json()["detail"] and "allowed_ips" in refused.json()["detail"]
    rejected = RejectedAlert.objects.get()
    assert (rejected.status_code, rejected.sender_ip, rejected.strategy_name) == (403, "203.0.113.9", "demo")
    assert not Order.objects.exists()
    assert post(client, alert_body(), REMOTE_ADDR="10.1.2.3").status_code == 201
    assert post(client, alert_body(), REMOTE_ADDR="192.0.2.7").status_code == 201


def test_a_wrong_secret_is_401_whatever_the_address(db, alert_body, client):
    StrategyFactory(name="demo", allowed_ips="10.1.0.0/16")
    assert post(client, alert_body(secret="y" * 30), REMOTE_ADDR="203.0.113.9").status_code == 401


def test_allowed_ips_are_validated(db):
    strategy = StrategyFactory(name="demo")
    strategy.allowed_ips = "10.0.0.1, example.com"
    with pytest.raises(ValidationError, match="example.com"):
        strategy.full_clean()


def test_the_admin_presets_tradingviews_sender_addresses(admin_client, db):
    strategy = StrategyFactory(name="demo")
    response = admin_client.post(reverse("admin:orders_strategy_changelist"),
                                 {"action": "allow_only_tradingview", "_selected_action": [strategy.pk]}, follow=True)
    assert response.status_code == 200
    strategy.refresh_from_db()
    assert strategy.allowed_ips == ", ".join(TRADINGVIEW_SENDER_IPS)
    assert "52.89.214.238" in strategy.allowed_ips


# --- rate limits ------------------------------------------------------------------------------


def test_per_address_limit_answers_429_before_reading_the_body_and_counts_the_refusals(strategy, alert_body, client,
                                                                                      settings):
    settings.WEBHOOK_RATE_PER_IP = "3/min"
    assert [post(client, alert_body()).status_code for _ in range(3)] == [201, 201, 201]
    for _ in range(4):
        refused = client.post(URL, data="not even json", content_type="text/plain")
        assert refused.status_code == 429
        assert 1 <= int(refused["Retry-After"]) <= 60
        assert refused.json()["detail"] == "over the rate limit of 3/min per sender address"
    row = RejectedAlert.objects.get()  # one row per sender, reason and minute
    assert (row.status_code, row.count, row.sender_ip) == (429, 4, "127.0.0.1")
    assert row.body == ""  # refused before the body was read
    assert post(client, alert_body(), REMOTE_ADDR="198.51.100.7").status_code == 201  # another sender


def test_per_strategy_limit_counts_only_authenticated_alerts(strategy, alert_body, client, settings):
    settings.WEBHOOK_RATE_PER_STRATEGY = "2/min"
    StrategyFactory(name="other")
    for _ in range(5):  # a hostile sender naming the strategy cannot spend its budget
        assert post(client, alert_body(secret="z" * 30), REMOTE_ADDR="203.0.113.66").status_code == 401
    assert [post(client, alert_body()).status_code for _ in range(3)] == [201, 201, 429]
    assert post(client, alert_body(strategy="other")).status_code == 201
    limited = RejectedAlert.objects.get(status_code=429)
    assert limited.strategy_name == "demo" and limited.reason == "over the rate limit of 2/min per strategy"
    assert Order.objects.count() == 3


def test_a_bad_rate_is_a_configuration_error(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.WEBHOOK_RATE_PER_IP = "lots"
    with pytest.raises(ImproperlyConfigured, match="WEBHOOK_RATE_PER_IP"):
        throttles.webhook_limits()


@pytest.fixture
def redis_cache(settings, redis_url):
    """The rate limits counted in Redis, on a database of their own next to the tests' queue."""
    url = redis_url.rsplit("/", 1)[0] + "/13"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.mark.redis
def test_limits_are_shared_through_redis_by_every_process(strategy, alert_body, client, settings, redis_cache):
    settings.WEBHOOK_RATE_PER_IP = "3/min"
    assert post(client, alert_body()).status_code == 201
    assert any(key.startswith(b"orderdesk:rate:ip:127.0.0.1:") for key in redis_cache.keys())
    # Another process: its own connection, the same counters.
    other = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    key = next(k for k in other.keys() if k.startswith(b"orderdesk:rate:ip:"))
    other.incr(key)  # that process's second request
    assert 0 < other.ttl(key) <= 120
    assert [post(client, alert_body()).status_code for _ in range(2)] == [201, 429]


@pytest.mark.redis
def test_clearing_the_cache_never_touches_the_task_queue(settings, redis_url, redis_cache):
    from django.core.cache import cache

    queue = redis.Redis.from_url(redis_url)
    queue.set("orderdesk-test:queued-task", "1")
    try:
        cache.set("something", 1)
        cache.clear()
        assert queue.get("orderdesk-test:queued-task") == b"1"
        assert redis_cache.dbsize() == 0
    finally:
        queue.delete("orderdesk-test:queued-task")


def test_a_limit_that_cannot_be_counted_lets_the_alert_through(strategy, alert_body, client, settings, caplog):
    settings.WEBHOOK_RATE_PER_IP = "1/min"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0", "OPTIONS": {"socket_connect_timeout": 0.2}}}
    assert [post(client, alert_body()).status_code for _ in range(2)] == [201, 201]
    assert "rate limit not counted" in caplog.text


# --- rejected alerts stay bounded -------------------------------------------------------------


def test_repeated_refusals_add_to_one_row_per_sender_reason_and_minute(db):
    for ip in ("203.0.113.1", "203.0.113.1", "203.0.113.1", "203.0.113.2"):
        record_rejected_alert(status_code=401, reason="unknown strategy or wrong secret", sender_ip=ip,
                              strategy_name="demo", body="{}")
    record_rejected_alert(status_code=400, reason="other", sender_ip="203.0.113.1", strategy_name="demo", body="{}")
    rows = {(r.sender_ip, r.status_code): r.count for r in RejectedAlert.objects.all()}
    assert rows == {("203.0.113.1", 401): 3, ("203.0.113.2", 401): 1, ("203.0.113.1", 400): 1}
    old = RejectedAlert.objects.get(sender_ip="203.0.113.2")
    RejectedAlert.objects.filter(pk=old.pk).update(received_at=old.received_at - timedelta(minutes=2))
    record_rejected_alert(status_code=401, reason="unknown strategy or wrong secret", sender_ip="203.0.113.2",
                          strategy_name="demo", body="{}")
    assert RejectedAlert.objects.filter(sender_ip="203.0.113.2").count() == 2  # a new minute, a new row


def test_the_oldest_rejected_alerts_are_pruned_beyond_the_cap(db):
    RejectedAlert.objects.bulk_create(RejectedAlert(status_code=400, reason=f"r{i}") for i in range(30))
    newest = list(RejectedAlert.objects.order_by("-id").values_list("reason", flat=True)[:10])
    assert prune_rejected_alerts(keep=10) == 20
    assert sorted(RejectedAlert.objects.values_list("reason", flat=True)) == sorted(newest)
    assert prune_rejected_alerts(keep=10) == 0


# --- login lockout (django-axes) ---------------------------------------------------------------


@pytest.fixture
def trader(db):
    return User.objects.create_user("trader", password="right-password-0123", is_staff=True, is_superuser=True)


def admin_login(client, password, ip="198.51.100.20"):
    return client.post("/admin/login/?next=/admin/", {"username": "trader", "password": password}, REMOTE_ADDR=ip)


def test_five_failed_admin_logins_lock_the_username_and_address_for_15_minutes(client, trader):
    for _ in range(4):
        assert admin_login(client, "wrong").status_code == 200  # the form again, with its error
    locked = admin_login(client, "wrong")
    assert locked.status_code == 429 and "locked for 15 minutes" in locked.content.decode()
    assert int(locked["Retry-After"]) == 15 * 60
    assert admin_login(client, "right-password-0123").status_code == 429  # even the right password
    # Not by address alone: behind one proxy that would lock the whole desk out.
    assert admin_login(client, "right-password-0123", ip="198.51.100.21").status_code == 302
    client.logout()
    # The cool-off: 15 minutes after the failures, the pair may log in again.
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    assert admin_login(client, "right-password-0123").status_code == 302


def test_the_lockout_uses_the_resolved_client_address(client, trader, settings):
    from orderdesk.network import parse_networks

    settings.TRUSTED_PROXIES = parse_networks("10.0.0.1")
    for _ in range(5):
        client.post("/admin/login/", {"username": "trader", "password": "wrong"}, REMOTE_ADDR="10.0.0.1",
                    HTTP_X_FORWARDED_FOR="198.51.100.30")
    assert AccessAttempt.objects.get().ip_address == "198.51.100.30"
    other = client.post("/admin/login/?next=/admin/", {"username": "trader", "password": "right-password-0123"},
                        REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.31")
    assert other.status_code == 302  # another client behind the same proxy is not locked out


def test_token_login_gives_the_token_and_locks_out_as_the_admin(client, trader):
    good = client.post("/api/token/", {"username": "trader", "password": "right-password-0123"})
    assert good.status_code == 200 and good.json()["token"] == Token.objects.get(user=trader).key
    for _ in range(4):
        assert client.post("/api/token/", {"username": "trader", "password": "wrong"}).status_code == 400
    locked = client.post("/api/token/", {"username": "trader", "password": "wrong"})
    assert locked.status_code == 429 and "locked" in locked.json()["detail"] and locked["Retry-After"] == "900"
    again = client.post("/api/token/", {"username": "trader", "password": "right-password-0123"})
    assert again.status_code == 429 and "token" not in again.json()

