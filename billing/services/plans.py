"""Payment plans: staff offer a balance in installments, the client agrees on the portal, each installment is
charged on its day like any charge (told first, charged at most once, receipted, retried when declined).

An installment is a charge of kind ``installment``: money collected against the balance, as a portal balance
payment is. When it is claimed (``installment_prepare``, from the collector's claim) it is cut to what the client
still owes (cancelled when nothing is), and the open charges it pays are put on hold as a portal payment's are;
its success pays them (``BalanceAllocation``), its decline lets them go and the installment is retried on the
practice's days. While a plan is current, the balance reminders wait and the client's declined session charges
are not retried on their own (the plan pays them). A plan lapses when an installment is still unpaid once its
retries end, or ``lapse_after_days`` after its date: what is left of it is cancelled, the front desk gets a
review item, the client an email, and the reminders start again.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum

from billing.errors import NotFound, Refused
from billing.models import (
    OPEN_PLAN_STATUSES,
    OPEN_STATUSES,
    PAID_STATUSES,
    BalanceAllocation,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    ClientLink,
    Installment,
    LinkPurpose,
    PaymentPlan,
    PlanConsent,
    PlanStatus,
    Practice,
    ReviewKind,
)
from billing.money import format_cents
from billing.selectors.history import installment_state
from billing.services.balance import allocations_write, client_payable, payable_charges
from billing.services.charges import charge_event_record, charge_transition
from billing.services.links import IssuedLink, link_create
from billing.services.notify import email_enqueue
from billing.services.payments import PORTAL_HOLD, card_flag_clear_if_settled, payment_withdraw_after_commit
from billing.services.review import review_open

SYSTEM = "system:plans"
# Installments are charged at this hour of their day, in the practice's zone.
CHARGE_HOUR = 10
MAX_INSTALLMENTS = 24
# An installment is always announced, at least this long before it is charged, even when the practice sends no
# notices for sessions: the client agreed to the dates weeks ahead.
DEFAULT_NOTICE = dt.timedelta(hours=24)


class PlanRefused(Refused):
    pass


class PlanNotFound(NotFound):
    """The plan is not this client's (or not this link's)."""


class PlanEnded(PlanRefused):
    """Canceled by the practice, lapsed or completed: nothing more to agree to."""


def installment_amounts(total_cents: int, count: int) -> list[int]:
    """Equal installments in whole cents; the last takes what the division leaves."""
    each = total_cents // count
    return [each] * (count - 1) + [total_cents - each * (count - 1)]


def monthly_dates(first: dt.date, count: int) -> list[dt.date]:
    """``first`` and the same day of each following month (the month's last day when it has no such day)."""
    dates = []
    for n in range(count):
        month_index = first.month - 1 + n
        year, month = first.year + month_index // 12, month_index % 12 + 1
        dates.append(dt.date(year, month, min(first.day, calendar.monthrange(year, month)[1])))
    return dates


def plan_offer(*, client: Client, total_cents: int, count: int, first_due_on: dt.date, now: dt.datetime,
               user: User | None, form_key: str, lapse_after_days: int = 30,
               send_email: bool = True) -> tuple[PaymentPlan, IssuedLink]:
    """Offer the client a plan for (part of) what they owe: ``count`` monthly installments from ``first_due_on``.
    Nothing is charged until the client agrees on the portal (the emailed link)."""
    practice = Practice.load()
    today = now.astimezone(practice.zone).date()
    if not 2 <= count <= MAX_INSTALLMENTS:
        raise PlanRefused(f"A plan has 2 to {MAX_INSTALLMENTS} installments.")
    if total_cents < count:
        raise PlanRefused("Each installment must be at least $0.01.")
    if first_due_on <= today:
        raise PlanRefused("The first installment must be after today.")
    if lapse_after_days < 1:
        raise PlanRefused("A plan lapses at least one day after an unpaid installment's date.")
    if not client.email:
        raise PlanRefused("The client has no email address to send the plan to.")
    with transaction.atomic():
        client = Client.objects.select_for_update().get(pk=client.pk)
        owed = client_payable(client).now_cents
        if total_cents > owed:
            raise PlanRefused(f"The client owes {format_cents(owed)} that is not already being paid: a plan can be "
                              "for that much at most.")
        if PaymentPlan.objects.filter(form_key=form_key[:64]).exists():
            raise PlanRefused("This plan was already offered (the form was sent twice).")
        if PaymentPlan.objects.filter(client=client, status__in=OPEN_PLAN_STATUSES).exists():
            raise PlanRefused("The client already has a plan offered or current: cancel it first.")
        actor = f"staff:{user.get_username()}" if user else SYSTEM
        try:
            with transaction.atomic():
                plan = PaymentPlan.objects.create(client=client, total_cents=total_cents, form_key=form_key[:64],
                                                  offered_at=now, offered_by=actor,
                                                  lapse_after_days=lapse_after_days)
        except IntegrityError:
            raise PlanRefused("This plan was already offered (the form was sent twice).") from None
        Installment.objects.bulk_create(
            Installment(plan=plan, number=n, due_on=day, amount_cents=amount)
            for n, (day, amount) in enumerate(zip(monthly_dates(first_due_on, count),
                                                  installment_amounts(total_cents, count), strict=True), start=1))
        issued = link_create(client=client, purpose=LinkPurpose.PAYMENT_PLAN, now=now, actor=actor, plan=plan)
        if send_email:
            email_enqueue(key=f"plan_offer:plan:{plan.pk}", client=client, template="payment_plan_offer",
                          context={"total": format_cents(total_cents), "count": count,
                                   "installments": installment_lines(plan), "link_url": issued.url,
                                   "expires_at": issued.expires_at}, now=now)
    return plan, issued


def installment_lines(plan: PaymentPlan) -> list[dict[str, object]]:
    """Each installment as the client reads it: its number, day, amount, and what became of it."""
    lines = []
    for installment in plan.installments.select_related("charge").order_by("number"):
        charge = installment.charge
        amount = charge.amount_cents if charge is not None else installment.amount_cents
        lines.append({"number": installment.number, "due_on": installment.due_on, "amount": format_cents(amount),
                      "amount_cents": amount, "state": installment_state(installment),
                      "paid": charge is not None and charge.status in PAID_STATUSES})
    return lines


def plan_paid_cents(plan: PaymentPlan) -> int:
    """What the plan's installments brought in (refunds aside)."""
    return Charge.objects.filter(installment__plan=plan, status__in=PAID_STATUSES).aggregate(
        t=Sum("amount_cents"))["t"] or 0


def plan_terms_text(plan: PaymentPlan, practice: Practice, card: str) -> str:
    """The words the client agrees to; stored verbatim with the consent."""
    lines = list(plan.installments.order_by("number"))
    days = [f"{format_cents(i.amount_cents)} on {i.due_on:%B} {i.due_on.day}, {i.due_on.year}" for i in lines]
    listed = ", ".join(days[:-1]) + " and " + days[-1]
    return (
        f"I agree to pay {practice.name} {format_cents(plan.total_cents)} of my balance in {len(lines)} installments: "
        f"{listed}, each charged to my card on file ({card}) on its day, without my being present. I will get an "
        f"email before each installment and a receipt after it. A declined installment is tried again on the "
        f"practice's usual retry days. An installment never takes more than I still owe: if I pay my balance another "
        f"way, later installments are smaller or are not charged. If an installment is still unpaid after its "
        f"retries, or {plan.lapse_after_days} days after its date, the plan ends and what I still owe is due as "
        f"usual. I can ask {practice.name}{' at ' + practice.phone if practice.phone else ''} to change or end the "
        f"plan at any time.")


def plan_for_link(*, link: ClientLink, plan_id: int | None = None) -> PaymentPlan:
    """The plan a portal link (and the plan named on its form, if any) is for; refused if it is another client's."""
    plan = link.plan
    if plan is None or plan.client_id != link.client_id or (plan_id is not None and plan_id != plan.pk):
        raise PlanNotFound("This payment plan is not part of your account.")
    return plan


def plan_agree(*, link: ClientLink, plan_id: int, ip_address: str | None, user_agent: str,
               now: dt.datetime) -> PaymentPlan:
    """The client agreed on the portal: record the consent (once, whatever the number of clicks) and schedule each
    installment's charge, announced first. Agreeing again to a current plan changes nothing."""
    plan = plan_for_link(link=link, plan_id=plan_id)
    practice = Practice.load()
    with transaction.atomic():
        plan = PaymentPlan.objects.select_for_update().select_related("client").get(pk=plan.pk)
        if plan.status == PlanStatus.CURRENT:
            return plan  # the same form sent twice: the first agreed
        if plan.status == PlanStatus.CANCELED:
            raise PlanEnded("This payment plan was canceled by the practice, so it can no longer be agreed to. "
                            f"Please call us{' at ' + practice.phone if practice.phone else ''}.")
        if plan.status != PlanStatus.OFFERED:
            raise PlanEnded(f"This payment plan has {plan.get_status_display().lower()}.")
        client = plan.client
        if not (client.card_payment_method_id and client.stripe_customer_id):
            raise PlanRefused("Please add a card first: the installments are charged to your card on file.")
        text = plan_terms_text(plan, practice, client.card_summary)
        PlanConsent.objects.create(plan=plan, client=client, link=link, text=text,
                                   text_sha256=hashlib.sha256(text.encode()).hexdigest(), agreed_at=now,
                                   ip_address=ip_address, user_agent=user_agent[:300])
        plan.status, plan.agreed_at = PlanStatus.CURRENT, now
        plan.save(update_fields=["status", "agreed_at"])
        _installments_schedule(plan, practice, now, f"client:{client.pk}")
        # The plan pays what was declined before it: those charges are no longer retried on their own.
        Charge.objects.filter(client=client, status=ChargeStatus.FAILED, next_retry_at__isnull=False).exclude(
            kind=ChargeKind.INSTALLMENT).update(next_retry_at=None, updated_at=now)
    return plan


def _installments_schedule(plan: PaymentPlan, practice: Practice, now: dt.datetime, actor: str) -> None:
    """A scheduled charge for each installment, at ``CHARGE_HOUR`` on its day, its notice the practice's lead time
    before (never sooner than that lead from now: told first)."""
    lead = dt.timedelta(hours=practice.pre_charge_notice_hours) if practice.pre_charge_notice_hours else DEFAULT_NOTICE
    count = plan.installments.count()
    for installment in plan.installments.order_by("number"):
        at = dt.datetime.combine(installment.due_on, dt.time(CHARGE_HOUR), tzinfo=practice.zone).astimezone(dt.UTC)
        at = max(at, now + lead)
        label = f"Installment {installment.number} of {count} (payment plan #{plan.pk})"
        charge = Charge.objects.create(
            client=plan.client, kind=ChargeKind.INSTALLMENT, amount_cents=installment.amount_cents,
            status=ChargeStatus.SCHEDULED, scheduled_for=at, notice_due_at=max(now, at - lead),
            breakdown=[{"label": label, "amount_cents": installment.amount_cents}])
        charge_event_record(charge=charge, from_status="", now=now, actor=actor, reason=f"agreed: {label}")
        Installment.objects.filter(pk=installment.pk).update(charge=charge)


def installment_prepare(charge: Charge, now: dt.datetime) -> bool | None:
    """Inside the collector's claim (the installment locked): cut it to what the client still owes, or cancel it
    when nothing is, and hold the open charges it pays, as a portal payment does. True: charge it now; False: it
    left the collectable set; None: the client's row is busy (a portal payment being set up): try next time."""
    client = Client.objects.select_for_update(skip_locked=True).filter(pk=charge.client_id).first()
    if client is None:
        return None
    plan = PaymentPlan.objects.filter(installments__charge=charge).first()
    if plan is None or plan.status != PlanStatus.CURRENT:
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=SYSTEM,
                          reason="its payment plan is no longer current")
        return False
    # A retry after a decline starts afresh: what the last attempt held was let go when it failed.
    BalanceAllocation.objects.filter(payment=charge).delete()
    open_ids = [c.pk for c in payable_charges(client) if c.status in OPEN_STATUSES]
    # Charges another claim holds right now, and those the collector takes on their own now (perhaps in this very
    # claim), are about to be paid by themselves: counted as paid, never taken twice.
    lockable = list(Charge.objects.select_for_update(skip_locked=True, of=("self",)).filter(
        pk__in=open_ids, status__in=OPEN_STATUSES, amount_cents__gt=0).exclude(hold_reason=PORTAL_HOLD)
        .exclude(Q(status=ChargeStatus.DUE, hold_reason="") | Q(status=ChargeStatus.FAILED, next_retry_at__lte=now))
        .order_by("appointment__starts_at", "created_at", "pk"))
    elsewhere = Charge.objects.filter(pk__in=set(open_ids) - {c.pk for c in lockable}).aggregate(
        t=Sum("amount_cents"))["t"] or 0
    owed = client_payable(client).now_cents - elsewhere
    if owed <= 0:
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=SYSTEM,
                          reason="not charged: the balance was paid another way")
        return False
    if owed < charge.amount_cents:
        old = charge.amount_cents
        charge.amount_cents = owed
        label = charge.breakdown[0]["label"] if charge.breakdown else "Installment"
        charge.breakdown = [{"label": label, "amount_cents": old},
                            {"label": "Less what was paid, or is being paid, another way", "amount_cents": owed - old}]
        Charge.objects.filter(pk=charge.pk).update(amount_cents=owed, breakdown=charge.breakdown, updated_at=now)
        charge_event_record(charge=charge, from_status=charge.status, now=now, actor=SYSTEM,
                            reason=f"cut from {format_cents(old)} to what the client still owes")
    allocations_write(charge, lockable, now)
    return True


def installment_released(*, charge: Charge, now: dt.datetime) -> None:
    """The installment's attempt took nothing (declined, refused, withdrawn): the charges it held go back as they
    were, and its next attempt holds afresh."""
    for allocation in BalanceAllocation.objects.filter(payment=charge):
        Charge.objects.filter(pk=allocation.charge_id, hold_reason=PORTAL_HOLD).update(
            hold_reason=allocation.previous_hold_reason, next_retry_at=allocation.previous_next_retry_at,
            updated_at=now)
    BalanceAllocation.objects.filter(payment=charge).delete()


def client_has_current_plan(client: Client) -> bool:
    return PaymentPlan.objects.filter(client=client, status=PlanStatus.CURRENT).exists()


def plans_review(*, now: dt.datetime) -> int:
    """The tick's step: a current plan whose installments are all settled is completed; one with an installment
    unpaid after its retries, or past its date by the plan's days, lapses. Returns how many plans ended."""
    ended = 0
    for plan_id in PaymentPlan.objects.filter(status=PlanStatus.CURRENT).values_list("pk", flat=True):
        with transaction.atomic():
            plan = PaymentPlan.objects.select_for_update(skip_locked=True).select_related("client").filter(
                pk=plan_id, status=PlanStatus.CURRENT).first()
            if plan is None:
                continue
            charges = list(Charge.objects.select_for_update().filter(installment__plan=plan).order_by("scheduled_for"))
            if any(c.status == ChargeStatus.PROCESSING for c in charges):
                continue  # being charged right now: judged once Stripe answered
            unpaid = [c for c in charges if c.status not in (*PAID_STATUSES, ChargeStatus.CANCELED)]
            if not unpaid:
                _plan_end(plan, PlanStatus.COMPLETED, "every installment was paid or no longer needed", now, SYSTEM)
                ended += 1
                continue
            late = [c for c in unpaid if (c.status == ChargeStatus.FAILED and c.next_retry_at is None)
                    or c.scheduled_for + dt.timedelta(days=plan.lapse_after_days) <= now]
            if late:
                _plan_lapse(plan, late[0], unpaid, now)
                ended += 1
    return ended


def _plan_lapse(plan: PaymentPlan, late: Charge, unpaid: list[Charge], now: dt.datetime) -> None:
    number = Installment.objects.filter(charge=late).values_list("number", flat=True).first()
    why = (f"installment {number} ({format_cents(late.amount_cents)}) was declined and its retries ended"
           if late.status == ChargeStatus.FAILED and late.next_retry_at is None
           else f"installment {number} ({format_cents(late.amount_cents)}) is still unpaid "
                f"{plan.lapse_after_days} days after its date")
    _plan_end(plan, PlanStatus.LAPSED, why, now, SYSTEM, unpaid)
    # The declines that flagged the client for the card ended with the plan: the review item below takes over, and
    # the balance reminders (which a failed-card flag silences) start again.
    card_flag_clear_if_settled(client=plan.client, now=now)
    review_open(kind=ReviewKind.PLAN_LAPSED, client=plan.client, charge=late, now=now,
                reason=f"Payment plan #{plan.pk} lapsed: {why}. What the client still owes is due as usual and the "
                       "balance reminders start again; call the client about a new plan or another card.")
    email_enqueue(key=f"plan_lapsed:plan:{plan.pk}", client=plan.client, template="payment_plan_lapsed",
                  context={"why": why, "balance": format_cents(max(client_payable(plan.client).balance_cents, 0))},
                  now=now)


def _plan_end(plan: PaymentPlan, status: str, why: str, now: dt.datetime, actor: str,
              unpaid: list[Charge] | None = None, user: User | None = None) -> None:
    """End the (locked) plan; its installments not paid (locked by the caller) are canceled, withdrawn at Stripe if
    they waited for the client's bank."""
    for charge in unpaid or []:
        payment_withdraw_after_commit(charge)
        installment_released(charge=charge, now=now)
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=actor, user=user,
                          reason=f"payment plan #{plan.pk} {PlanStatus(status).label.lower()}", next_retry_at=None)
    plan.status, plan.ended_at, plan.end_reason = status, now, why[:300]
    plan.save(update_fields=["status", "ended_at", "end_reason"])


def plan_cancel(*, plan: PaymentPlan, reason: str, user: User | None, now: dt.datetime) -> PaymentPlan:
    """Staff end an offered or current plan: nothing more is charged; what was paid stays paid."""
    if not reason.strip():
        raise PlanRefused("Say why the plan is canceled.")
    with transaction.atomic():
        plan = PaymentPlan.objects.select_for_update().get(pk=plan.pk)
        if plan.status not in OPEN_PLAN_STATUSES:
            raise PlanEnded(f"Payment plan #{plan.pk} has already ended ({plan.get_status_display().lower()}).")
        charges = list(Charge.objects.select_for_update().filter(installment__plan=plan))
        if any(c.status == ChargeStatus.PROCESSING for c in charges):
            raise PlanRefused("An installment is being charged right now: try again in a minute.")
        unpaid = [c for c in charges if c.status not in (*PAID_STATUSES, ChargeStatus.CANCELED)]
        actor = f"staff:{user.get_username()}" if user else SYSTEM
        _plan_end(plan, PlanStatus.CANCELED, f"canceled by staff: {reason.strip()}", now, actor, unpaid, user)
    return plan


def plans_for(client: Client) -> list[PaymentPlan]:
    return list(PaymentPlan.objects.filter(client=client).exclude(
        Q(status=PlanStatus.CANCELED, agreed_at__isnull=True)).prefetch_related("installments__charge"))
