#!/usr/bin/env bash
# Prove a backup restores: restore DUMP (default: a dump of DATABASE_URL's database made now) into a fresh
# database beside it on the same server, run `manage.py verify_audit_chain` against the copy (every sealed
# money event and audit row as it was sealed), then drop the copy. Exit code 0 only if all of that worked.
#   deploy/restore-check.sh [DUMP]
# Reads DATABASE_URL; PG_BIN: the folder of pg_dump/pg_restore to use (their major version should be the
# server's); PYTHON: the portal's Python (default: python). Run from the portal's folder.
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL as the portal has it (its env file)}"
cd "$(dirname "$0")/.."
url="${DATABASE_URL%%\?*}"
bin="${PG_BIN:+$PG_BIN/}"
copy="portal_restore_check_$$"
copy_url="${url%/*}/$copy"
admin_url="${url%/*}/postgres"
work="$(mktemp -d)"
cleanup() {
  "${bin}psql" -q -X "$admin_url" -c "DROP DATABASE IF EXISTS $copy WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

dump="${1:-}"
if [ -z "$dump" ]; then
  dump="$work/now.dump"
  "${bin}pg_dump" --format=custom --no-owner --file="$dump" "$url"
fi
"${bin}psql" -q -X -v ON_ERROR_STOP=1 "$admin_url" -c "CREATE DATABASE $copy" >/dev/null
"${bin}pg_restore" --no-owner --exit-on-error --dbname="$copy_url" "$dump"
echo "Restored $(basename "$dump") into $copy; checking the audit chain ..."
DATABASE_URL="$copy_url" "${PYTHON:-python}" manage.py verify_audit_chain
echo "The backup restores and its audit chain is intact."
