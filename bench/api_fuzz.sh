#!/usr/bin/env bash
# schemathesis against the live API: a scratch PostgreSQL database, `manage.py runserver` with DEBUG off,
# a fresh API key for source "fuzz", and every check schemathesis has (5xx, documented status codes,
# response schemas, negative/positive data, auth...). Prints schemathesis' summary with the request count.
# schemathesis.toml (read from the repository root) says where a documented 400 answers a rule no schema
# can state. The quick, derandomized run of the same checks is tests/integrations/ehr/api/test_api_fuzz.py.
#
#   bench/api_fuzz.sh [MAX_EXAMPLES_PER_OPERATION=100] [extra schemathesis options...]
#
# Needs PostgreSQL (BENCH_PG_SERVER, default postgres://postgres@127.0.0.1:5432) and the dev extra
# (schemathesis). The database portal_fuzz is dropped and created at each run; BENCH_DATABASE_URL names
# an existing database to use as it is instead (tests/test_benchmarks.py's smoke run), PYTHON another
# interpreter than .venv's, FUZZ_PHASES fewer schemathesis phases.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXAMPLES="${1:-100}"
shift || true
SERVER="${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
DB="${FUZZ_DATABASE:-portal_fuzz}"
PY="${PYTHON:-.venv/bin/python}"
PHASES="${FUZZ_PHASES:-examples,coverage,fuzzing,stateful}"

if [ -z "${BENCH_DATABASE_URL:-}" ]; then
$PY - "$SERVER" "$DB" <<'PY'
import sys, psycopg
server, db = sys.argv[1], sys.argv[2]
with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.execute(f'CREATE DATABASE "{db}"')
PY
fi

export DATABASE_URL="${BENCH_DATABASE_URL:-$SERVER/$DB}" DEBUG=false SECURE_SSL_REDIRECT=false ALLOWED_HOSTS=127.0.0.1,localhost \
       EHR_API_RATE=1000000/min LOG_LEVEL=ERROR SECRET_KEY=fuzz-only-0123456789abcdefghijklmnopqrstuvwxyz-0123456789 \
       STRIPE_SECRET_KEY=sk_test_fuzz STRIPE_PUBLISHABLE_KEY=pk_test_fuzz STRIPE_WEBHOOK_SECRET=whsec_fuzz \
       PORTAL_BASE_URL=https://portal.example
$PY manage.py migrate --noinput -v 0
KEY=$($PY manage.py shell -c '
from django.utils import timezone
from billing.models import Practice, Service, Payer, FeeScheduleEntry
from integrations.ehr.keys import api_key_create
Practice.objects.create(name="Fuzz Counseling", phone="555-0100", sender_email="billing@fuzz.example")
s = Service.objects.create(cpt_code="90837", description="Individual therapy", fee_cents=20000)
FeeScheduleEntry.objects.create(payer=Payer.objects.create(name="Aetna", payer_id="60054"), service=s, allowed_cents=12000)
print(api_key_create(source="fuzz", now=timezone.now()).key)' | tail -1)

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$PY manage.py runserver --noreload "127.0.0.1:$PORT" >/tmp/portal_fuzz_server.log 2>&1 &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -sf "http://127.0.0.1:$PORT/api/schema/" >/dev/null && break
  sleep 0.5
done

# Records under the id generation tries first ("0"), so that reads, partial updates and payments reach a
# record (and its answer is checked against the schema), not only the 404.
push() {
  curl -sf -X "$1" -H "Authorization: Api-Key $KEY" -H "Content-Type: application/json" -d "$3" \
    "http://127.0.0.1:$PORT/api/v1/$2" >/dev/null
}
push PUT clinicians/0/ '{"name": "Dana Reyes", "npi": "1234567893"}'
push PUT clients/0/ '{"first_name": "Ana", "last_name": "Example", "billing_type": "self_pay", "session_rate_cents": 15000}'
push PUT clients/0/coverage/ '{"payer_id": "60054", "member_id": "M-1", "copay_cents": 2500}'
push PUT appointments/0/ '{"clinician": "0", "clients": ["0"], "service_code": "90837", "status": "completed",
  "starts_at": "2026-11-23T10:00:00-05:00", "note_signed_at": "2026-11-23T11:00:00-05:00"}'
push POST insurance-payments/ '{"appointment": "0", "client": "0", "allowed_cents": 12000, "paid_cents": 9500,
  "patient_responsibility_cents": 2500, "paid_on": "2026-12-01", "reference": "0"}'

set +e
"$(dirname "$PY")/schemathesis" run "http://127.0.0.1:$PORT/api/schema/" \
  -H "Authorization: Api-Key $KEY" --checks all --max-examples "$MAX_EXAMPLES" \
  --phases "$PHASES" --workers 1 --request-timeout 30 --no-color "$@"
STATUS=$?
set -e
echo "server log errors (5xx tracebacks):"
grep -c "Traceback" /tmp/portal_fuzz_server.log || true
exit $STATUS
