"""A believable practice to try the portal on (docs/product.md, workflow 14): ``manage.py seed_demo``.

Riverbend Counseling Group: six clinicians, the usual psychotherapy CPT codes, two payers with fee
schedules, about sixty clients across every way a client pays, and the four weeks of sessions up to
today plus the week ahead, billed through the same services the EHR API uses.

Seeding is idempotent: every row is found by a key before it is created (``source="demo"`` plus an
``external_id`` for EHR-style records, the model's own unique field for the rest), and rows that exist
are left as they are, including any change staff made in the admin. Sessions are keyed by client and
date, so a run on a later day adds that day's new sessions and never repeats old ones. To start over,
delete the demo database (``manage.py demo --fresh``).

Cards are a separate step, ``seed_demo_cards``, because it needs a Stripe to talk to: ``manage.py demo``
runs it against the local fake Stripe server it starts (``seed_demo --with-cards`` does too, given
``STRIPE_API_BASE``). Each card is saved through the same enrollment flow a client follows.

Everything random comes from ``random.Random`` seeded with 2026 and the record's key, so a client's
name, benefits and schedule do not change with how many clients are seeded (``clients=`` makes a
smaller practice for tests; it is the first N of the full one).
"""

from __future__ import annotations

import datetime as dt
import random
import re
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing.models import (
    Appointment,
    AppointmentEvent,
    AppointmentStatus,
    BillingType,
    CategoryRate,
    Charge,
    ChargeEvent,
    Client,
    Clinician,
    Coverage,
    FeeScheduleEntry,
    LedgerEntry,
    Participant,
    Payer,
    PlaceOfService,
    PolicyAcknowledgment,
    Practice,
    ReviewItem,
    Service,
)
from billing.validators import npi_is_valid
from devtools.demo_staff import ensure_demo_staff

SEED = 2026
SOURCE = "demo"
# Appointment history is written as if the EHR had pushed it.
ACTOR = "api:demo"
FULL_SIZE = 60

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "demo-portal-2026"
ADMIN_EMAIL = "admin@example.org"

POLICY_VERSION = "2026-01"
OLD_POLICY_VERSION = "2025-03"

PRACTICE: dict[str, Any] = {
    "name": "Riverbend Counseling Group",
    "phone": "(732) 555-0100",
    "sender_email": "billing@example.com",
    "address": "214 River Road, Suite 3\nRed Bank, NJ 07701",
    "tax_id": "22-3918457",
    "time_zone": "America/New_York",
    "cancellation_policy_version": POLICY_VERSION,
    "cancellation_policy_text": (
        "Your appointment time is reserved for you. If you need to cancel or reschedule, please let us "
        "know at least 24 hours ahead by phone at (732) 555-0100 or through your clinician.\n\n"
        "A session canceled with less than 24 hours' notice is a late cancellation, with a $50.00 fee. "
        "A session missed without notice is a no-show, with a $75.00 fee. Insurance does not pay these "
        "fees, so they are charged to the card you keep on file.\n\n"
        "We waive the fee for emergencies, sudden illness and unsafe travel: just tell us what happened."
    ),
    "card_authorization_text": (
        "By saving this card you authorize Riverbend Counseling Group to charge it, without asking you "
        "each time, for:\n"
        "- your share of each completed session: your copay, coinsurance or the part of your deductible "
        "your insurance plan says you pay, worked out from your benefits on file and the amount your "
        "insurer allows for the service; or your self-pay or sliding-scale rate if you pay for sessions "
        "yourself;\n"
        "- late-cancellation ($50.00) and no-show ($75.00) fees under our cancellation policy.\n\n"
        "Session charges are made about 24 hours after the session is marked complete. We email you "
        "before each charge and send a receipt after it, showing how the amount was worked out. A charge "
        "over $500.00 is checked by our staff first. You can replace your card at any time from the link "
        "in our emails, or withdraw this authorization by calling (732) 555-0100."
    ),
}

# (name, credentials, first nine NPI digits: the tenth is the check digit, computed below)
CLINICIANS = [
    ("Elena Marquez", "PsyD", "124508763"),
    ("James Okafor", "LCSW", "131947206"),
    ("Priya Raman", "LMFT", "145230981"),
    ("Daniel Whitfield", "LPC", "152869430"),
    ("Hannah Cho", "LCSW", "168304527"),
    ("Marcus Bell", "PhD", "177092645"),
]

# (CPT, description clients see, practice fee in cents, is a group, minutes)
SERVICES = [
    ("90791", "Intake assessment (diagnostic evaluation)", 22_500, False, 60),
    ("90832", "Individual therapy, 30 minutes", 11_000, False, 30),
    ("90834", "Individual therapy, 45 minutes", 15_000, False, 45),
    ("90837", "Individual therapy, 60 minutes", 19_000, False, 60),
    ("90846", "Family therapy without the client present, 50 minutes", 16_000, False, 50),
    ("90847", "Family therapy with the client present, 50 minutes", 17_500, False, 50),
    ("90853", "Group therapy, 90 minutes", 7_000, True, 90),
]
MINUTES = {cpt: minutes for cpt, _, _, _, minutes in SERVICES}

# Allowed amounts sit below the practice's fees, as in-network contracts do.
PAYERS = [
    ("Aetna", "60054", {"90791": 14_520, "90832": 6_840, "90834": 9_875, "90837": 13_210,
                        "90846": 10_230, "90847": 10_860, "90853": 3_215}),
    ("Horizon Blue Cross Blue Shield of New Jersey", "22099",
     {"90791": 15_640, "90832": 7_120, "90834": 10_450, "90837": 13_980, "90846": 10_790,
      "90847": 11_400, "90853": 3_480}),
]
# Plans whose members pay a fixed amount per session, whatever the service.
CATEGORY_RATES = [("EAP", 0), ("Medicaid", 0)]

# How clients pay, and how many of each the full demo has. Clients are dealt out round-robin over
# these, so the first thirteen already hold one of each (a small seed still covers every case).
CLIENT_MODES: list[tuple[str, str, int]] = [
    ("copay", BillingType.INSURANCE, 10),
    ("deductible_not_met", BillingType.INSURANCE, 5),
    ("deductible_partly_met", BillingType.INSURANCE, 5),
    ("deductible_met", BillingType.INSURANCE, 5),
    ("coinsurance_no_deductible", BillingType.INSURANCE, 3),
    ("eap", BillingType.INSURANCE, 2),
    ("medicaid", BillingType.INSURANCE, 2),
    # Benefits a person must sort out: these land in the needs-review queue when billed.
    ("review_no_coverage", BillingType.INSURANCE, 1),
    ("review_copay_and_coinsurance", BillingType.INSURANCE, 1),
    ("review_deductible_over", BillingType.INSURANCE, 1),
    ("self_pay_rate", BillingType.SELF_PAY, 8),
    ("self_pay_full_fee", BillingType.SELF_PAY, 7),
    ("sliding_scale", BillingType.SLIDING_SCALE, 10),
]
REVIEW_MODES = {"review_no_coverage", "review_copay_and_coinsurance", "review_deductible_over"}

FIRST_NAMES = [
    "Maya", "Jordan", "Aisha", "Liam", "Sofia", "Mateo", "Grace", "Ethan", "Nadia", "Owen", "Camila",
    "Noah", "Zoe", "Darius", "Hannah", "Ravi", "Isabel", "Marcus", "Leah", "Tomas", "Chloe", "Andre",
    "Fatima", "Caleb", "Mei", "Julian", "Priscilla", "Kofi", "Elise", "Samuel", "Yara", "Wesley",
    "Ingrid", "Malik", "Rosa", "Declan", "Keiko", "Gabriel", "Amara", "Felix", "Lucia", "Theo",
    "Bianca", "Hugo", "Naomi", "Victor", "Tessa", "Rafael", "Simone", "Arjun", "Brooke", "Dmitri",
    "Esther", "Colin", "Lina", "Patrick", "Vanessa", "Omar", "Heidi", "Reggie", "Ana", "Bryce",
]
LAST_NAMES = [
    "Patel", "Nguyen", "Okonkwo", "Brennan", "Alvarez", "Kowalski", "Haddad", "Sullivan", "Kim",
    "Ferreira", "Goldberg", "Mensah", "O'Connor", "Castillo", "Lindqvist", "Chaudhry", "Romano",
    "Washington", "Yamamoto", "Dubois", "Hernandez", "Abernathy", "Novak", "Osei", "McAllister",
    "Tanaka", "Morales", "Fitzgerald", "Rahman", "Jablonski", "Delgado", "Whitaker", "Achebe",
    "Larsen", "Moreau", "Gupta", "Carvalho", "Bishop", "Nakamura", "Rossi", "Petrov", "Adeyemi",
    "Quinn", "Soto", "Eriksen", "Huang", "Barrett", "Mahmoud", "Vasquez", "Holloway", "Ibrahim",
    "Szabo", "Monroe", "Choi", "Lombardi", "Dunn", "Acosta", "Pham", "Reyes", "Gallagher", "Singh",
    "Waller",
]

# ICD-10 codes a therapy practice bills most (superbills only: never sent to Stripe).
DIAGNOSES = ["F41.1", "F32.1", "F43.23", "F33.1", "F43.10", "F41.0", "F43.22", "F34.1", "F40.10",
             "F42.2", "F90.0"]
FAMILY_DIAGNOSES = ["Z63.0", "F43.23"]

# (CPT, weight) for a client's usual session.
USUAL_SERVICE = [("90837", 45), ("90834", 35), ("90832", 10), ("90847", 7), ("90846", 3)]

# Weekly groups: (key, clinician index, weekday, start hour, diagnosis, members by billing type)
GROUPS = [
    ("group-anxiety", 2, 1, 16, ["F41.1"],
     {BillingType.INSURANCE: 3, BillingType.SELF_PAY: 1, BillingType.SLIDING_SCALE: 2}),
    ("group-mood", 4, 3, 12, ["F32.1"],
     {BillingType.INSURANCE: 2, BillingType.SELF_PAY: 1, BillingType.SLIDING_SCALE: 2}),
]

# Individual sessions start on the hour, the last at 17:00, Monday to Friday.
FIRST_HOUR, LAST_HOUR = 9, 17
PAST_DAYS, FUTURE_DAYS = 28, 7


def rng_for(*key: object) -> random.Random:
    """A generator per record: the same key always draws the same values, whatever else is seeded."""
    return random.Random(":".join(str(part) for part in (SEED, *key)))


def npi_with_check_digit(first_nine: str) -> str:
    for digit in "0123456789":
        if npi_is_valid(first_nine + digit):
            return first_nine + digit
    raise ValueError(f"No check digit makes {first_nine} a valid NPI.")  # unreachable: Luhn always has one


@dataclass
class ClientPlan:
    key: str
    mode: str
    billing_type: str
    first_name: str
    last_name: str
    email: str
    phone: str
    date_of_birth: dt.date
    session_rate_cents: int | None
    diagnoses: list[str]
    clinician: int
    usual_cpt: str
    weekday: int
    hour: int
    every_other_week: bool
    week_phase: int
    first_day: dt.date | None  # a new client's intake day; None: in care before the window


@dataclass
class AppointmentPlan:
    key: str
    clinician: int
    cpt: str
    starts_at: dt.datetime
    clients: list[str]
    diagnoses: list[str]
    status: str = AppointmentStatus.SCHEDULED
    note_signed_at: dt.datetime | None = None
    events: list[tuple[str, str, dt.datetime]] = field(default_factory=list)

    @property
    def ends_at(self) -> dt.datetime:
        return self.starts_at + dt.timedelta(minutes=MINUTES[self.cpt])

    @property
    def place_of_service(self) -> str:
        """About one individual session in three by video from the client's home (10), the rest at the
        office (11): the same for a session each time the demo is seeded."""
        home = len(self.clients) == 1 and zlib.crc32(self.key.encode()) % 3 == 0
        return PlaceOfService.TELEHEALTH_HOME if home else PlaceOfService.OFFICE


@dataclass
class SeedResult:
    created: dict[str, int]
    counts: dict[str, int]
    admin_created: bool


def client_modes(size: int) -> list[tuple[str, str]]:
    """(mode, billing type) for the first ``size`` clients, dealt round-robin over CLIENT_MODES."""
    dealt: list[tuple[str, str]] = []
    for round_ in range(max(count for _, _, count in CLIENT_MODES)):
        dealt += [(mode, billing_type) for mode, billing_type, count in CLIENT_MODES if round_ < count]
    return dealt[:size]


def _email_part(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


class _Seeder:
    def __init__(self, *, now: dt.datetime, size: int) -> None:
        self.now = now
        self.size = size
        self.zone: ZoneInfo | None = None  # the practice's, known once the practice row exists
        self.created: dict[str, int] = {}

    def _count(self, name: str, created: bool) -> None:
        self.created[name] = self.created.get(name, 0) + int(created)

    # Reference data -----------------------------------------------------------------------------

    def practice(self) -> Practice:
        practice = Practice.load()
        # Fill in the practice only while it still has the fresh-install defaults: never undo staff edits.
        if practice.name in ("", "Our practice"):
            for name, value in PRACTICE.items():
                setattr(practice, name, value)
            practice.npi = npi_with_check_digit("109834562")
            practice.full_clean()
            practice.save()
            self._count("practice", True)
        return practice

    def clinicians(self) -> list[Clinician]:
        clinicians = []
        for number, (name, credentials, npi_start) in enumerate(CLINICIANS, start=1):
            first, last = name.split(" ", 1)
            clinician, created = Clinician.objects.get_or_create(
                source=SOURCE, external_id=f"clinician-{number}",
                defaults={"name": name, "credentials": credentials, "npi": npi_with_check_digit(npi_start),
                          "email": f"{first[0].lower()}.{_email_part(last)}@example.org"})
            self._count("clinicians", created)
            clinicians.append(clinician)
        return clinicians

    def services_and_payers(self) -> None:
        services = {}
        for cpt, description, fee, is_group, _ in SERVICES:
            services[cpt], created = Service.objects.get_or_create(
                cpt_code=cpt, defaults={"description": description, "fee_cents": fee, "is_group": is_group})
            self._count("services", created)
        for name, payer_id, allowed in PAYERS:
            payer, created = Payer.objects.get_or_create(payer_id=payer_id, defaults={"name": name})
            self._count("payers", created)
            for cpt, cents in allowed.items():
                _, created = FeeScheduleEntry.objects.get_or_create(
                    payer=payer, service=services[cpt], defaults={"allowed_cents": cents})
                self._count("fee schedule entries", created)
        for category, cents in CATEGORY_RATES:
            _, created = CategoryRate.objects.get_or_create(plan_category=category,
                                                            defaults={"amount_cents": cents})
            self._count("category rates", created)

    # Clients ------------------------------------------------------------------------------------

    def client_plans(self, today: dt.date) -> list[ClientPlan]:
        order = random.Random(SEED)
        first_names, last_names = FIRST_NAMES[:], LAST_NAMES[:]
        order.shuffle(first_names)
        order.shuffle(last_names)
        taken: set[tuple[int, int, int]] = set()
        for _, clinician, weekday, hour, _, _ in GROUPS:
            taken |= {(clinician, weekday, hour), (clinician, weekday, hour + 1)}

        plans = []
        for index, (mode, billing_type) in enumerate(client_modes(self.size)):
            key = f"client-{index + 1:03d}"
            rng = rng_for(key)
            first, last = first_names[index], last_names[index]
            domain = rng.choice(["example.com", "example.com", "example.org"])
            local = rng.choice([f"{_email_part(first)}.{_email_part(last)}",
                                f"{_email_part(first)[0]}{_email_part(last)}",
                                f"{_email_part(first)}{_email_part(last)[0]}{rng.randint(10, 99)}"])
            age = rng.randint(19, 71)
            born = today.replace(year=today.year - age, day=1) - dt.timedelta(days=rng.randint(0, 360))
            rate = None
            if mode == "self_pay_rate":
                rate = rng.choice([14_000, 15_000, 16_000, 17_500])
            elif billing_type == BillingType.SLIDING_SCALE:
                rate = rng.randrange(4_000, 11_500, 500)

            cpt = rng.choices([c for c, _ in USUAL_SERVICE], weights=[w for _, w in USUAL_SERVICE])[0]
            if cpt in ("90846", "90847"):
                diagnoses = FAMILY_DIAGNOSES[:]
            else:
                diagnoses = rng.sample(DIAGNOSES, k=rng.choice([1, 1, 2]))

            clinician, weekday, hour = rng.randrange(len(CLINICIANS)), rng.randrange(5), rng.randint(
                FIRST_HOUR, LAST_HOUR)
            while (clinician, weekday, hour) in taken:  # no clinician sees two clients at once
                clinician, weekday, hour = rng.randrange(len(CLINICIANS)), rng.randrange(5), rng.randint(
                    FIRST_HOUR, LAST_HOUR)
            taken.add((clinician, weekday, hour))

            # One client in eight started care during the window, with an intake first.
            first_day = None
            if rng.random() < 0.125:
                first_day = today - dt.timedelta(days=rng.randint(3, PAST_DAYS - 7))

            plans.append(ClientPlan(
                key=key, mode=mode, billing_type=billing_type, first_name=first, last_name=last,
                email=f"{local}@{domain}", phone=f"(732) 555-01{(index + 1) % 100:02d}", date_of_birth=born,
                session_rate_cents=rate, diagnoses=diagnoses, clinician=clinician, usual_cpt=cpt,
                weekday=weekday, hour=hour, every_other_week=rng.random() < 0.25, week_phase=rng.randint(0, 1),
                first_day=first_day))
        return plans

    def clients(self, plans: list[ClientPlan], payers: dict[str, Payer], today: dt.date) -> dict[str, Client]:
        clients = {}
        for plan in plans:
            client, created = Client.objects.get_or_create(
                source=SOURCE, external_id=plan.key,
                defaults={"first_name": plan.first_name, "last_name": plan.last_name, "email": plan.email,
                          "phone": plan.phone, "date_of_birth": plan.date_of_birth,
                          "billing_type": plan.billing_type, "session_rate_cents": plan.session_rate_cents})
            self._count("clients", created)
            clients[plan.key] = client
            if created:
                self.coverage(client, plan, payers, today)
            self.acknowledgments(client, plan)
        return clients

    def coverage(self, client: Client, plan: ClientPlan, payers: dict[str, Payer], today: dt.date) -> None:
        """The client's benefits, as the EHR would push them (only for a client created just now)."""
        if plan.billing_type != BillingType.INSURANCE or plan.mode == "review_no_coverage":
            return
        rng = rng_for(plan.key, "coverage")
        payer = payers[rng.choice(["60054", "22099"])]
        member_id = (f"W{rng.randint(10**8, 10**9 - 1)}" if payer.payer_id == "60054"
                     else f"3HZN{rng.randint(10**7, 10**8 - 1)}")
        fields: dict[str, Any] = {"payer": payer, "payer_name": payer.name, "member_id": member_id}
        deductible = rng.choice([100_000, 150_000, 200_000, 300_000])
        coinsurance = Decimal(rng.choice([10, 20, 20, 30]))
        if plan.mode == "copay":
            fields["copay_cents"] = rng.choice([1_500, 2_000, 2_500, 3_000, 4_000, 5_000])
        elif plan.mode == "deductible_not_met":
            fields.update(deductible_cents=deductible, deductible_met_cents=0, coinsurance_percent=coinsurance)
        elif plan.mode == "deductible_partly_met":
            # A little left to meet, so the month shows sessions moving from deductible to coinsurance.
            left = rng.choice([8_000, 12_500, 20_000, 30_000])
            fields.update(deductible_cents=deductible, deductible_met_cents=deductible - left,
                          coinsurance_percent=coinsurance)
        elif plan.mode == "deductible_met":
            fields.update(deductible_cents=deductible, deductible_met_cents=deductible,
                          coinsurance_percent=coinsurance)
        elif plan.mode == "coinsurance_no_deductible":
            fields["coinsurance_percent"] = coinsurance
        elif plan.mode == "eap":
            fields = {"payer": None, "payer_name": "ComPsych Employee Assistance Program",
                      "member_id": f"EAP{rng.randint(100000, 999999)}", "plan_category": "EAP"}
        elif plan.mode == "medicaid":
            fields = {"payer": None, "payer_name": "NJ FamilyCare (Medicaid)",
                      "member_id": f"{rng.randint(10**11, 10**12 - 1)}", "plan_category": "Medicaid"}
        elif plan.mode == "review_copay_and_coinsurance":
            fields.update(copay_cents=3_000, coinsurance_percent=Decimal(20))
        elif plan.mode == "review_deductible_over":
            fields.update(deductible_cents=100_000, deductible_met_cents=125_000, coinsurance_percent=coinsurance)
        # Benefits for the plan year that covers the whole window, even in early January.
        start = dt.date((today - dt.timedelta(days=PAST_DAYS + 7)).year, 1, 1)
        Coverage.objects.create(client=client, effective_from=start, **fields)
        self._count("coverage", True)

    def acknowledgments(self, client: Client, plan: ClientPlan) -> None:
        """Most clients signed the current cancellation policy; some only an older one, a few none."""
        rng = rng_for(plan.key, "policy")
        draw = rng.random()
        versions = ([POLICY_VERSION] if draw < 0.75 else [OLD_POLICY_VERSION, POLICY_VERSION] if draw < 0.87
                    else [OLD_POLICY_VERSION] if draw < 0.95 else [])
        for version in versions:
            if version == POLICY_VERSION:
                at = max(self.now - dt.timedelta(days=rng.randint(20, 320)),
                         dt.datetime(2026, 1, 5, 14, tzinfo=dt.UTC))
            else:
                at = self.now - dt.timedelta(days=rng.randint(360, 700))
            at = min(at, self.now - dt.timedelta(days=1))
            source = rng.choice(["portal", "portal", "staff", f"api:{SOURCE}"])
            _, created = PolicyAcknowledgment.objects.get_or_create(
                client=client, policy_version=version,
                defaults={"acknowledged_at": at, "source": source,
                          "ip_address": f"203.0.113.{rng.randint(2, 254)}" if source == "portal" else None})
            self._count("policy acknowledgments", created)

    # Sessions ------------------------------------------------------------------------------------

    def appointment_plans(self, clients: list[ClientPlan], today: dt.date) -> list[AppointmentPlan]:
        assert self.zone is not None
        monday = today - dt.timedelta(days=today.weekday())
        window = (today - dt.timedelta(days=PAST_DAYS), today + dt.timedelta(days=FUTURE_DAYS))
        plans: list[AppointmentPlan] = []
        for client in clients:
            for week in range(-5, 2):
                day = monday + dt.timedelta(weeks=week, days=client.weekday)
                if not window[0] <= day <= window[1]:
                    continue
                if client.first_day is not None and day < client.first_day:
                    continue
                if client.every_other_week and (week + client.week_phase) % 2:
                    continue
                key = f"{client.key}-{day:%Y%m%d}"
                rng = rng_for(key)
                if client.first_day is None and rng.random() < 0.08:  # vacations, sick days: weekly-ish
                    continue
                is_intake = client.first_day is not None and not any(p.clients == [client.key] for p in plans)
                plans.append(AppointmentPlan(
                    key=key, clinician=client.clinician, cpt="90791" if is_intake else client.usual_cpt,
                    starts_at=dt.datetime.combine(day, dt.time(client.hour), tzinfo=self.zone),
                    clients=[client.key], diagnoses=client.diagnoses))
        plans += self.group_plans(clients, monday, window)
        for plan in plans:
            self.outcome(plan)
        self.cover_every_outcome(plans)
        return sorted(plans, key=lambda p: (p.starts_at, p.key))

    def group_plans(self, clients: list[ClientPlan], monday: dt.date,
                    window: tuple[dt.date, dt.date]) -> list[AppointmentPlan]:
        """Weekly groups whose members pay in different ways, each billed at their own rate."""
        assert self.zone is not None
        unused = [c for c in clients if c.mode not in REVIEW_MODES]
        plans: list[AppointmentPlan] = []
        for key, clinician, weekday, hour, diagnoses, wanted in GROUPS:
            members = []
            for billing_type, count in wanted.items():
                fitting = [c for c in unused if c.billing_type == billing_type][:count]
                members += fitting
                unused = [c for c in unused if c not in fitting]
            # A group needs at least four people, paying at least two ways, to show per-participant rates.
            if len(members) < 4 or len({m.billing_type for m in members}) < 2:
                continue
            for week in range(-5, 2):
                day = monday + dt.timedelta(weeks=week, days=weekday)
                if window[0] <= day <= window[1]:
                    plans.append(AppointmentPlan(
                        key=f"{key}-{day:%Y%m%d}", clinician=clinician, cpt="90853",
                        starts_at=dt.datetime.combine(day, dt.time(hour), tzinfo=self.zone),
                        clients=sorted(m.key for m in members), diagnoses=diagnoses))
        return plans

    def outcome(self, plan: AppointmentPlan) -> None:
        """What happened to the session, with the history the EHR would have reported."""
        rng = rng_for(plan.key, "outcome")
        booked = min(plan.starts_at - dt.timedelta(days=rng.randint(7, 21)), self.now)
        plan.events = [("", AppointmentStatus.SCHEDULED, booked)]
        if plan.starts_at > self.now:
            if rng.random() < 0.06:
                self.set_outcome(plan, AppointmentStatus.CANCELED,
                                 plan.starts_at - dt.timedelta(days=rng.randint(2, 5)))
            return
        draw = rng.random()
        if len(plan.clients) > 1:  # groups meet whoever comes: the session itself is completed
            draw = 1.0
        if draw < 0.05:
            self.set_outcome(plan, AppointmentStatus.NO_SHOW, plan.starts_at + dt.timedelta(minutes=20))
        elif draw < 0.10:
            self.set_outcome(plan, AppointmentStatus.LATE_CANCEL,
                             plan.starts_at - dt.timedelta(hours=rng.randint(2, 20)))
        elif draw < 0.16:
            self.set_outcome(plan, AppointmentStatus.CANCELED,
                             plan.starts_at - dt.timedelta(days=rng.randint(2, 6)))
        else:
            self.set_outcome(plan, AppointmentStatus.COMPLETED, plan.ends_at)
            # Notes get signed within a day or two; the last few days' are often still open.
            recent = self.now - plan.ends_at < dt.timedelta(days=3)
            if rng.random() < (0.45 if recent else 0.95):
                plan.note_signed_at = plan.ends_at + dt.timedelta(hours=rng.randint(1, 40))
                if plan.note_signed_at > self.now:
                    plan.note_signed_at = None

    def set_outcome(self, plan: AppointmentPlan, status: str, at: dt.datetime) -> None:
        at = min(at, self.now)
        plan.status = status
        plan.note_signed_at = None
        plan.events.append((AppointmentStatus.SCHEDULED, status, max(at, plan.events[0][2])))

    def cover_every_outcome(self, plans: list[AppointmentPlan]) -> None:
        """Chance alone may miss an outcome in a small practice: make sure each appears at least once."""
        done = [p for p in sorted(plans, key=lambda p: p.key)
                if p.status == AppointmentStatus.COMPLETED and len(p.clients) == 1]
        for status, offset in ((AppointmentStatus.NO_SHOW, dt.timedelta(minutes=20)),
                               (AppointmentStatus.LATE_CANCEL, -dt.timedelta(hours=6)),
                               (AppointmentStatus.CANCELED, -dt.timedelta(days=3))):
            if len(done) > 3 and not any(p.status == status for p in plans):
                plan = done.pop(len(done) // 2)
                plan.events = plan.events[:1]
                self.set_outcome(plan, status, plan.starts_at + offset)
        if done and all(p.note_signed_at for p in done):
            max(done, key=lambda p: p.starts_at).note_signed_at = None

    def appointments(self, plans: list[AppointmentPlan], clinicians: list[Clinician],
                     clients: dict[str, Client]) -> None:
        # Imported here so the seed's models-only parts load even while the billing services change.
        from billing.services.schedule import appointment_event_record, appointment_set_status

        existing = set(Appointment.objects.filter(source=SOURCE, external_id__in=[p.key for p in plans])
                       .values_list("external_id", flat=True))
        # Oldest first, so deductibles are used up by sessions in the order they happened.
        for plan in plans:
            if plan.key in existing:
                continue
            appointment = Appointment.objects.create(
                source=SOURCE, external_id=plan.key, clinician=clinicians[plan.clinician],
                service_code=plan.cpt, diagnosis_codes=plan.diagnoses, starts_at=plan.starts_at,
                duration_minutes=MINUTES[plan.cpt], note_signed_at=plan.note_signed_at,
                place_of_service=plan.place_of_service)
            Participant.objects.bulk_create(Participant(appointment=appointment, client=clients[key])
                                            for key in plan.clients)
            self._count("appointments", True)
            _, _, booked = plan.events[0]
            appointment_event_record(appointment=appointment, from_status="", now=booked, actor=ACTOR,
                                     reason="booked in the EHR")
            for _, status, at in plan.events[1:]:
                # The same path an EHR status push takes: the status moves, then billing follows it
                # (appointment_set_status calls appointment_sync_charges), priced as of that moment.
                appointment_set_status(appointment=appointment, status=status, now=at, actor=ACTOR)

    # ---------------------------------------------------------------------------------------------

    def run(self) -> SeedResult:
        with transaction.atomic():
            self.practice()
            self.zone = Practice.current_zone()
            today = self.now.astimezone(self.zone).date()
            clinicians = self.clinicians()
            self.services_and_payers()
            payers = {p.payer_id: p for p in Payer.objects.all()}
            plans = self.client_plans(today)
            clients = self.clients(plans, payers, today)
            self.appointments(self.appointment_plans(plans, today), clinicians, clients)
            admin_created = ensure_admin()
            # Role logins and the demo's fixed second factor, so a person can sign in (SECURITY.md, demo).
            ensure_demo_staff(admin_username=ADMIN_USERNAME, password=ADMIN_PASSWORD)
        return SeedResult(created=self.created, counts=demo_counts(), admin_created=admin_created)


# The card each demo client saves when the demo runs against the local fake Stripe server (localstripe's
# test numbers, docs/fake-stripe.md): most pay, a few show the failure paths, some clients keep no card.
CARD_OK = "4242424242424242"
CARD_DECLINED_WHEN_CHARGED = "4000000000000341"
# Needs authentication on every charge, so the off-session charge asks the client to confirm on-session
# (...3155 would need it only when saved, then pay off-session like 4242).
CARD_NEEDS_AUTHENTICATION = "4000002760003184"
CARD_KINDS = {CARD_OK: "pay", CARD_DECLINED_WHEN_CHARGED: "decline when charged",
              CARD_NEEDS_AUTHENTICATION: "need authentication"}
CARD_ACTOR = "system:demo"


# Fixed for the first clients, so even a small seed (the tests') shows every path: a copay client with no
# card, a coinsurance client whose card declines, a self-pay client whose bank asks to authenticate.
CARD_CHOSEN: dict[str, str | None] = {"client-001": None, "client-004": CARD_DECLINED_WHEN_CHARGED,
                                      "client-011": CARD_NEEDS_AUTHENTICATION}


def demo_card_number(client_key: str) -> str | None:
    """The test card ``client_key`` keeps on file in the demo, or None for a client who has not saved one."""
    if client_key in CARD_CHOSEN:
        return CARD_CHOSEN[client_key]
    draw = rng_for(client_key, "card").random()
    if draw < 0.80:
        return CARD_OK
    if draw < 0.88:
        return CARD_DECLINED_WHEN_CHARGED
    if draw < 0.93:
        return CARD_NEEDS_AUTHENTICATION
    return None


@dataclass
class CardSeedResult:
    saved: dict[str, int]  # new cards, by what the card does when charged
    already: int  # demo clients who had a card before this run
    without: int  # demo clients who keep no card (the "no card on file" path)
    relinked: int = 0  # clients whose Stripe ids were dropped because the fake server had lost its data


def seed_demo_cards(*, now: dt.datetime | None = None) -> CardSeedResult:
    """Save each demo client's card through the real enrollment flow, against the local fake Stripe server.

    The flow a client follows, minus the browser: an enrollment link, the consent (``enrollment_begin``
    creates the Stripe customer and a SetupIntent), then what Stripe.js's ``confirmCardSetup`` does with
    the Card Element's inputs (``_confirm_like_stripe_js``), then ``card_save_from_setup_intent``.
    Clients who already have a card are skipped, so running it again adds nothing.

    Only for the fake server (``STRIPE_API_BASE`` set): typing card numbers is Stripe.js's job, and real
    Stripe refuses raw card numbers from a server.
    """
    import httpx
    from django.conf import settings

    from billing.services.cards import card_save_from_setup_intent, enrollment_begin, enrollment_link_send
    from billing.services.links import link_resolve

    if not settings.STRIPE_API_BASE:
        raise ValueError("Demo cards are saved only against the local fake Stripe server: set STRIPE_API_BASE "
                         "(manage.py demo starts one and does).")
    now = now or timezone.now()
    result = CardSeedResult(saved={}, already=0, without=0)
    result.relinked = _forget_lost_stripe_ids()
    with httpx.Client(base_url=settings.STRIPE_API_BASE, timeout=30) as stripe_js:
        for client in Client.objects.filter(source=SOURCE).order_by("external_id"):
            number = demo_card_number(client.external_id)
            if client.card_payment_method_id:
                result.already += 1
                continue
            if number is None:
                result.without += 1
                continue
            issued = enrollment_link_send(client=client, now=now, actor=CARD_ACTOR, send_email=False)
            link = link_resolve(token=issued.url.rstrip("/").rsplit("/", 1)[1], now=now)
            secret = enrollment_begin(link=link, ip_address="127.0.0.1", user_agent="portal demo seed", now=now)
            setup_intent_id = _confirm_like_stripe_js(stripe_js, secret, number, settings.STRIPE_PUBLISHABLE_KEY,
                                                      exp_year=now.year + 3)
            if card_save_from_setup_intent(setup_intent_id=setup_intent_id, now=now) is None:
                raise RuntimeError(f"The fake Stripe server did not save card {number} for {client.external_id}.")
            kind = CARD_KINDS[number]
            result.saved[kind] = result.saved.get(kind, 0) + 1
    return result


def _confirm_like_stripe_js(http: Any, client_secret: str, number: str, publishable_key: str, *,
                            exp_year: int) -> str:
    """Confirm a SetupIntent as Stripe.js does from the browser (publishable key only; a 3-D Secure card
    needs a second confirm, the client passing the bank's check). Returns the SetupIntent id."""
    setup_intent = client_secret.split("_secret_")[0]
    url = f"/v1/setup_intents/{setup_intent}/confirm"
    body: dict[str, Any] = {"key": publishable_key, "use_stripe_sdk": True, "client_secret": client_secret}
    card = {"number": number, "exp_month": 12, "exp_year": exp_year, "cvc": "123"}
    answer = http.post(url, json={**body, "payment_method_data": {"type": "card", "card": card}}).json()
    if answer.get("status") == "requires_action":
        answer = http.post(url, json=body).json()
    if answer.get("status") != "succeeded":
        raise RuntimeError(f"The fake Stripe server did not confirm the demo card: {answer}")
    return str(answer["id"])


def demo_enrollment_link(*, now: dt.datetime | None = None) -> tuple[Client, str] | None:
    """A new card-enrollment link (not emailed) for a demo client without a card, so a person can try the
    client's page at once; a client who has one gets the same page to replace it if all have cards."""
    from billing.services.cards import enrollment_link_send

    demo_clients = Client.objects.filter(source=SOURCE).order_by("external_id")
    client = demo_clients.filter(card_payment_method_id="").first() or demo_clients.first()
    if client is None:
        return None
    issued = enrollment_link_send(client=client, now=now or timezone.now(), actor=CARD_ACTOR, send_email=False)
    return client, issued.url


def _forget_lost_stripe_ids() -> int:
    """Demo clients whose Stripe customer the fake server no longer has (its store file was deleted but the
    database was kept) are unlinked, so the seed enrolls them again instead of every charge being refused."""
    from integrations.stripe.gateway import GatewayRefused, get_gateway

    linked = Client.objects.filter(source=SOURCE).exclude(stripe_customer_id="")
    sample = linked.order_by("pk").first()
    if sample is None:
        return 0
    try:
        get_gateway().customer_get(sample.stripe_customer_id)
        return 0
    except GatewayRefused:
        pass
    # Straight to the rows, not through the services: this is the demo repairing its own data, not a
    # client or staff action, and there is nothing in Stripe to keep consistent with.
    return linked.update(stripe_customer_id="", stripe_link_status="", card_payment_method_id="", card_brand="",
                         card_last4="", card_exp_month=None, card_exp_year=None)


def ensure_admin() -> bool:
    """The demo's staff login, created only if no user of that name exists (its password is never reset)."""
    user_model = get_user_model()
    if user_model.objects.filter(username=ADMIN_USERNAME).exists():
        return False
    user_model.objects.create_superuser(ADMIN_USERNAME, ADMIN_EMAIL, ADMIN_PASSWORD)
    return True


def demo_counts() -> dict[str, int]:
    """How many demo rows there are, by kind: what the seed reports and its test compares."""
    demo_appointments = Appointment.objects.filter(source=SOURCE)
    return {
        "clinicians": Clinician.objects.filter(source=SOURCE).count(),
        "services": Service.objects.count(),
        "payers": Payer.objects.count(),
        "fee schedule entries": FeeScheduleEntry.objects.count(),
        "category rates": CategoryRate.objects.count(),
        "clients": Client.objects.filter(source=SOURCE).count(),
        "coverage": Coverage.objects.filter(client__source=SOURCE).count(),
        "policy acknowledgments": PolicyAcknowledgment.objects.filter(client__source=SOURCE).count(),
        "appointments": demo_appointments.count(),
        "participants": Participant.objects.filter(appointment__source=SOURCE).count(),
        "appointment events": AppointmentEvent.objects.filter(appointment__source=SOURCE).count(),
        "charges": Charge.objects.filter(client__source=SOURCE).count(),
        "charge events": ChargeEvent.objects.filter(charge__client__source=SOURCE).count(),
        "ledger entries": LedgerEntry.objects.filter(client__source=SOURCE).count(),
        "review items": ReviewItem.objects.filter(client__source=SOURCE).count(),
    }


def seed_demo(*, now: dt.datetime | None = None, clients: int = FULL_SIZE) -> SeedResult:
    """Seed (or top up) the demo practice as of ``now``; safe to run any number of times."""
    if not 1 <= clients <= FULL_SIZE:
        raise ValueError(f"The demo has between 1 and {FULL_SIZE} clients.")
    return _Seeder(now=now or timezone.now(), size=clients).run()
