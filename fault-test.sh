#!/usr/bin/env bash
# The fault-injection run: builds the services and the harness, then drives keyed load through
# fault proxies while cutting RabbitMQ, Redis and PostgreSQL, SIGKILLing and SIGTERMing the
# services, and checks that every accepted event was applied exactly once.
# Usage: ./fault-test.sh [seconds, default 60] [events per second, default 100]
set -euo pipefail
cd "$(dirname "$0")"
cargo build --bins
./target/debug/faults --seconds "${1:-60}" --rate "${2:-100}"
