from rest_framework import serializers

from brokers.models import Instrument

from .models import EXCHANGE_CODES, Order, OrderEvent


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
