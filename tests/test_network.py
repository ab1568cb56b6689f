"""Who sent a request (orderdesk.network): the client address behind trusted proxies, and
the proxy headers believed only from them."""

import json

import pytest

from orderdesk.network import parse_networks, resolve_client_ip
from orders.models import Alert, RejectedAlert

URL = "/api/webhook/"
PROXIES = parse_networks("10.0.0.1, 10.8.0.0/16, fd00::/8")


@pytest.mark.parametrize("peer, forwarded, client", [
    # Straight from the internet: whatever it claims, the client is the peer.
    ("203.0.113.9", "", "203.0.113.9"),
    ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
    # Through our proxy: the right-most address it appended.
    ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
    # A client that forges a left part: the proxy appends the real address after it.
    ("10.0.0.1", "1.2.3.4, 198.51.100.7", "198.51.100.7"),
    # Two of our proxies in a row (a CDN hop inside 10.8/16, then the local one).
    ("10.0.0.1", "1.2.3.4, 198.51.100.7, 10.8.3.4", "198.51.100.7"),
    # Every hop ours: the left-most.
    ("10.0.0.1", "10.8.0.2", "10.8.0.2"),
    # Garbage in the chain: nothing left of it is believed.
    ("10.0.0.1", "1.2.3.4, not-an-ip, 10.8.0.9", "10.8.0.9"),
    ("10.0.0.1", "", "10.0.0.1"),
    # IPv4 on a dual-stack socket, and IPv6 proxies.
    ("::ffff:10.0.0.1", "198.51.100.7", "198.51.100.7"),
    ("fd00::5", "2001:db8::1", "2001:db8::1"),
    ("garbage", "198.51.100.7", None),
])
def test_client_address(peer, forwarded, client):
    meta = {"REMOTE_ADDR": peer, "HTTP_X_FORWARDED_FOR": forwarded}
    assert resolve_client_ip(meta, PROXIES) == client


def test_parse_networks_names_what_it_refuses():
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        parse_networks("10.0.0.1 10.0.0.300")


def post(client, body, **extra):
    return client.post(URL, data=json.dumps(body), content_type="text/plain", **extra)


def test_a_spoofed_forwarded_for_is_ignored_without_a_trusted_proxy(strategy, alert_body, client, settings):
    settings.TRUSTED_PROXIES = ()
    response = post(client, alert_body(), REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="198.51.100.1")
    assert response.status_code == 201
    assert Alert.objects.get().sender_ip == "203.0.113.9"


def test_behind_a_trusted_proxy_the_client_is_the_address_it_saw(strategy, alert_body, client, settings):
    settings.TRUSTED_PROXIES = parse_networks("10.0.0.1")
    response = post(client, alert_body(), REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.7")
    assert response.status_code == 201
    assert Alert.objects.get().sender_ip == "198.51.100.7"
    refused = post(client, alert_body(secret="x" * 30), REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.8")
    assert refused.status_code == 401 and RejectedAlert.objects.get().sender_ip == "198.51.100.8"


def test_forwarded_proto_counts_only_from_a_trusted_proxy(strategy, alert_body, client, settings):
    settings.ORDERDESK_HTTPS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.TRUSTED_PROXIES = parse_networks("10.0.0.1")
    forged = post(client, alert_body(), REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_PROTO="https")
    assert forged.status_code == 403 and forged.json()["detail"].startswith("HTTPS required")
    proxied = post(client, alert_body(), REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_PROTO="https",
                   HTTP_X_FORWARDED_FOR="198.51.100.7")
    assert proxied.status_code == 201
    assert Alert.objects.get().sender_ip == "198.51.100.7"
