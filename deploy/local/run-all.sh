#!/usr/bin/env bash
# The multi-process local run: every target as its own process, wired like the Kubernetes
# Deployments, against the PostgreSQL and RabbitMQ on this machine.
#
#   deploy/local/run-all.sh                 build (release), migrate, run until Ctrl-C
#   deploy/local/run-all.sh -- CMD ARGS...  ... run CMD once everything is ready, then stop
#                                           (e.g. -- bash ../shared/conformance/realworld/run.sh
#                                            http://127.0.0.1:8080/api)
#
#   target         listens on
#   user           127.0.0.1:50061  (gRPC)
#   auth           127.0.0.1:50062  (gRPC)
#   post           127.0.0.1:50063  (gRPC)
#   notification   127.0.0.1:50064  (gRPC)
#   gateway        127.0.0.1:8080   (HTTP: REST, gRPC-web, gRPC pass-through, /readyz)
#
# Environment (defaults in brackets):
#   AGORA_BIN            binary to run [build target/release/agora with cargo]
#   AGORA_DATABASE_URL   [postgres://postgres@127.0.0.1:5432/agora_local; created if missing]
#   AGORA_AMQP_URL       [amqp://guest:guest@127.0.0.1:5672/%2f]
#   AGORA_LOCAL_DIR      per-target data dirs, logs [./data/local]
#   AGORA_AUTH_KEYS_DIR  signing keys [$AGORA_LOCAL_DIR/keys; one is generated with openssl if empty]
#   AGORA_LOG_FORMAT     [pretty]; RUST_LOG [info]
# Each process's output is shown prefixed with its target and kept in $AGORA_LOCAL_DIR/<target>.log.
# If any process exits, all are stopped and the script exits non-zero.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

cmd=()
if [ "${1:-}" = "--" ]; then
  shift
  cmd=("$@")
elif [ $# -gt 0 ]; then
  sed -n '2,25p' "$0" >&2
  exit 2
fi

export AGORA_DATABASE_URL="${AGORA_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/agora_local}"
export AGORA_AMQP_URL="${AGORA_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export AGORA_LOG_FORMAT="${AGORA_LOG_FORMAT:-pretty}"
export RUST_LOG="${RUST_LOG:-info}"
local_dir="${AGORA_LOCAL_DIR:-$root/data/local}"

declare -A grpc_port=([user]=50061 [auth]=50062 [post]=50063 [notification]=50064)
http_addr=127.0.0.1:8080
export AGORA_USER_GRPC_URL="http://127.0.0.1:${grpc_port[user]}"
export AGORA_AUTH_GRPC_URL="http://127.0.0.1:${grpc_port[auth]}"
export AGORA_POST_GRPC_URL="http://127.0.0.1:${grpc_port[post]}"
export AGORA_NOTIFICATION_GRPC_URL="http://127.0.0.1:${grpc_port[notification]}"

# ---- prerequisites ---------------------------------------------------------------------------
if [ -n "${AGORA_BIN:-}" ]; then
  bin="$AGORA_BIN"
else
  echo "run-all: cargo build --release --bin agora"
  cargo build --release --bin agora
  bin="$root/target/release/agora"
fi
[ -x "$bin" ] || { echo "run-all: $bin is not an executable" >&2; exit 1; }

case "$AGORA_DATABASE_URL" in
  postgres://* | postgresql://*)
    # Create the database when it does not exist yet (psql connects to the server's `postgres`).
    db="${AGORA_DATABASE_URL##*/}"
    db="${db%%\?*}"
    admin_url="${AGORA_DATABASE_URL%/*}/postgres"
    if ! psql "$admin_url" -tAc "select 1 from pg_database where datname = '$db'" | grep -q 1; then
      echo "run-all: creating database $db"
      psql "$admin_url" -qc "create database \"$db\""
    fi
    ;;
  *)
    echo "run-all: AGORA_DATABASE_URL must be a postgres:// URL (one database shared by the processes)" >&2
    exit 1
    ;;
esac
amqp_hostport="${AGORA_AMQP_URL#*://}"
amqp_hostport="${amqp_hostport#*@}"
amqp_hostport="${amqp_hostport%%/*}"
case "$amqp_hostport" in *:*) ;; *) amqp_hostport="$amqp_hostport:5672" ;; esac
if ! timeout 3 bash -c "</dev/tcp/${amqp_hostport%:*}/${amqp_hostport##*:}" 2>/dev/null; then
  echo "run-all: RabbitMQ does not answer on $amqp_hostport (start it: rabbitmq-server -detached)" >&2
  exit 1
fi

# ---- run ---------------------------------------------------------------------------------------
mkdir -p "$local_dir"
pids=()
# shellcheck disable=SC2329 # invoked by the EXIT trap
stop_all() {
  local pid i
  [ ${#pids[@]} -gt 0 ] || return 0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # SIGTERM drains in-flight work; give it 20 s, then kill what is left.
  for ((i = 0; i < 20; i++)); do
    local alive=""
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -n "$alive" ] || break
    sleep 1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# With PostgreSQL, auth never invents a key (replicas must share one): keep one for local runs.
export AGORA_AUTH_KEYS_DIR="${AGORA_AUTH_KEYS_DIR:-$local_dir/keys}"
if ! compgen -G "$AGORA_AUTH_KEYS_DIR/*.pem" >/dev/null; then
  mkdir -p "$AGORA_AUTH_KEYS_DIR"
  kid="$(date -u +%Y%m%d%H%M%S)"
  echo "run-all: generating signing key $AGORA_AUTH_KEYS_DIR/$kid.pem"
  (umask 077 && openssl genpkey -algorithm ed25519 -out "$AGORA_AUTH_KEYS_DIR/$kid.pem")
fi

echo "run-all: agora migrate"
AGORA_DATA_DIR="$local_dir/migrate" "$bin" migrate

# start TARGET ENV=VALUE... : runs `agora serve --target TARGET` in the background.
start() {
  local target="$1"
  shift
  mkdir -p "$local_dir/$target"
  env AGORA_DATA_DIR="$local_dir/$target" "$@" "$bin" serve --target "$target" \
    > >(tee "$local_dir/$target.log" | sed -u "s/^/[$target] /") 2>&1 </dev/null &
  pids+=($!)
  echo "run-all: started $target (pid $!)"
}

# Each process serves /metrics on a port of its own: 9465 and up.
metrics_port=9465
for t in user auth post notification; do
  start "$t" AGORA_GRPC_ADDR="127.0.0.1:${grpc_port[$t]}" AGORA_METRICS_ADDR="127.0.0.1:$metrics_port"
  metrics_port=$((metrics_port + 1))
done
# The gateway binds only HTTP; its gRPC address is set apart in case it binds one too.
start gateway AGORA_HTTP_ADDR="$http_addr" AGORA_GRPC_ADDR=127.0.0.1:50065 \
  AGORA_METRICS_ADDR="127.0.0.1:$metrics_port"

ready=""
for _ in $(seq 1 90); do
  if curl -fsS -o /dev/null --max-time 2 "http://$http_addr/readyz" 2>/dev/null; then
    ready=1
    break
  fi
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "run-all: a process exited during start-up (logs in $local_dir)" >&2; exit 1; }
  done
  sleep 1
done
[ -n "$ready" ] || { echo "run-all: gateway not ready within 90 s (logs in $local_dir)" >&2; exit 1; }

cat <<EOF
run-all: ready
  REST        http://$http_addr/api          (OpenAPI: http://$http_addr/openapi.json)
  gRPC-web    http://$http_addr/<package>.<Service>/<Method>
  gRPC        user 127.0.0.1:${grpc_port[user]}, auth 127.0.0.1:${grpc_port[auth]}, post 127.0.0.1:${grpc_port[post]}, notification 127.0.0.1:${grpc_port[notification]}
  logs        $local_dir/<target>.log
EOF

if [ ${#cmd[@]} -gt 0 ]; then
  status=0
  AGORA_HTTP_ADDR="$http_addr" "${cmd[@]}" || status=$?
  exit "$status"
fi

echo "run-all: Ctrl-C stops everything"
set +e
wait -n "${pids[@]}"
status=$?
echo "run-all: a process exited (status $status); stopping the others" >&2
exit $((status == 0 ? 1 : status))
