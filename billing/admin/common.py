"""Building blocks shared by the staff console's admins: money shown as dollars, view-only rows."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property

from billing.money import format_cents


def dollars(cents: int | None) -> str:
    """$1,234.56 for a list column or a read-only field; a dash when there is no amount."""
    return "-" if cents is None else format_cents(cents)


def staff_user(request: HttpRequest) -> User:
    """The signed-in staff member, for the services' who-did-it fields (the admin serves no one else)."""
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


def has_billing_permission(request: HttpRequest, codename: str) -> bool:
    """May the signed-in staff member do what the custom permission ``billing.<codename>`` allows?

    The codenames are the models' ``Meta.permissions`` (Charge: refund_charge, release_charge,
    cancel_charge; Client: link_stripe_customer, send_card_link); a superuser may do everything.
    """
    user = request.user
    return bool(user.is_active and user.is_staff and (user.is_superuser or user.has_perm(f"billing.{codename}")))


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else many or word + 's'}"


def confirmation(model_admin: admin.ModelAdmin, request: HttpRequest, *, action: str, title: str,
                 rows: list[str], submit: str, form: forms.Form | None = None, intro: str = "",
                 warnings: list[str] | None = None) -> TemplateResponse:
    """The intermediate page of an action: what will happen to which rows, and any input it needs.

    The page posts the same selection and action back to the list with ``apply`` set; the action then
    validates its form and calls its service.
    """
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": model_admin.model._meta,
        "intro": intro,
        "rows": rows,
        "warnings": warnings or [],
        "form": form,
        "submit": submit,
        "action": action,
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across") == "1",
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/billing/confirm_action.html", context)


def confirmed(request: HttpRequest) -> bool:
    """Did the request come from an action's confirmation page (rather than the list)?"""
    return request.method == "POST" and "apply" in request.POST


class DollarsField(forms.DecimalField):
    """Staff type dollars ("75.00"); the model keeps integer cents.

    A plain integer box for a ``*_cents`` field invites "75" meaning $75 to be saved as 75 cents.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", 10)
        kwargs.setdefault("decimal_places", 2)
        kwargs.setdefault("min_value", Decimal(0))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        # Stored cents arrive as int; what the user typed (a re-displayed form) arrives as str.
        if isinstance(value, int):
            return f"{Decimal(value) / 100:.2f}"
        return value

    def clean(self, value: Any) -> int | None:
        amount = super().clean(value)
        return None if amount is None else int(amount * 100)

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.clean(data) != initial
        except forms.ValidationError:
            return True


class DollarsMixin:
    """Edit every ``*_cents`` integer field of the model in dollars."""

    def formfield_for_dbfield(self, db_field: models.Field, request: HttpRequest, **kwargs: Any) -> Any:
        if isinstance(db_field, models.IntegerField) and db_field.name.endswith("_cents"):
            label = str(db_field.verbose_name).removesuffix(" cents")
            return db_field.formfield(form_class=DollarsField, label=f"{label[:1].upper()}{label[1:]} ($)",
                                      **kwargs)
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]


class ViewOnlyMixin:
    """Rows the application never edits or deletes, whatever the user's permissions (superusers included):
    history and money rows (ledger, events, payment attempts), written by services, and audit entries."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return {}


class ActionsOnlyMixin:
    """Rows staff act on only through admin actions (which call services): the form is view-only.

    The model-level change permission stays, because actions check it; a single row's form never saves.
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(ViewOnlyMixin, admin.TabularInline):
    """A related list shown on a page for context; each row links to its own page."""

    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Every column is a display: listing them here also lets columns be admin methods.
        return self.fields


class NewestRowsFormSet(BaseInlineFormSet):
    """The inline's first ``rows_shown`` rows by its ordering (newest first), read with one more to learn
    whether there are others (``more``): no count of a client's whole history on every page view."""

    rows_shown = 20

    def get_queryset(self) -> Any:
        if not hasattr(self, "_newest"):
            found = list(super().get_queryset()[: self.rows_shown + 1])
            self.more = len(found) > self.rows_shown
            self._newest = found[: self.rows_shown]
        return self._newest

    @property
    def all_rows_url(self) -> str:
        """The model's own list, filtered to this record: where every row is (searchable, paged)."""
        assert self.model is not None
        opts = self.model._meta
        fk = self.fk
        return (reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
                + f"?{fk.name}__{fk.target_field.name}__exact={self.instance.pk}")

    @property
    def all_rows_label(self) -> str:
        assert self.model is not None
        return f"All {self.model._meta.verbose_name_plural} of this {self.instance._meta.verbose_name}"


class NewestRowsInline(ReadOnlyInline):
    """A related list that grows with the years (a client's charges, ledger): the page shows the newest
    ``rows_shown`` and links to the model's list for the rest, so a client's page costs the same after five
    years of weekly sessions as after five."""

    formset = NewestRowsFormSet
    template = "admin/billing/newest_rows_inline.html"


class IdCheckedAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete, re-showing a form whose submitted id is not an id (a changed form): Django
    would query with it and fail; an invalid id is left out (the form already says the field is wrong)."""

    def optgroups(self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None) -> Any:
        target = self.field.remote_field.get_related_field()
        valid = []
        for item in value:
            try:
                if "\x00" not in str(item):
                    target.to_python(item)
                    valid.append(item)
            except ValidationError:
                pass
        return super().optgroups(name, valid, attr)


class IdCheckedAutocompleteMixin:
    """For admins with ``autocomplete_fields``: the autocomplete widget above."""

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):  # type: ignore[attr-defined]
            kwargs["widget"] = IdCheckedAutocompleteSelect(db_field, self.admin_site,  # type: ignore[attr-defined]
                                                           using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class CappedCountPaginator(Paginator):
    """Every staff list's paginator: it counts the list's rows only up to ``CAP`` (one ``COUNT(*)`` over
    ``LIMIT CAP + 1``), so a list of a million sessions costs what a list of ten thousand does. Past that,
    the list says "more than 10,000" and pages through the first 10,000 rows; a filter or a search narrows
    it (the admin's own full count, ``show_full_result_count``, is off for the same reason)."""

    CAP = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capped = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, models.QuerySet):
            return super().count
        found = rows.order_by()[: self.CAP + 1].count()
        self.capped = found > self.CAP
        return min(found, self.CAP)

    @property
    def count_label(self) -> str:
        """The count as the list shows it: exact up to CAP, "more than 10,000" beyond."""
        return f"more than {self.CAP:,}" if self.count and self.capped else f"{self.count:,}"
