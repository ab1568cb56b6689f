from django import template
from django.utils import timezone

from .. import selectors

register = template.Library()


@register.filter
def ist_ms(moment) -> str:
    """A time as people read it here: IST, to the millisecond (audits need them)."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    return f"{local:%H:%M:%S}.{local.microsecond // 1000:03d}"


@register.filter
def in_words(order) -> str:
    return selectors.in_words(order)


@register.filter
def money(value) -> str:
    return "" if value is None else f"{value:,.2f}"
