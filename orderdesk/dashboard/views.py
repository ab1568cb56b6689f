"""The dashboard: one page a trader keeps open all day. Server-rendered; the page's script
(static dashboard/dashboard.js) refreshes the blotter and the summary and submits the forms
without a reload, and every form also works without it. Manual orders go through the one
intake service (source `dashboard`), exactly as the webhook's alerts do; no broker I/O here."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from orderdesk.network import client_ip
from orders import cancels, modifications, reconcile, squareoff
from orders.blocker_registry import kill_switch_control
from orders.models import TERMINAL_STATUSES, Order, Source, Status, Strategy
from orders.services import explain_alert, register_alert
from orders.validation import InvalidAlert, redacted, validate_alert, validate_modification

from . import selectors
from .forms import CHOICES, LABELS, OrderForm

VIEW = "orders.view_order"
ORDERS = Order.objects.select_related("strategy", "alert")


def can_view(user) -> bool:
    return user.is_staff or user.has_perm(VIEW)


def viewer(view):
    """Signed in (else to /login/), and staff or orders.view_order (else 403)."""
    @login_required
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not can_view(request.user):
            raise PermissionDenied("viewing the dashboard needs staff or orders.view_order")
        return view(request, *args, **kwargs)
    return wrapped


def needs(perm: str, what: str):
    def decorate(view):
        @viewer
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.has_perm(perm):
                raise PermissionDenied(f"{what} needs the permission {perm}")
            return view(request, *args, **kwargs)
        return wrapped
    return decorate


def _actor(request) -> str:
    return f"dashboard:{request.user.get_username()}"[:64]


def _fragment(request) -> bool:
    """The page's script asks for a part of the page, not all of it."""
    return request.headers.get("X-Dashboard") == "fragment"


def _filters(request) -> dict:
    return {name: request.GET.get(name, "").strip() for name in selectors.FILTERS}


def _context(request, **extra) -> dict:
    user = request.user
    return {
        "strategies": Strategy.objects.filter(enabled=True).order_by("name"),
        "choices": CHOICES, "labels": LABELS, "lots": selectors.symbol_master_loaded(),
        "can_place": user.has_perm("orders.place_manual_order"),
        "can_cancel": user.has_perm("orders.cancel_order"),
        "can_modify": user.has_perm("orders.modify_order"),
        "can_switch": user.has_perm("risk.change_killswitch"),
        "statuses": Status.values, "filters": _filters(request),
        "modes": ["ACTIVE", "REDUCING", "HALTED"], **extra,
    }


def _limit(request) -> int:
    return int(request.GET["limit"]) if request.GET.get("limit", "").isdigit() else selectors.BLOTTER_ROWS


@require_GET
@viewer
def index(request):
    context = _context(request, form=OrderForm.blank(request.GET.get("strategy", "")), limit=_limit(request),
                       orders=selectors.blotter(_filters(request), _limit(request)), summary=selectors.summary())
    return render(request, "dashboard/index.html", context)


@require_GET
@viewer
def blotter(request):
    return render(request, "dashboard/_blotter.html",
                  _context(request, orders=selectors.blotter(_filters(request), _limit(request)), limit=_limit(request)))


@require_GET
@viewer
def summary(request):
    return render(request, "dashboard/_summary.html", _context(request, summary=selectors.summary()))


@require_GET
@viewer
def reconciliation(request):
    """Orders placed elsewhere (external) and the broker's positions against ours and theirs."""
    return render(request, "dashboard/reconciliation.html", _context(
        request, **reconcile.view(), external_orders=selectors.external_orders()))


@require_GET
@viewer
def legs(request):
    """The orders a placed form registered, as they now are (the page asks until all ended)."""
    orders = selectors.orders_of([i for i in request.GET.get("ids", "").split(",") if i])
    return render(request, "dashboard/_result.html", _context(request, placed=orders, pending=_pending(orders)))


def _pending(orders) -> bool:
    return any(o.status not in TERMINAL_STATUSES for o in orders)


@require_GET
@viewer
def order_detail(request, command_id):
    order = get_object_or_404(ORDERS, command_id=command_id)
    return render(request, "dashboard/order.html", _context(
        request, order=order, steps=selectors.timeline(order), fills=order.fills.order_by("id"),
        modifications=order.modifications.order_by("id"), open=order.status not in TERMINAL_STATUSES))


@require_POST
@needs("orders.place_manual_order", "placing orders")
def place_order(request):
    """The manual order form: validated by the intake's own rules, registered (or explained)
    by the intake service, source `dashboard`, actor `dashboard:<username>`."""
    form = OrderForm.from_post(request.POST)
    explaining = request.POST.get("action") == "explain"
    try:
        alert = validate_alert(form.body(), with_secret=False)
        strategy = Strategy.objects.filter(name=alert.strategy, enabled=True).first()
        if strategy is None:
            raise InvalidAlert({"strategy": [f"no enabled strategy {alert.strategy!r}"]})
        intake = dict(strategy=strategy, request=alert, source=Source.DASHBOARD, actor=_actor(request),
                      payload=redacted(form.body()), sender_ip=client_ip(request))
        if explaining:
            extra = {"explanation": explain_alert(**intake)}
        else:
            result = register_alert(**intake)
            extra = {"placed": result.orders, "note": result.note, "repeated": not result.created,
                     "pending": _pending(result.orders)}
    except InvalidAlert as exc:
        form.take_errors(exc.errors)
        status = 400
        extra = {}
    else:
        status = 200
        if not explaining:
            form = OrderForm.blank(alert.strategy)  # a new one-time alert_id for the next order
    context = _context(request, form=form, **extra)
    if _fragment(request):
        return render(request, "dashboard/_order_form.html", context, status=status)
    context.update(orders=selectors.blotter({}), summary=selectors.summary())
    return render(request, "dashboard/index.html", context, status=status)


def _back(request, text: str, level=messages.SUCCESS):
    messages.add_message(request, level, text)
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        target = "/"  # never off to another site
    return HttpResponseRedirect(target)


@require_POST
@needs("orders.cancel_order", "cancelling orders")
def cancel(request, command_id):
    order = get_object_or_404(ORDERS, command_id=command_id)
    try:
        with transaction.atomic():
            outcome = cancels.request_cancel(order, _actor(request))
    except cancels.NotCancellable as exc:
        return _back(request, str(exc), messages.ERROR)
    return _back(request, f"cancel {order.command_id} {order.symbol}: {outcome}")


@require_POST
@needs("orders.modify_order", "modifying orders")
def modify(request, command_id):
    order = get_object_or_404(ORDERS, command_id=command_id)
    values, errors = validate_modification({k: request.POST[k] for k in ("qty", "price", "trigger_price")
                                            if request.POST.get(k, "").strip()})
    if errors:
        return _back(request, "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()), messages.ERROR)
    try:
        with transaction.atomic():
            modification = modifications.request_modify(order, _actor(request), **values)
    except modifications.NotModifiable as exc:
        return _back(request, str(exc), messages.ERROR)
    return _back(request, f"modify {order.command_id}: {modification.requested()} sent to a worker")


@require_POST
@needs("orders.place_manual_order", "squaring off")
def close(request):
    """Close a position, square off a strategy, or close all: cancel, then exit (orders.squareoff)."""
    result = squareoff.close(strategy=request.POST.get("strategy") or None,
                             exchange=request.POST.get("exchange") or None,
                             symbol=request.POST.get("symbol") or None, actor=_actor(request))
    said = [f"{o.side} {o.qty} {o.symbol} {o.status}{f' {o.tag}' if o.tag else ''}" for o in result.orders]
    waiting = f"; {len(result.waiting)} waiting for their cancels" if result.waiting else ""
    return _back(request, "Square-off: " + ("; ".join(said) or "nothing was open") + waiting)


@require_POST
@needs("risk.change_killswitch", "the kill switch")
def kill_switch(request):
    mode = request.POST.get("mode", "")
    name = request.POST.get("strategy") or None
    strategy = get_object_or_404(Strategy, name=name) if name else None
    try:
        kill_switch_control()(mode, actor=_actor(request), strategy=strategy)
    except ValueError as exc:
        return _back(request, str(exc), messages.ERROR)
    return _back(request, f"kill switch {name or 'global'}: {mode}", messages.WARNING)
