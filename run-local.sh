#!/usr/bin/env bash
# Builds every service and runs them together against RabbitMQ, Redis and PostgreSQL on their
# local default addresses (override with the variables in README.md). Topology, database and
# migrations are set up by the services themselves at start. Ctrl-C drains and stops them all.
#
# The first run makes a development API key with every scope and keeps it in .pipeline-dev-key
# (git-ignored); every run prints it. Webhooks and image source URLs may reach this machine (a
# receiver on 127.0.0.1), which deployments refuse by default. Images are kept in data/objects
# (git-ignored) and served by the gateway.
set -euo pipefail
cd "$(dirname "$0")"

# RabbitMQ, Redis and PostgreSQL: started where installed but stopped; one line if missing.
scripts/start-services.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release --bin gateway --bin processor --bin notifier --bin dashboard --bin imager

key_file=.pipeline-dev-key
if [[ ! -s "$key_file" ]]; then
    # A key named dev whose file was lost is replaced.
    "$target"/release/gateway keys revoke dev >/dev/null 2>&1 || true
    (umask 077 && "$target"/release/gateway keys create --name dev --scopes '*' > "$key_file")
fi
echo "Development API key (every scope), kept in $key_file:"
echo "    $(cat "$key_file")"
echo "In another shell: export PIPELINE_API_KEY=\$(cat $key_file)"

export WEBHOOK_ALLOW_PRIVATE_NETWORKS=true IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS=true

pids=()
stop() {
    trap - INT TERM EXIT
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

"$target"/release/processor & pids+=($!)
"$target"/release/gateway & pids+=($!)
"$target"/release/notifier & pids+=($!)
"$target"/release/dashboard & pids+=($!)
"$target"/release/imager & pids+=($!)

# Stop everything as soon as any one service exits.
wait -n "${pids[@]}"
