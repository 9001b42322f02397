from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from billing.validators import validate_npi, validate_retry_days, validate_time_zone


class ChargeTrigger(models.TextChoices):
    COMPLETED = "completed", "Session marked complete"
    NOTE_SIGNED = "note_signed", "Session note signed"


class ChargeTiming(models.TextChoices):
    IMMEDIATE = "immediate", "Immediately"
    DELAYED = "delayed", "After a delay"
    WEEKLY = "weekly", "In a weekly batch"


class NoticeTone(models.TextChoices):
    GENTLE = "gentle", "Gentle"
    NEUTRAL = "neutral", "Neutral"
    FIRM = "firm", "Firm"


class Weekday(models.IntegerChoices):
    MONDAY = 0, "Monday"
    TUESDAY = 1, "Tuesday"
    WEDNESDAY = 2, "Wednesday"
    THURSDAY = 3, "Thursday"
    FRIDAY = 4, "Friday"
    SATURDAY = 5, "Saturday"
    SUNDAY = 6, "Sunday"


def _cents(**kwargs: object) -> models.PositiveIntegerField:
    return models.PositiveIntegerField(**kwargs)  # type: ignore[arg-type]


class Practice(models.Model):
    """The practice and its billing policy. One row: the portal serves one practice."""

    SINGLETON_ID = 1

    name = models.CharField(max_length=200)
    phone = models.CharField(max_length=40, help_text="Shown to clients on every page and in reminders.")
    sender_email = models.EmailField(help_text="The From address of every email the portal sends.")
    address = models.TextField(blank=True, help_text="Printed on superbills and receipts.")
    tax_id = models.CharField("tax ID (EIN)", max_length=20, blank=True)
    npi = models.CharField("group NPI", max_length=10, blank=True, validators=[validate_npi])
    time_zone = models.CharField(max_length=64, default="America/New_York", validators=[validate_time_zone])

    charge_trigger = models.CharField(max_length=20, choices=ChargeTrigger.choices,
                                      default=ChargeTrigger.COMPLETED,
                                      help_text="Charging on a signed note avoids charging sessions that "
                                                "turn out to be no-shows.")
    charge_timing = models.CharField(max_length=20, choices=ChargeTiming.choices,
                                     default=ChargeTiming.DELAYED)
    charge_delay_hours = models.PositiveSmallIntegerField(
        default=24, validators=[MinValueValidator(1), MaxValueValidator(720)],
        help_text="With delayed timing: hours between the trigger and the charge.")
    weekly_batch_weekday = models.PositiveSmallIntegerField(choices=Weekday.choices, default=Weekday.FRIDAY)
    weekly_batch_hour = models.PositiveSmallIntegerField(
        default=9, validators=[MaxValueValidator(23)], help_text="Hour of the day, in the practice's zone.")
    weekly_one_payment = models.BooleanField(
        "one card payment a week per client", default=False,
        help_text="With weekly timing: take a client's charges of the week's batch as one card payment (fewer card "
                  "fees, one line on their statement). Each session keeps its own record, ledger line and refunds.")
    pre_charge_notice_hours = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(24)],
        help_text="Email the client this many hours before a charge (0 sends no notice).")
    charging_preview = models.BooleanField(
        "preview: charge nothing", default=False,
        help_text="Everything runs (prices, schedule, reconciliation) and notices are drafted, but no card is "
                  "charged and no email reaches a client. Switching it off charges only sessions from then on; "
                  "earlier ones wait, marked \"from preview, not charged\", until staff choose to charge them.")
    charging_preview_ended_at = models.DateTimeField(
        null=True, blank=True, help_text="When preview was last switched off: sessions before it are not charged.")
    max_charge_cents = _cents(default=50_000,
                              help_text="A charge above this goes to review instead of being charged.")

    retry_days = models.CharField(max_length=50, default="3,7", validators=[validate_retry_days],
                                  help_text="Days after the first failure on which a declined card is retried.")
    failures_before_flag = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(10)])
    decline_notice_tone = models.CharField(max_length=10, choices=NoticeTone.choices,
                                           default=NoticeTone.NEUTRAL)

    no_show_fee_cents = _cents(default=7_500)
    late_cancel_fee_cents = _cents(default=5_000)
    fee_review_hours = models.PositiveSmallIntegerField(
        default=24, validators=[MaxValueValidator(168)],
        help_text="Hours staff have to waive a no-show or late-cancel fee before it is charged (0: at once).")
    cancellation_policy_version = models.CharField(max_length=40, default="1")
    cancellation_policy_effective_on = models.DateField(
        "cancellation policy effective from", null=True, blank=True,
        help_text="The day the current version took effect; a new version takes effect the day it is saved "
                  "unless you give another day.")
    cancellation_policy_text = models.TextField(blank=True)
    card_authorization_text = models.TextField(
        blank=True, help_text="What the client agrees to when saving a card: what is charged, when, and how.")

    estimate_warning_cents = _cents(
        default=30_000, validators=[MaxValueValidator(39_999)],
        help_text="Warn staff when a self-pay client's charges reach this much above their good faith estimate "
                  "(a charge that would bill $400 or more above it is held; the client may dispute that).")

    balance_reminder_threshold_cents = _cents(default=15_000)
    balance_reminder_days = models.PositiveSmallIntegerField(default=14, validators=[MinValueValidator(1)])
    balance_second_reminder_days = models.PositiveSmallIntegerField(default=7, validators=[MinValueValidator(1)])
    balance_flag_days = models.PositiveSmallIntegerField(default=7, validators=[MinValueValidator(1)])
    statement_day = models.PositiveSmallIntegerField(
        "monthly statements on day", default=1, validators=[MinValueValidator(1), MaxValueValidator(28)],
        help_text="Day of the month (1-28) the previous month's statements are emailed (from midnight, practice time).")

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "practice and billing policy"
        verbose_name_plural = "practice and billing policy"

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        self.pk = self.SINGLETON_ID
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def load(cls) -> Practice:
        """The practice's settings; a fresh install gets defaults until staff fill them in."""
        pinned = _pinned.get()
        if pinned is not None:
            return pinned
        practice = cls.objects.filter(pk=cls.SINGLETON_ID).first()
        if practice is None:
            practice, _ = cls.objects.get_or_create(
                pk=cls.SINGLETON_ID,
                defaults={"name": "Our practice", "phone": "", "sender_email": "billing@practice.example"})
        return practice

    @classmethod
    @contextmanager
    def pinned(cls) -> Iterator[Practice]:
        """Read the practice once for a unit of work (one billing_tick) instead of once per row."""
        token = _pinned.set(cls.load())
        try:
            yield _pinned.get()  # type: ignore[misc]
        finally:
            _pinned.reset(token)

    @classmethod
    def current_zone(cls) -> zoneinfo.ZoneInfo:
        name = cls.objects.filter(pk=cls.SINGLETON_ID).values_list("time_zone", flat=True).first()
        return zoneinfo.ZoneInfo(name or "UTC")

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    @property
    def retry_day_list(self) -> list[int]:
        return [int(part) for part in self.retry_days.split(",") if part.strip()]


_pinned: ContextVar[Practice | None] = ContextVar("pinned_practice", default=None)
