#!/usr/bin/env bash
# Makes sure RabbitMQ (5672), Redis (6379) and PostgreSQL (5432) answer on 127.0.0.1: each one
# that does not is started where it is installed (Debian's packages: pg_ctlcluster,
# redis-server, rabbitmq-server; as root or their owner), then waited for. Where one is neither
# running nor installed, says in one line what to install and exits 1.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

missing=()
if ! answers 5432; then
    if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
        echo "Starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    else
        missing+=(postgresql)
    fi
fi
if ! answers 6379; then
    if command -v redis-server >/dev/null; then
        echo "Starting Redis"
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log
    else
        missing+=(redis-server)
    fi
fi
if ! answers 5672; then
    if command -v rabbitmq-server >/dev/null; then
        echo "Starting RabbitMQ"
        rabbitmq-server -detached || true
    else
        missing+=(rabbitmq-server)
    fi
fi
if ((${#missing[@]})); then
    echo "Not running and not installed: ${missing[*]} (Debian or Ubuntu: apt-get install -y ${missing[*]})" >&2
    exit 1
fi

# RabbitMQ recovering many queues can take minutes to open its port.
for port in 5432 6379 5672; do
    for _ in $(seq 1 300); do
        answers "$port" && continue 2
        sleep 1
    done
    echo "Nothing answers on 127.0.0.1:$port after 300 s" >&2
    if [[ $port == 5672 ]]; then
        tail -n 20 /var/log/rabbitmq/*.log 2>/dev/null >&2 || true
    fi
    exit 1
done

# A broker can take connections and never answer them (its handshake hung once after heavy use):
# every test would then wait forever. The protocol header must bring Connection.Start (method
# frame, type 1) within 20 s.
amqp_answers() {
    exec 3<>/dev/tcp/127.0.0.1/5672 || return 1
    printf 'AMQP\x00\x00\x09\x01' >&3
    local frame
    frame=$(timeout 20 head -c 1 <&3 | od -An -tu1 | tr -d ' ')
    exec 3<&-
    [[ $frame == 1 ]]
}
if ! amqp_answers; then
    echo "RabbitMQ takes connections on 127.0.0.1:5672 but does not answer the AMQP handshake" \
        "within 20 s; restart it (rabbitmq-server -detached after stopping the node)" >&2
    exit 1
fi
