#!/usr/bin/env bash
# What PostgreSQL spends on the processor's writes per applied event, side by side: the schema
# as migrated now ("now") and each variant named on the command line ("before" when none is):
# VARIANT.sql turns a fresh copy of the schema into the variant, and VARIANT.batch.sql, where
# there is one, is what the processor would write under it (batch.sql otherwise). Each runs in a
# namespace of its own, in alternating rounds of its batch under pgbench (one client,
# synchronous_commit off so the figure is PostgreSQL's work, not the disk's flush). Prints, per
# schema and round, events per second, the CPU time of every PostgreSQL process per event, the
# WAL bytes per event and the bytes the namespace's tables and indexes grew by per event.
#   bench/persist/run.sh [SECONDS] [ROUNDS] [VARIANT ...]      (defaults: 20, 3 and before)
# Needs: the local PostgreSQL (trust auth for postgres over 127.0.0.1), pgbench, and the gateway
# built (release or debug; CARGO_TARGET_DIR is honoured) to apply the migrations.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
rounds=${2:-3}
shift $(($# < 2 ? $# : 2))
variants=("${@:-before}")
schemas=(now "${variants[@]}")
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
        read -r -a stat 2>/dev/null < "/proc/$pid/stat" || continue
        total=$((total + stat[13] + stat[14] + stat[15] + stat[16]))
    done
    echo "$total"
}

size() { # the bytes of every table and index of a namespace
    "${psql[@]}" -c "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$1' AND c.relkind = 'r'"
}

run=$$
for schema in "${schemas[@]}"; do
    namespace="persist_${schema//-/_}_$run"
    PIPELINE_NAMESPACE=$namespace DATABASE_URL=$url "$gateway" migrate >/dev/null 2>&1
    if [[ $schema != now ]]; then
        PGOPTIONS="$PGOPTIONS -c search_path=$namespace" "${psql[@]}" -f "$schema.sql"
    fi
done
trap 'for s in "${schemas[@]}"; do "${psql[@]}" -c "DROP SCHEMA IF EXISTS persist_${s//-/_}_$run CASCADE"; done' EXIT

hz=$(getconf CLK_TCK)
printf '| schema | round | events/s | PostgreSQL CPU µs/event | WAL bytes/event | stored bytes/event |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for round in $(seq 1 "$rounds"); do
    for schema in "${schemas[@]}"; do
        namespace="persist_${schema//-/_}_$run"
        batch=batch.sql
        [[ -f $schema.batch.sql ]] && batch=$schema.batch.sql
        "${psql[@]}" -c "CHECKPOINT"
        size_before=$(size "$namespace")
        wal_before=$("${psql[@]}" -c "SELECT pg_current_wal_lsn()")
        cpu_before=$(cpu_ticks)
        tps=$(PGOPTIONS="$PGOPTIONS -c search_path=$namespace -c synchronous_commit=off" \
            "$pgbench" -h 127.0.0.1 -U postgres -n -c 1 -T "$seconds" -f "$batch" pipeline \
            | awk '/^tps/ {print $3}')
        cpu_after=$(cpu_ticks)
        wal_after=$("${psql[@]}" -c "SELECT pg_current_wal_lsn()")
        wal=$("${psql[@]}" -c "SELECT pg_wal_lsn_diff('$wal_after', '$wal_before')")
        grown=$(($(size "$namespace") - size_before))
        awk -v s="$schema" -v r="$round" -v tps="$tps" -v secs="$seconds" -v hz="$hz" \
            -v cpu=$((cpu_after - cpu_before)) -v wal="$wal" -v grown="$grown" 'BEGIN {
                events = tps * 16 * secs
                printf "| %s | %d | %.0f | %.1f | %.0f | %.0f |\n", s, r, tps * 16,
                    cpu / hz * 1e6 / events, wal / events, grown / events
            }'
    done
done
