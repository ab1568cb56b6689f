"""Management commands: create_strategy, up and DRF's drf_create_token."""

import re
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from orders.models import Strategy

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_strategy_prints_a_secret_that_authenticates():
    output = run("create_strategy", "scalper")
    secret = output.split()[-1]
    strategy = Strategy.objects.get(name="scalper")
    assert strategy.enabled and len(secret) >= 32
    assert Strategy.authenticate("scalper", secret) == strategy
    assert secret not in strategy.secret_digest
    assert Strategy.authenticate("scalper", secret[:-1] + "x") is None


def test_create_strategy_with_a_given_secret_disabled():
    secret = "a-given-secret-of-24-chars"
    assert secret in run("create_strategy", "manual", "--secret", secret, "--disabled")
    strategy = Strategy.authenticate("manual", secret)
    assert strategy is not None and not strategy.enabled


@pytest.mark.parametrize("given, stored", [("10.0.0.0/8, 192.0.2.7", "10.0.0.0/8, 192.0.2.7"),
                                           ("TradingView", "52.89.214.238, 34.212.75.30, 54.218.53.128, 52.32.178.7")])
def test_create_strategy_with_an_allow_list(given, stored):
    assert f"accepted only from: {stored}" in run("create_strategy", "tv", "--allowed-ips", given)
    assert Strategy.objects.get(name="tv").allowed_ips == stored


@pytest.mark.parametrize(
    "args, message",
    [
        (["short", "--secret", "x" * 23], "at least 24"),
        ([" padded"], "surrounding spaces"),
        (["x" * 65], "1 to 64"),
        (["open", "--allowed-ips", "10.0.0.1, tradingview.com"], "'tradingview.com' is not an IP"),
    ],
)
def test_create_strategy_refuses(args, message):
    with pytest.raises(CommandError, match=message):
        run("create_strategy", *args)
    assert not Strategy.objects.exists()


def test_create_strategy_refuses_a_duplicate_name():
    run("create_strategy", "dup")
    digest = Strategy.objects.get(name="dup").secret_digest
    with pytest.raises(CommandError, match="already exists"):
        run("create_strategy", "dup")
    assert Strategy.objects.get(name="dup").secret_digest == digest


def test_drf_create_token_gives_a_working_api_token(client):
    User.objects.create_user("trader")
    output = run("drf_create_token", "trader")
    token = Token.objects.get(user__username="trader")
    assert token.key in output
    assert client.get("/api/orders/", headers={"authorization": f"Token {token.key}"}).status_code == 200


def up(*args) -> str:
    return run("up", "--no-serve", *args)


def printed(output: str, label: str) -> str | None:
    match = re.search(rf"{label} (\S+)\n", output)
    return match.group(1) if match and "unchanged" not in match.group(0) else None


def admin_password_is(password: str) -> bool:
    return User.objects.get(username="admin").check_password(password)


def test_up_issues_demo_credentials_once_and_keeps_them_until_rotated():
    first = up()
    secret, password = printed(first, "secret"), printed(first, "password")
    assert Strategy.authenticate("demo", secret) and admin_password_is(password)

    again = up()  # a restart must not break the user's configured alerts
    assert printed(again, "secret") is None and "unchanged" in again
    assert Strategy.authenticate("demo", secret) and admin_password_is(password)

    rotated = up("--rotate")
    new_secret = printed(rotated, "secret")
    assert new_secret and new_secret != secret
    assert Strategy.authenticate("demo", secret) is None and Strategy.authenticate("demo", new_secret)
    assert not admin_password_is(password)
