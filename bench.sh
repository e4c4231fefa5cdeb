#!/usr/bin/env bash
# The benchmark: measures the pipeline against the raw broker in one run, on the local
# RabbitMQ, Redis and PostgreSQL, with release builds of the services.
#   ./bench.sh            the full report (about 30 minutes, half of it the 1,000,000-event backfill)
#   ./bench.sh --quick    a short correctness smoke (debug builds, when --quick comes first; speed
#                         is not the point)
set -euo pipefail
cd "$(dirname "$0")"
target=${CARGO_TARGET_DIR:-target}
if [[ "${1:-}" == "--quick" ]]; then
    cargo build --bins
    exec "$target/debug/bench" "$@"
fi
cargo build --release --bins
exec "$target/release/bench" "$@"
