from django import template

from billing.money import format_cents

register = template.Library()


@register.filter
def cents(value: object) -> str:
    """{{ 12345|cents }} -> $123.45"""
    try:
        return format_cents(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ""
