#!/usr/bin/env bash
# The benchmark: builds the release binaries and measures the pipeline against the raw broker in
# one run, on the local RabbitMQ, Redis and PostgreSQL. `./bench.sh --quick` is the short smoke.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bins
./target/release/bench "$@"
