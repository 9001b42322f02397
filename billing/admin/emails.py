"""The practice's email wording: edit any email the portal sends, starting from the current text,
and preview it with sample data (never a real client's) before it is used."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template import Context, Template, TemplateSyntaxError, engines
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from billing.models import EmailTemplate, Practice
from billing.services.email_catalogue import CATALOGUE, NAMES, email_title, sample_context
from billing.services.notify import render_email

# The HTML version is escaped as it renders (client names are data); these would turn that off.
UNESCAPED = re.compile(r"\|\s*safe(?:seq)?\b|\{%\s*autoescape\s+off")


def _disk_text(name: str) -> tuple[str, str]:
    """The standard subject and text of an email, as written in templates/emails/."""
    engine = engines["django"].engine  # type: ignore[attr-defined]
    subject = engine.get_template(f"emails/{name}.subject.txt").source
    text = engine.get_template(f"emails/{name}.txt").source
    return subject.strip(), text


class EmailTemplateForm(forms.ModelForm):
    name = forms.ChoiceField(label="Email",
                             choices=[(k.name, f"{email_title(k.name)}: {k.purpose}") for k in CATALOGUE])

    class Meta:
        model = EmailTemplate
        fields = ["name", "subject", "body_text", "body_html"]
        widgets = {"body_text": forms.Textarea(attrs={"rows": 18, "cols": 100}),
                   "body_html": forms.Textarea(attrs={"rows": 10, "cols": 100})}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        name = cleaned.get("name")
        if UNESCAPED.search(cleaned.get("body_html", "")):
            self.add_error("body_html", "The HTML version cannot turn escaping off (|safe, autoescape off): "
                                        "names and other values must stay escaped.")
        if name and not self.errors:
            candidate = EmailTemplate(name=name, subject=cleaned.get("subject", ""),
                                      body_text=cleaned.get("body_text", ""), body_html=cleaned.get("body_html", ""))
            try:
                _render_candidate(candidate)
            except TemplateSyntaxError as error:
                raise forms.ValidationError(f"The template has an error: {error}") from error
        return cleaned


def _render_candidate(candidate: EmailTemplate) -> tuple[str, str, str]:
    context = {"practice": Practice.load(), **sample_context(candidate.name)}
    subject = Template(candidate.subject).render(Context(context))
    text = Template(candidate.body_text).render(Context(context))
    html = Template("{% load billing_money %}" + candidate.body_html).render(Context(context)) \
        if candidate.body_html else ""
    return subject, text, html


class EmailTemplateAdmin(admin.ModelAdmin):
    form = EmailTemplateForm
    list_display = ["email", "purpose", "subject", "updated_at", "updated_by", "preview_link"]
    readonly_fields = ["updated_at", "updated_by"]
    change_list_template = "admin/billing/emailtemplate/change_list.html"

    @admin.display(description="email", ordering="name")
    def email(self, obj: EmailTemplate) -> str:
        return email_title(obj.name)

    @admin.display(description="what it is for")
    def purpose(self, obj: EmailTemplate) -> str:
        return next((k.purpose for k in CATALOGUE if k.name == obj.name), "")

    @admin.display(description="preview")
    def preview_link(self, obj: EmailTemplate) -> str:
        return format_html('<a href="{}">Preview</a>', reverse("admin:billing_email_preview", args=[obj.name]))

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # Start from the wording in use now, so staff edit rather than write from nothing.
        name = request.GET.get("name", "")
        if name in NAMES:
            subject, text = _disk_text(name)
            return {"name": name, "subject": subject, "body_text": text}
        return super().get_changeform_initial_data(request)

    def save_model(self, request: HttpRequest, obj: EmailTemplate, form: Any, change: bool) -> None:
        obj.updated_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def get_urls(self) -> list[URLPattern]:
        return [path("preview/<str:name>/", self.admin_site.admin_view(self.preview),
                     name="billing_email_preview"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        own = set(EmailTemplate.objects.values_list("name", flat=True))
        catalogue = [{"name": k.name, "title": email_title(k.name), "purpose": k.purpose, "own": k.name in own}
                     for k in CATALOGUE]
        return super().changelist_view(request, {"catalogue": catalogue, **(extra_context or {})})

    def preview(self, request: HttpRequest, name: str) -> HttpResponse:
        if name not in NAMES or not self.has_view_permission(request):
            return HttpResponse("Unknown email.", status=404)
        tone = request.GET.get("tone", "neutral")
        subject, text, html = render_email(name, {"practice": Practice.load(), **sample_context(name, tone=tone)})
        return TemplateResponse(request, "admin/billing/emailtemplate/preview.html", {
            **self.admin_site.each_context(request), "title": f"Preview: {email_title(name)}", "name": name,
            "subject": subject, "text": text, "html": html, "opts": self.model._meta,
            "tones": ["gentle", "neutral", "firm"], "tone": tone, "is_payment_failed": name == "payment_failed",
            "own": EmailTemplate.objects.filter(name=name).first(),
            "wrapper": render_to_string("emails/_wrapper.html", {"practice": Practice.load(), "text": ""})})
