#!/usr/bin/env bash
# What PostgreSQL spends on the processor's writes per applied event, side by side: the schema
# as migrated now ("now") and as `before.sql` turns it ("before"), each in a namespace of its
# own, alternating runs of `batch.sql` under pgbench (one client, synchronous_commit off so the
# figure is PostgreSQL's work, not the disk's flush). Prints, per schema and round, events per
# second, the CPU time of every PostgreSQL process per event and the WAL bytes per event.
#   bench/persist/run.sh [SECONDS] [ROUNDS]      (defaults: 20 and 3)
# Needs: the local PostgreSQL (trust auth for postgres over 127.0.0.1), pgbench, and the gateway
# built (release or debug; CARGO_TARGET_DIR is honoured) to apply the migrations.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
rounds=${2:-3}
target=${CARGO_TARGET_DIR:-../../target}
gateway=$target/release/gateway
[[ -x $gateway ]] || gateway=$target/debug/gateway
pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench | tail -n1)
url=postgres://postgres@127.0.0.1:5432/pipeline
psql=(psql -qAtX -h 127.0.0.1 -U postgres -d pipeline -v ON_ERROR_STOP=1)
export PGOPTIONS="-c client_min_messages=warning"

cpu_ticks() { # every PostgreSQL process's user and system time, in clock ticks
    local total=0 pid
    for pid in $(pgrep -x postgres); do
        read -r -a stat < "/proc/$pid/stat" 2>/dev/null || continue
        total=$((total + stat[13] + stat[14] + stat[15] + stat[16]))
    done
    echo "$total"
}

run=$$
for schema in now before; do
    namespace="persist_${schema}_$run"
    PIPELINE_NAMESPACE=$namespace DATABASE_URL=$url "$gateway" migrate >/dev/null 2>&1
    if [[ $schema == before ]]; then
        PGOPTIONS="$PGOPTIONS -c search_path=$namespace" "${psql[@]}" -f before.sql
    fi
done
trap 'for s in now before; do "${psql[@]}" -c "DROP SCHEMA IF EXISTS persist_${s}_$run CASCADE"; done' EXIT

hz=$(getconf CLK_TCK)
printf '| schema | round | events/s | PostgreSQL CPU µs/event | WAL bytes/event |\n| --- | --- | --- | --- | --- |\n'
for round in $(seq 1 "$rounds"); do
    for schema in now before; do
        namespace="persist_${schema}_$run"
        wal_before=$("${psql[@]}" -c "SELECT pg_current_wal_lsn()")
        cpu_before=$(cpu_ticks)
        tps=$(PGOPTIONS="$PGOPTIONS -c search_path=$namespace -c synchronous_commit=off" \
            "$pgbench" -h 127.0.0.1 -U postgres -n -c 1 -T "$seconds" -f batch.sql pipeline \
            | awk '/^tps/ {print $3}')
        cpu_after=$(cpu_ticks)
        wal_after=$("${psql[@]}" -c "SELECT pg_current_wal_lsn()")
        wal=$("${psql[@]}" -c "SELECT pg_wal_lsn_diff('$wal_after', '$wal_before')")
        awk -v s="$schema" -v r="$round" -v tps="$tps" -v secs="$seconds" -v hz="$hz" \
            -v cpu=$((cpu_after - cpu_before)) -v wal="$wal" 'BEGIN {
                events = tps * 16 * secs
                printf "| %s | %d | %.0f | %.1f | %.0f |\n", s, r, tps * 16,
                    cpu / hz * 1e6 / events, wal / events
            }'
    done
done
