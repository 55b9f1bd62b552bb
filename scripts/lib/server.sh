# shellcheck shell=bash
# Start and stop one `agora serve` (every target in one process) for end-to-end checks.
# Sourced by .ci/run and the justfile:
#
#   source scripts/lib/server.sh
#   agora_server_start target/debug/agora     # exports AGORA_HTTP_ADDR, AGORA_GRPC_ADDR, AGORA_SERVER_URL
#   curl "$AGORA_SERVER_URL/readyz"
#   agora_server_stop                         # also run by the EXIT trap it installs
#
# The server gets a fresh AGORA_DATA_DIR (SQLite files, generated keys, in-process bus) and the
# default ports 8080 / 50051 when they are free, otherwise free ones picked at random. Its log goes
# to $AGORA_SERVER_LOG and is printed when it fails to become ready.

AGORA_SERVER_PID=""
AGORA_SERVER_DATA=""
AGORA_SERVER_LOG=""
AGORA_SERVER_LOG_SHOWN=""

# Prints $1 if nothing listens on 127.0.0.1:$1, else a free port the kernel picks.
agora_free_port() {
  python3 - "$1" <<'EOF'
import socket, sys
want = int(sys.argv[1])
s = socket.socket()
# As servers do (Rust's std sets it too): connections in TIME_WAIT do not make a port busy.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", want))
    port = want
except OSError:
    s.close()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
s.close()
print(port)
EOF
}

agora_server_start() {
  local bin="${1:?usage: agora_server_start PATH_TO_AGORA}"
  local timeout="${AGORA_READY_TIMEOUT:-60}"
  local http_port grpc_port
  http_port="$(agora_free_port 8080)"
  grpc_port="$(agora_free_port 50051)"
  AGORA_SERVER_DATA="$(mktemp -d -t agora-data.XXXXXX)"
  AGORA_SERVER_LOG="$AGORA_SERVER_DATA.log"
  export AGORA_HTTP_ADDR="127.0.0.1:$http_port"
  export AGORA_GRPC_ADDR="127.0.0.1:$grpc_port"
  export AGORA_SERVER_URL="http://$AGORA_HTTP_ADDR"
  trap 'agora_server_on_exit $?' EXIT

  echo "starting $bin serve (http $AGORA_HTTP_ADDR, grpc $AGORA_GRPC_ADDR, data $AGORA_SERVER_DATA)"
  # The embedded default: no external database or broker, whatever the caller's environment says.
  env -u AGORA_DATABASE_URL -u AGORA_AMQP_URL \
    -u AGORA_USER_DATABASE_URL -u AGORA_AUTH_DATABASE_URL \
    -u AGORA_POST_DATABASE_URL -u AGORA_NOTIFICATION_DATABASE_URL \
    -u AGORA_USER_GRPC_URL -u AGORA_AUTH_GRPC_URL \
    -u AGORA_POST_GRPC_URL -u AGORA_NOTIFICATION_GRPC_URL \
    -u AGORA_AUTH_KEYS_DIR \
    AGORA_DATA_DIR="$AGORA_SERVER_DATA" AGORA_LOG_FORMAT="${AGORA_LOG_FORMAT:-json}" \
    RUST_LOG="${RUST_LOG:-info}" \
    "$bin" serve >"$AGORA_SERVER_LOG" 2>&1 </dev/null &
  AGORA_SERVER_PID=$!

  local i
  for ((i = 0; i < timeout; i++)); do
    if curl -fsS -o /dev/null --max-time 2 "$AGORA_SERVER_URL/readyz" 2>/dev/null; then
      echo "agora is ready after ~${i}s"
      return 0
    fi
    if ! kill -0 "$AGORA_SERVER_PID" 2>/dev/null; then
      echo "agora serve exited before it was ready; its log:" >&2
      cat "$AGORA_SERVER_LOG" >&2
      AGORA_SERVER_LOG_SHOWN=1
      AGORA_SERVER_PID=""
      return 1
    fi
    sleep 1
  done
  echo "agora serve was not ready within ${timeout}s ($AGORA_SERVER_URL/readyz); its log:" >&2
  cat "$AGORA_SERVER_LOG" >&2
  AGORA_SERVER_LOG_SHOWN=1
  return 1
}

# EXIT trap: on a failing exit, show the end of the server log before stopping it.
agora_server_on_exit() {
  local status="$1"
  if [ "$status" != 0 ] && [ -z "$AGORA_SERVER_LOG_SHOWN" ] && [ -n "$AGORA_SERVER_LOG" ] && [ -s "$AGORA_SERVER_LOG" ]; then
    echo "---- last 200 lines of the agora serve log ($AGORA_SERVER_LOG) ----" >&2
    tail -n 200 "$AGORA_SERVER_LOG" >&2
    echo "---- end of log ----" >&2
  fi
  agora_server_stop
}

# Stops the server (SIGTERM, then SIGKILL after 15 s) and removes its data directory. Idempotent.
agora_server_stop() {
  if [ -n "$AGORA_SERVER_PID" ] && kill -0 "$AGORA_SERVER_PID" 2>/dev/null; then
    kill -TERM "$AGORA_SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 15; i++)); do
      kill -0 "$AGORA_SERVER_PID" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$AGORA_SERVER_PID" 2>/dev/null; then
      echo "agora serve did not stop within 15 s of SIGTERM; killing it" >&2
      kill -KILL "$AGORA_SERVER_PID" 2>/dev/null || true
    fi
    wait "$AGORA_SERVER_PID" 2>/dev/null || true
  fi
  AGORA_SERVER_PID=""
  if [ -n "$AGORA_SERVER_DATA" ]; then
    rm -rf "$AGORA_SERVER_DATA" "$AGORA_SERVER_LOG"
    AGORA_SERVER_DATA=""
  fi
}
