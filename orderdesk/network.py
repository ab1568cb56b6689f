"""Who sent a request: the client address behind trusted proxies, and address lists.

Hand-written rather than django-ipware: python-ipware 4.1 picks the client by its position in
the X-Forwarded-For chain and trusts that header whoever sent it; it never asks whether
REMOTE_ADDR, the one address nobody can forge, is a proxy of ours. Here a forwarded address
counts only for a request that came from one of TRUSTED_PROXIES, and then the client is the
right-most address that is not a trusted proxy (each proxy appends the address it saw; only
the left part can be forged by the client).
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.utils.deprecation import MiddlewareMixin

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
CLIENT_IP_KEY = "orderdesk.client_ip"


def _entries(text: str) -> list[str]:
    return [e for e in text.replace(",", " ").split() if e]


def parse_networks(text: str) -> tuple[Network, ...]:
    """'10.0.0.1, 192.168.0.0/16 ::1' as networks; ValueError names the entry it refuses."""
    networks = []
    for entry in _entries(text):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or a CIDR network") from None
    return tuple(networks)


def networks_setting(name: str, text: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}: {exc}") from None


def validate_networks(text: str) -> None:
    """Model-field validator for a list of addresses and networks."""
    try:
        parse_networks(text)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


@lru_cache(maxsize=1024)
def _cached_networks(text: str) -> tuple[Network, ...]:
    return parse_networks(text)


def address_in(ip: str | None, networks_text: str) -> bool:
    """Whether `ip` is in the list `networks_text` (as stored on a strategy)."""
    address = parse_ip(ip)
    return address is not None and _within(address, _cached_networks(networks_text))


def parse_ip(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # An IPv4 peer on a dual-stack socket arrives as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _within(address, networks) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _trusted_proxies() -> tuple[Network, ...]:
    return settings.TRUSTED_PROXIES


def from_trusted_proxy(request) -> bool:
    address = parse_ip(request.META.get("REMOTE_ADDR"))
    return address is not None and _within(address, _trusted_proxies())


def resolve_client_ip(meta: dict, trusted: tuple[Network, ...]) -> str | None:
    peer = parse_ip(meta.get("REMOTE_ADDR"))
    if peer is None or not _within(peer, trusted):
        return str(peer) if peer else None
    client = peer
    for hop in reversed(meta.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = parse_ip(hop)
        if address is None:
            break  # garbage in the chain: nothing left of it can be trusted
        client = address
        if not _within(address, trusted):
            break
    return str(client)


def client_ip(request) -> str | None:
    """The client's address, resolved once per request (also django-axes' resolver)."""
    meta = request.META
    if CLIENT_IP_KEY not in meta:
        meta[CLIENT_IP_KEY] = resolve_client_ip(meta, _trusted_proxies())
    return meta[CLIENT_IP_KEY]


class TrustedProxyMiddleware(MiddlewareMixin):
    """First in the stack: headers only a proxy of ours may set are dropped from anyone else,
    so SECURE_PROXY_SSL_HEADER (X-Forwarded-Proto) is believed only from TRUSTED_PROXIES."""

    PROXY_HEADERS = ("HTTP_X_FORWARDED_PROTO",)

    def process_request(self, request):
        if not from_trusted_proxy(request):
            for header in self.PROXY_HEADERS:
                request.META.pop(header, None)


HTTPS_REQUIRED = "HTTPS required: this API is served only over https://"


class ApiHttpsOnlyMiddleware(MiddlewareMixin):
    """Under ORDERDESK_HTTPS an API request over plain HTTP gets a JSON 403, never
    SecurityMiddleware's redirect (a redirected POST loses its body; a token would already
    have crossed the network in clear). Views that answer plain HTTP themselves say so with
    `plain_http_allowed` (the webhook records its refusal; health serves load balancers)."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        from django.http import JsonResponse  # not at import: settings.py imports this module

        if not settings.ORDERDESK_HTTPS or request.is_secure() or not request.path.startswith("/api/"):
            return None
        view_class = getattr(view_func, "view_class", None)
        if getattr(view_class, "plain_http_allowed", False):
            return None
        return JsonResponse({"detail": HTTPS_REQUIRED}, status=403)
