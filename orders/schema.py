"""The OpenAPI description of the API (drf-spectacular): request bodies that views read by
hand, and every error answer an endpoint can give. Documentation only; nothing here
validates (orders.validation does, on the hot path)."""

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

from .models import ExecutionType, OrderType, Product, Side, Status
from .serializers import (ExternalOrderSerializer, InstrumentSerializer, OrderDetailSerializer, OrderSerializer,
                          ReconciliationSerializer)
from .validation import EXCHANGES, PRICE_DECIMALS, PRICE_MAX_DIGITS, TEXT_MAX

ERROR_MEANINGS = {
    400: "the request is not valid: `errors` or the field names list the problems",
    401: "no valid token or session (`Authorization: Token …`)",
    403: "not allowed: plain HTTP under ORDERDESK_HTTPS, or a user without the permission",
    404: "no such object (or page)",
    409: "the object's state does not allow this",
    413: "the body is larger than the webhook accepts",
    415: "the content type is neither application/json nor text/plain",
    429: "over a rate limit, or a login locked out; `Retry-After` says when to try again",
    503: "the database is unreachable or busy; nothing was registered: send the same alert again after "
         "`Retry-After` seconds",
}


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False, help_text="what went wrong")
    errors = serializers.DictField(required=False, help_text="field -> list of problems (400 on the webhook)")


def error_responses(*codes: int, **meanings: str) -> dict:
    """`meanings` overrides the shared description of a code for one endpoint (e400="…")."""
    return {code: OpenApiResponse(ErrorSerializer, description=meanings.get(f"e{code}", ERROR_MEANINGS[code]))
            for code in codes}


# Every API endpoint answers plain HTTP with 403 under ORDERDESK_HTTPS.
AUTHENTICATED_ERRORS = (401, 403)


class WebhookLegSerializer(serializers.Serializer):
    symbol = serializers.RegexField(
        r"^[A-Za-z0-9][A-Za-z0-9&_.\-]{0,63}$", max_length=TEXT_MAX,
        help_text="the exchange's trading symbol, e.g. RELIANCE-EQ or NIFTY25DEC24000CE; upper-cased")
    side = serializers.ChoiceField(Side.choices, required=False, help_text="any case; required unless target_qty")
    target_qty = serializers.IntegerField(
        required=False, min_value=-settings.MAX_ORDER_QTY, max_value=settings.MAX_ORDER_QTY,
        help_text="instead of side and qty: the strategy's position to reach (10 long, -10 short, 0 flat); the "
                  "order, its side and ENTRY or EXIT are computed from the position and the live orders")
    qty = serializers.IntegerField(min_value=1, max_value=settings.MAX_ORDER_QTY, required=False,
                                   help_text="units (not lots); a whole number, or digits in a string. "
                                             "Required unless `lots` is given")
    lots = serializers.IntegerField(
        min_value=1, max_value=settings.MAX_ORDER_QTY, required=False,
        help_text="instead of qty: qty = lots x the symbol master's lot size (400 when no master is loaded "
                  "for the exchange, or the symbol is not in it)")
    order_type = serializers.ChoiceField(OrderType.choices, required=False, default=OrderType.MARKET,
                                         help_text="any case; LIMIT and SL need `price`, SL and SL-M `trigger_price`")
    product = serializers.ChoiceField(Product.choices, help_text="CNC delivery, NRML carry-forward F&O, MIS intraday")
    price = serializers.DecimalField(
        max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMALS, required=False, allow_null=True,
        help_text="limit price, > 0; null or absent for MARKET and SL-M")
    trigger_price = serializers.DecimalField(
        max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMALS, required=False, allow_null=True,
        help_text="trigger, > 0; only for SL and SL-M")


class WebhookAlertSerializer(serializers.Serializer):
    strategy = serializers.CharField(max_length=TEXT_MAX, help_text="the strategy's name")
    secret = serializers.CharField(help_text="the strategy's webhook secret (never stored; its digest is)")
    sent_at = serializers.DateTimeField(
        required=False, help_text="ISO 8601 with an offset or Z (TradingView: {{timenow}}); older than "
                                  "ALERT_MAX_AGE_S, or over 5 s ahead: GUARD_BLOCKED:STALE_ALERT")
    alert_id = serializers.RegexField(
        r"^[\x21-\x7e]{1,64}$", required=False,
        help_text="idempotency key: the same alert_id again answers 200 with the orders of the first delivery")
    execution_type = serializers.ChoiceField(
        ExecutionType.choices, required=False,
        help_text="ENTRY opens or adds; EXIT closes (never more than the position). Required unless every leg "
                  "gives target_qty")
    exchange = serializers.ChoiceField([(e, e) for e in EXCHANGES], help_text="any case")
    legs = WebhookLegSerializer(many=True, help_text=f"1 to {settings.MAX_LEGS_PER_ALERT} orders")


class IntakeOrderSerializer(serializers.Serializer):
    command_id = serializers.CharField(help_text="our id of the order, sent to the broker as its remarks")
    leg = serializers.IntegerField()
    slice = serializers.IntegerField(help_text="1; a leg split at the freeze quantity: 1, 2 … (each its own order)")
    symbol = serializers.CharField()
    side = serializers.ChoiceField(Side.choices)
    qty = serializers.IntegerField()
    status = serializers.ChoiceField(Status.choices, help_text="CREATED (queued for the broker) or FAILED (blocked)")
    tag = serializers.CharField(allow_blank=True, help_text="why it failed, e.g. GUARD_BLOCKED:DUPLICATE_POSITION")


class IntakeReplySerializer(serializers.Serializer):
    alert_id = serializers.CharField()
    orders = IntakeOrderSerializer(many=True)
    note = serializers.CharField(required=False, help_text="target legs already at their target: no order")


TRADINGVIEW_EXAMPLE = {
    "strategy": "nifty-breakout",
    "secret": "the-strategy-secret-printed-by-create_strategy",
    "alert_id": "{{strategy.order.id}}-{{timenow}}",
    "sent_at": "{{timenow}}",
    "execution_type": "ENTRY",
    "exchange": "NSE",
    "legs": [{"symbol": "RELIANCE-EQ", "side": "{{strategy.order.action}}", "qty": "{{strategy.order.contracts}}",
              "order_type": "MARKET", "product": "MIS"}],
}

ALERT_BODY = {"application/json": WebhookAlertSerializer, "text/plain": WebhookAlertSerializer}
SENDER_REFUSED = "plain HTTP under ORDERDESK_HTTPS, or a sender address outside the strategy's allowed_ips"

webhook_schema = extend_schema(
    summary="Register an alert (TradingView and other senders)",
    description=(
        "The body is one JSON object, sent as `application/json` or as `text/plain` (what TradingView "
        "sends). Every alert that passes authentication is registered with one order per leg; a blocked "
        "order still answers 201, with status FAILED and its tag. Answers are always JSON."),
    auth=[],
    request=ALERT_BODY,
    responses={
        201: OpenApiResponse(IntakeReplySerializer, description="registered: the orders, CREATED or FAILED with a tag"),
        200: OpenApiResponse(IntakeReplySerializer,
                             description="a repeated alert_id: the orders of the first delivery"),
        **error_responses(400, 401, 403, 413, 415, 429, 503,
                          e400="not a valid alert: `errors` lists every field's problem (`legs` per leg)",
                          e401="unknown strategy or wrong secret (the same answer for both)",
                          e403=SENDER_REFUSED,
                          e429="over WEBHOOK_RATE_PER_IP or WEBHOOK_RATE_PER_STRATEGY; `Retry-After` says when"),
        500: OpenApiResponse(ErrorSerializer, description="our fault: logged and recorded as a rejected alert"),
    },
    examples=[OpenApiExample("TradingView alert message", value=TRADINGVIEW_EXAMPLE, request_only=True)],
)

HEALTH_STATUSES = [("ok", "ok"), ("degraded", "degraded"), ("down", "down")]
HEALTH_DETAILS = inline_serializer("Health", {
    "status": serializers.ChoiceField(HEALTH_STATUSES),
    "reasons": serializers.ListField(child=serializers.CharField(), required=False),
    "database": serializers.DictField(required=False),
    "queue": serializers.DictField(required=False),
    "watcher": serializers.DictField(required=False),
    "broker": serializers.DictField(required=False),
    "feed": serializers.DictField(required=False, help_text="the broker's push feed of order updates"),
    "funds": serializers.DictField(required=False, help_text="the account's cash and margins, as last read"),
    "checked_at": serializers.DateTimeField(required=False),
})

health_schema = extend_schema(
    summary="Health: the status for anyone, the details with a token or session",
    auth=[{}, {"tokenAuth": []}, {"cookieAuth": []}],
    responses={
        200: OpenApiResponse(HEALTH_DETAILS, description="ok or degraded (the reasons and details need auth)"),
        503: OpenApiResponse(HEALTH_DETAILS, description="the database is unreachable"),
        **error_responses(401, e401="a token or session was sent and is not valid"),
    },
)

order_list_schema = extend_schema(
    responses={200: OrderSerializer(many=True),
               **error_responses(400, *AUTHENTICATED_ERRORS, 404, e400="a filter's value is not valid",
                                 e404="no such page")})
instrument_list_schema = extend_schema(
    summary="Search the symbol master",
    description="Instruments of the loaded symbol masters (`manage.py sync_instruments`), by exchange and the "
                "start of a trading symbol or of an underlying (any case); by underlying, expiry and strike.",
    responses={200: InstrumentSerializer(many=True),
               **error_responses(400, *AUTHENTICATED_ERRORS, 404, e400="a filter's value is not valid",
                                 e404="no such page")})
external_order_list_schema = extend_schema(
    summary="Orders placed elsewhere",
    description="Broker orders that carry no command id of ours (placed by hand in the broker's app, say), as the "
                "watcher follows them from the order book and the push feed; newest first. Never sent, cancelled "
                "or guarded by orderdesk.",
    responses={200: ExternalOrderSerializer(many=True),
               **error_responses(400, *AUTHENTICATED_ERRORS, 404, e400="a filter's value is not valid",
                                 e404="no such page")})
reconciliation_schema = extend_schema(
    summary="The broker's positions against ours and the external orders'",
    description="Per instrument: the broker's net quantity (its PositionBook at the watcher's last read), ours "
                "(every strategy's, from our fills) and the day's external orders'; the confirmed differences "
                "not yet resolved; and the external bucket of the account P&L.",
    responses={200: ReconciliationSerializer, **error_responses(*AUTHENTICATED_ERRORS)})
order_detail_schema = extend_schema(
    responses={200: OrderDetailSerializer,
               **error_responses(*AUTHENTICATED_ERRORS, 404, e404="no order with this command_id")})

token_schema = extend_schema(
    summary="Exchange a username and password for the user's API token",
    auth=[],
    responses={
        200: inline_serializer("Token", {"token": serializers.CharField()}),
        **error_responses(400, 403, 429, e400="wrong username or password, or one of them missing",
                          e403="plain HTTP under ORDERDESK_HTTPS",
                          e429="this username is locked out from this address after 5 failed logins; "
                               "`Retry-After` says when it may try again"),
    },
)


class CheckSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="the check, e.g. QTY_LIMIT, DAILY_LOSS_LIMIT, OUTSIDE_WINDOW")
    passed = serializers.BooleanField()
    tag = serializers.CharField(allow_blank=True, help_text="the tag the order would get from this check")
    detail = serializers.CharField(allow_blank=True, help_text="the figures that decided")


class LegExplanationSerializer(serializers.Serializer):
    leg = serializers.IntegerField()
    slice = serializers.IntegerField(help_text="1; a leg split at the freeze quantity lists each slice")
    qty = serializers.IntegerField(help_text="the order's quantity (lots resolved, a slice's share)")
    note = serializers.CharField(allow_blank=True, help_text="how the quantity came about: lots, slicing")
    verdict = serializers.CharField(allow_blank=True, help_text="the tag the leg would get; empty: it would be sent")
    checks = CheckSerializer(many=True)


explain_schema = extend_schema(
    summary="Explain an alert: every check's verdict per leg, nothing registered",
    description=(
        "The same body and secret as the webhook. Runs the real intake in a transaction that is rolled "
        "back, so it leaves no alert, order or rejected-alert row, and lists every check that ran on each "
        "leg, not only the first that blocked. Throttled as the webhook."),
    auth=[],
    request=ALERT_BODY,
    responses={
        200: inline_serializer("Explanation", {"legs": LegExplanationSerializer(many=True),
                                               "note": serializers.CharField(required=False)}),
        **error_responses(400, 401, 403, 413, 415, 429, 503,
                          e400="not a valid alert: `errors` lists every field's problem",
                          e401="unknown strategy or wrong secret (logged, not recorded)",
                          e403=SENDER_REFUSED,
                          e429="over the webhook's rate limits"),
        500: OpenApiResponse(ErrorSerializer, description="our fault: logged"),
    },
)


CANCEL_OUTCOMES = [("cancelled", "cancelled"), ("requested", "requested"),
                   ("waiting_for_broker_id", "waiting_for_broker_id")]
class CancelledOrderSerializer(serializers.Serializer):
    command_id = serializers.CharField()
    status = serializers.ChoiceField(Status.choices)
    tag = serializers.CharField(allow_blank=True)
    cancel = serializers.ChoiceField(CANCEL_OUTCOMES, help_text=(
        "cancelled: it was still queued, FAILED now and never sent; requested: a worker asks the broker, and "
        "the order ends when the broker reports it CANCELED (fills kept); waiting_for_broker_id: in doubt, "
        "the cancel is sent once the broker's id is known"))

CANCEL_FILTER = inline_serializer("CancelAllRequest", {
    "strategy": serializers.CharField(required=False, help_text="only this strategy's open orders"),
    "symbol": serializers.CharField(required=False, help_text="only this symbol's open orders"),
})

cancel_schema = extend_schema(
    summary="Cancel an order (permission orders.cancel_order)",
    request=None,
    responses={
        200: OpenApiResponse(CancelledOrderSerializer, description="the cancel is recorded (what happens next: `cancel`)"),
        **error_responses(*AUTHENTICATED_ERRORS, 404, 409, e404="no order with this command_id",
                          e409="the order has ended (EXECUTED or FAILED): nothing to cancel"),
    },
)
cancel_all_schema = extend_schema(
    summary="Cancel every open order, or a strategy's or a symbol's (permission orders.cancel_order)",
    request=CANCEL_FILTER,
    responses={
        200: OpenApiResponse(inline_serializer("CancelAll", {"orders": CancelledOrderSerializer(many=True)}),
                             description="the open orders it acted on"),
        **error_responses(400, *AUTHENTICATED_ERRORS, e400="`strategy` or `symbol` is not a string"),
    },
)


CLOSED_ORDER = inline_serializer("SquareOffExit", {
    "command_id": serializers.CharField(), "strategy": serializers.CharField(), "exchange": serializers.CharField(),
    "symbol": serializers.CharField(), "side": serializers.ChoiceField(Side.choices), "qty": serializers.IntegerField(),
    "product": serializers.ChoiceField(Product.choices), "status": serializers.ChoiceField(Status.choices),
    "tag": serializers.CharField(allow_blank=True, help_text="why the exit failed, e.g. RISK_BLOCKED:KILL_SWITCH_HALTED"),
}, many=True)
WAITING_POSITION = inline_serializer("SquareOffWaiting", {
    "strategy": serializers.CharField(), "exchange": serializers.CharField(), "symbol": serializers.CharField(),
    "product": serializers.ChoiceField(Product.choices)}, many=True)
close_positions_schema = extend_schema(
    summary="Square off: cancel the open orders and exit every open position that matches "
            "(permission orders.place_manual_order)",
    description="Each exit goes through the intake (source `system`): registered first, every blocker applies "
                "except those that never stop a square-off; the kill switch's HALTED still does, and the exit's "
                "tag says so. A position whose instrument still has live orders after the cancels waits for them "
                "(at most SQUAREOFF_CANCEL_WAIT_S), then the watcher registers its exit.",
    request=inline_serializer("ClosePositionsRequest", {
        "strategy": serializers.CharField(required=False, help_text="only this strategy's positions"),
        "exchange": serializers.ChoiceField([(e, e) for e in EXCHANGES], required=False),
        "symbol": serializers.CharField(required=False, help_text="only this symbol's positions")}),
    responses={
        200: OpenApiResponse(inline_serializer("ClosePositions", {
            "orders": CLOSED_ORDER, "cancelled": CancelledOrderSerializer(many=True), "waiting": WAITING_POSITION}),
            description="the exits registered now, the cancels made, the positions waiting for their cancels"),
        **error_responses(400, *AUTHENTICATED_ERRORS, e400="a filter is not a string, or an unknown exchange"),
    },
)


modify_schema = extend_schema(
    summary="Modify an open LIMIT, SL or SL-M order (permission orders.modify_order)",
    request=inline_serializer("ModifyRequest", {
        "price": serializers.DecimalField(PRICE_MAX_DIGITS, PRICE_DECIMALS, required=False,
                                          help_text="the new limit price (LIMIT, SL)"),
        "trigger_price": serializers.DecimalField(PRICE_MAX_DIGITS, PRICE_DECIMALS, required=False,
                                                  help_text="the new trigger price (SL, SL-M)"),
        "qty": serializers.IntegerField(required=False, min_value=1,
                                        help_text="the new total quantity, filled and pending"),
    }),
    responses={
        202: OpenApiResponse(inline_serializer("ModifyAccepted", {
            "command_id": serializers.CharField(), "modification": serializers.IntegerField(),
            "requested": serializers.CharField()}),
            description="recorded; a worker asks the broker (the order's events say what it answered)"),
        **error_responses(400, *AUTHENTICATED_ERRORS, 404, 409,
                          e400="not a valid change for this order (its type, the filled quantity, a number)",
                          e404="no order with this command_id",
                          e409="the order has ended, or is not at the broker yet (or in doubt)"),
    },
)
