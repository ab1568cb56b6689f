from rest_framework import serializers

from brokers.models import Instrument

from .models import EXCHANGE_CODES, ExternalOrder, Order, OrderEvent, PositionDifference


def intake_response(result) -> dict:
    """The webhook's reply: built by hand, it is on the hot path. `note`: target legs already
    at their target."""
    reply = {
        "alert_id": result.alert.alert_id,
        "orders": [
            {
                "command_id": o.command_id,
                "leg": o.leg,
                "slice": o.slice,
                "symbol": o.symbol,
                "side": o.side,
                "qty": o.qty,
                "status": o.status,
                "tag": o.tag,
            }
            for o in result.orders
        ],
    }
    if result.note:
        reply["note"] = result.note
    return reply


def explain_response(explanation) -> dict:
    reply = {"legs": [
        {"leg": leg.leg, "slice": leg.slice, "qty": leg.qty, "note": leg.note, "verdict": leg.verdict,
         "checks": [{"code": c.code, "passed": c.passed, "tag": c.tag, "detail": c.detail} for c in leg.checks]}
        for leg in explanation.legs
    ]}
    if explanation.note:
        reply["note"] = explanation.note
    return reply


class OrderEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderEvent
        fields = ["kind", "from_status", "to_status", "tag", "actor", "detail", "at"]


class OrderSerializer(serializers.ModelSerializer):
    strategy = serializers.CharField(source="strategy.name")
    alert_id = serializers.CharField(source="alert.alert_id")

    class Meta:
        model = Order
        fields = [
            "command_id", "alert_id", "leg", "slice", "strategy", "source", "execution_type", "exchange", "symbol",
            "side", "qty", "order_type", "price", "trigger_price", "product", "status", "tag", "tag_family", "tag_code",
            "broker_order_id", "filled_qty", "avg_price", "created_at", "sent_at", "updated_at",
        ]
        read_only_fields = fields


class OrderDetailSerializer(OrderSerializer):
    events = OrderEventSerializer(many=True, read_only=True)

    class Meta(OrderSerializer.Meta):
        fields = OrderSerializer.Meta.fields + ["events"]
        read_only_fields = fields


class CancelAllSerializer(serializers.Serializer):
    strategy = serializers.CharField(required=False, max_length=64)
    symbol = serializers.CharField(required=False, max_length=64)


class ClosePositionsSerializer(serializers.Serializer):
    strategy = serializers.CharField(required=False, max_length=64)
    exchange = serializers.ChoiceField([(e, e) for e in EXCHANGE_CODES], required=False)
    symbol = serializers.CharField(required=False, max_length=64)


def close_response(result) -> dict:
    """What a close did: the exits registered now, the cancels, the positions still waiting."""
    return {
        "orders": [{"command_id": o.command_id, "strategy": o.strategy.name, "exchange": o.exchange,
                    "symbol": o.symbol, "side": o.side, "qty": o.qty, "product": o.product, "status": o.status,
                    "tag": o.tag} for o in result.orders],
        "cancelled": [{"command_id": o.command_id, "status": o.status, "tag": o.tag, "cancel": outcome}
                      for o, outcome in result.cancelled],
        "waiting": [{"strategy": r.strategy.name, "exchange": r.exchange, "symbol": r.symbol, "product": r.product}
                    for r in result.waiting],
    }


class InstrumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Instrument
        fields = ["exchange", "trading_symbol", "symbol", "instrument_type", "expiry", "strike", "option_type",
                  "lot_size", "tick_size", "freeze_qty", "token"]
        read_only_fields = fields


class ExternalOrderSerializer(serializers.ModelSerializer):
    class Meta:
        model = ExternalOrder
        fields = ["broker", "broker_order_id", "client_order_id", "exchange", "symbol", "side", "qty", "product",
                  "order_type", "price", "status", "raw_status", "reason", "filled_qty", "avg_price", "first_seen_at",
                  "updated_at"]
        read_only_fields = fields


class ReconciledPositionSerializer(serializers.Serializer):
    exchange = serializers.CharField()
    symbol = serializers.CharField()
    product = serializers.CharField()
    broker_qty = serializers.IntegerField(help_text="net at the broker (its PositionBook, at the watcher's last read)")
    ours_qty = serializers.IntegerField(help_text="net of every strategy's position, from our fills")
    external_qty = serializers.IntegerField(help_text="net of the day's external orders")
    difference = serializers.IntegerField(help_text="broker - ours - external: 0 when they agree")


class PositionDifferenceSerializer(serializers.ModelSerializer):
    difference = serializers.IntegerField(read_only=True)

    class Meta:
        model = PositionDifference
        fields = ["exchange", "symbol", "product", "broker_qty", "ours_qty", "external_qty", "difference",
                  "first_seen_at", "last_seen_at", "confirmed_at"]
        read_only_fields = fields


class ExternalPnlSerializer(serializers.Serializer):
    realized = serializers.DecimalField(max_digits=18, decimal_places=4)
    unrealized = serializers.DecimalField(max_digits=18, decimal_places=4)
    unpriced = serializers.ListField(child=serializers.CharField(),
                                     help_text="instruments held without a last price: their unrealized P&L is unknown")


class ReconciliationSerializer(serializers.Serializer):
    last_reconciled_at = serializers.DateTimeField(allow_null=True)
    positions = ReconciledPositionSerializer(many=True)
    differences = PositionDifferenceSerializer(many=True, help_text="confirmed and not yet resolved")
    external_pnl = ExternalPnlSerializer(help_text="the external bucket of the account P&L")
