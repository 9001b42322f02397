#!/usr/bin/env bash
# Back up the portal's PostgreSQL database: one compressed pg_dump file (custom format) per run in
# BACKUP_DIR (default /var/backups/portal), files older than KEEP_DAYS (default 35) removed.
# Reads DATABASE_URL (as the portal does). Run it daily (deploy/systemd/portal-backup.timer, or cron) and
# copy BACKUP_DIR off the machine. Restore with deploy/restore-check.sh first, to prove a dump is good.
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL as the portal has it (its env file)}"
url="${DATABASE_URL%%\?*}"  # without the portal's own options (conn_max_age ...), which are not libpq's
dir="${BACKUP_DIR:-/var/backups/portal}"
keep="${KEEP_DAYS:-35}"
bin="${PG_BIN:+$PG_BIN/}"
mkdir -p "$dir"
umask 077  # a dump holds every client's data
file="$dir/portal-$(date -u +%Y%m%dT%H%M%SZ).dump"
"${bin}pg_dump" --format=custom --no-owner --file="$file.partial" "$url"
mv "$file.partial" "$file"
find "$dir" -name 'portal-*.dump' -mtime +"$keep" -delete
echo "$file"
