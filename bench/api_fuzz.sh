#!/usr/bin/env bash
# schemathesis against the live API: a scratch PostgreSQL database, `manage.py runserver` with DEBUG off,
# a fresh API key for source "fuzz", and every check schemathesis has (5xx, documented status codes,
# response schemas, negative/positive data, auth...). Prints schemathesis' summary with the request count.
#
#   bench/api_fuzz.sh [MAX_EXAMPLES_PER_OPERATION=100] [extra schemathesis options...]
#
# Needs PostgreSQL (BENCH_PG_SERVER, default postgres://postgres@127.0.0.1:5432) and the dev extra
# (schemathesis). The database portal_fuzz is dropped and created at each run.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXAMPLES="${1:-100}"
shift || true
SERVER="${BENCH_PG_SERVER:-postgres://postgres@127.0.0.1:5432}"
DB="${FUZZ_DATABASE:-portal_fuzz}"
PY=.venv/bin/python

$PY - "$SERVER" "$DB" <<'PY'
import sys, psycopg
server, db = sys.argv[1], sys.argv[2]
with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.execute(f'CREATE DATABASE "{db}"')
PY

export DATABASE_URL="$SERVER/$DB" DEBUG=false SECURE_SSL_REDIRECT=false ALLOWED_HOSTS=127.0.0.1,localhost \
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

set +e
.venv/bin/schemathesis run "http://127.0.0.1:$PORT/api/schema/" \
  -H "Authorization: Api-Key $KEY" --checks all --max-examples "$MAX_EXAMPLES" \
  --phases examples,coverage,fuzzing,stateful --workers 1 --request-timeout 30 --no-color "$@"
STATUS=$?
set -e
echo "server log errors (5xx tracebacks):"
grep -c "Traceback" /tmp/portal_fuzz_server.log || true
exit $STATUS
