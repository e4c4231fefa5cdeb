#!/usr/bin/env bash
# Runs every test of the workspace. First it makes sure the tests have what they use: RabbitMQ,
# Redis and PostgreSQL running on their local ports (started where installed, trust auth for the
# postgres user over loopback), Chromium and Node.js for the dashboard's browser test, and
# schemathesis, moto, standardwebhooks, openapi-spec-validator and openapi-python-client from
# PyPI. What is missing is installed on Debian or Ubuntu when run as root; otherwise one line
# names it and nothing runs.
# Then
#   cargo test --workspace --no-fail-fast
# (arguments are passed on: ./test.sh images runs the tests whose names contain "images").
set -euo pipefail
cd "$(dirname "$0")"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

packages=()
{ answers 5432 || command -v pg_ctlcluster >/dev/null; } || packages+=(postgresql)
{ answers 6379 || command -v redis-server >/dev/null; } || packages+=(redis-server)
{ answers 5672 || command -v rabbitmq-server >/dev/null; } || packages+=(rabbitmq-server)
[[ -x "${CHROMIUM:-/usr/bin/chromium}" ]] || packages+=(chromium)
command -v npm >/dev/null || packages+=(nodejs npm)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
if ((${#packages[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "The tests need: ${packages[*]} (Debian or Ubuntu, as root: apt-get install -y ${packages[*]})" >&2
        exit 1
    fi
    echo "Installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

scripts/start-services.sh
# The defaults expect trust auth for the postgres user over TCP; a fresh install asks for a
# password, so trust loopback there (Debian's cluster layout).
if command -v psql >/dev/null && ! psql -h 127.0.0.1 -U postgres -c 'SELECT 1' >/dev/null 2>&1 \
    && [[ -d /etc/postgresql ]] && [[ $(id -u) -eq 0 ]]; then
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main reload
fi
# RabbitMQ answers on its port a moment before it takes connections.
if command -v rabbitmq-diagnostics >/dev/null; then
    for _ in $(seq 1 120); do
        rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1 && break
        sleep 1
    done
fi

# The API contract test (schemathesis), the API documents' checks (openapi-spec-validator, and
# openapi-python-client generating a client from each), the S3 API server of the image tests
# (moto) and the sample webhook receiver's library. Debian's own Python refuses installs outside a virtual
# environment unless told this is meant.
if ! python3 -c 'import schemathesis, moto.server, standardwebhooks, openapi_spec_validator' >/dev/null 2>&1 \
    || ! command -v openapi-python-client >/dev/null; then
    python3 -m pip install -q --disable-pip-version-check --break-system-packages \
        schemathesis "moto[server]" standardwebhooks openapi-spec-validator \
        openapi-python-client==0.29.1
fi
# The browser test's playwright-core, pinned in its lock file.
[[ -d dashboard/tests/browser/node_modules/playwright-core ]] \
    || npm ci --prefix dashboard/tests/browser --no-audit --no-fund

exec cargo test --workspace --no-fail-fast "$@"
