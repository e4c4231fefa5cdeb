#!/usr/bin/env bash
# Builds every service and runs them together against RabbitMQ, Redis and PostgreSQL on their
# local default addresses (override with the variables in README.md). Topology, database and
# migrations are set up by the services themselves at start. Ctrl-C drains and stops them all.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --bin gateway --bin processor --bin notifier --bin dashboard

pids=()
stop() {
    trap - INT TERM EXIT
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

./target/release/processor & pids+=($!)
./target/release/gateway & pids+=($!)
./target/release/notifier & pids+=($!)
./target/release/dashboard & pids+=($!)

# Stop everything as soon as any one service exits.
wait -n "${pids[@]}"
