#!/usr/bin/env bash
# The fault-injection runs: build the services and the harness, then check that every accepted
# event is applied exactly once while faults hit.
#
#   ./fault-test.sh [seconds, default 60] [events per second, default 100]
#       one gateway and one processor behind fault proxies: RabbitMQ, Redis and PostgreSQL cut,
#       black-holed and slowed; the services SIGKILLed and SIGTERMed.
#   ./fault-test.sh --cluster [pause between faults in seconds, default 5] [events per second, default 100]
#       a three-node RabbitMQ cluster of its own (never the broker on 5672), two gateways, three
#       processors and the notifier: the node leading most shard queues SIGKILLed, a minority
#       node stopped, a rolling restart, a node frozen with SIGSTOP for 20 s, a processor
#       SIGKILLed mid-rebalance, a node cut from the other two for 90 s (nftables). Needs
#       rabbitmq-server installed and root (the nodes run as the rabbitmq user).
#   ./fault-test.sh --partitions [seconds each fault lasts, default 30] [events per second, default 100] [scenarios]
#       the gateway and two processors in network namespaces of the run's own (root, iproute2,
#       nftables): a processor cut from the broker, cut from PostgreSQL, able to hear the broker
#       but not to answer it; the gateway cut from Redis and from the broker; every link to the
#       broker slow and lossy. Prints a table of the scenarios. A comma-separated list of
#       scenario names (as the table names them) runs only those.
#   ./fault-test.sh --soak [minutes, default 60] [events per second, default 100]
#       the gateway, the processor and the notifier under the load that long, a fault every
#       tenth of it; samples memory, files, sockets, queues, table and Redis sizes every 10 s
#       into soak.csv (plot: bench/soak/plot.py) and prints how each moved.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --bins
target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" = "--cluster" ] || [ "${1:-}" = "--partitions" ]; then
    if ! command -v nft >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables
    fi
fi
if [ "${1:-}" = "--cluster" ]; then
    "$target/debug/faults" --cluster --pause "${2:-5}" --rate "${3:-100}"
elif [ "${1:-}" = "--partitions" ]; then
    "$target/debug/faults" --partitions --fault-secs "${2:-30}" --rate "${3:-100}" ${4:+--only "$4"}
elif [ "${1:-}" = "--soak" ]; then
    "$target/debug/faults" --soak "${2:-60}" --rate "${3:-100}"
else
    "$target/debug/faults" --seconds "${1:-60}" --rate "${2:-100}"
fi
