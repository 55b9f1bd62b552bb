#!/usr/bin/env bash
# Load test of the article reads through the gateway, on PostgreSQL, at several sizes.
#
#   scripts/bench.sh [SIZE ...]          # default: 1000 100000 (articles)
#
# For each size: a fresh database agora_bench_<size> (created through the admin URL
# AGORA_BENCH_DATABASE_URL, dropped at the end), `agora seed`, `agora serve` on free
# loopback ports, a sign-in as seed0, then wrk (2 threads, 32 connections, 15 s) on
# each endpoint. Any non-2xx answer or socket error fails the run. The table goes to
# stdout and to target/bench/results.md. See docs/bench.md.
#
# Knobs (environment): AGORA_BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres),
# AGORA_BENCH_DURATION (15, seconds per endpoint), AGORA_BENCH_CONNECTIONS (32),
# AGORA_BENCH_THREADS (2), AGORA_BENCH_USERS (1000), AGORA_BENCH_FOLLOWS (20),
# AGORA_BENCH_BIN (target/release/agora, built with `cargo build --release` unless
# AGORA_BENCH_NO_BUILD=1), AGORA_BENCH_KEEP_DB=1 (keep the databases, e.g. to EXPLAIN).
set -euo pipefail

cd "$(dirname "$0")/.."

ADMIN_URL="${AGORA_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
DURATION="${AGORA_BENCH_DURATION:-15}"
CONNECTIONS="${AGORA_BENCH_CONNECTIONS:-32}"
THREADS="${AGORA_BENCH_THREADS:-2}"
USERS="${AGORA_BENCH_USERS:-1000}"
FOLLOWS="${AGORA_BENCH_FOLLOWS:-20}"
BIN="${AGORA_BENCH_BIN:-target/release/agora}"
OUT="target/bench"
if [ "$#" -gt 0 ]; then SIZES=("$@"); else SIZES=(1000 100000); fi

export PGCONNECT_TIMEOUT=10

say() { printf '\n== %s\n' "$*" >&2; }
die() {
  printf 'bench: %s\n' "$*" >&2
  exit 1
}

for size in "${SIZES[@]}"; do
  [[ "$size" =~ ^[1-9][0-9]*$ ]] || die "size must be a positive number of articles: $size"
done
for tool in psql curl openssl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing wrk"
    apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  fi
  command -v wrk >/dev/null || die "wrk is needed (Debian: apt-get install wrk)"
fi
psql "$ADMIN_URL" -qAtc 'SELECT 1' >/dev/null || die "cannot reach PostgreSQL at $ADMIN_URL"

if [ -z "${AGORA_BENCH_NO_BUILD:-}" ]; then
  say "cargo build --release"
  cargo build --release
fi
[ -x "$BIN" ] || die "no agora binary at $BIN"

source scripts/lib/server.sh # agora_free_port

WORK="$(mktemp -d -t agora-bench.XXXXXX)"
SERVER_PID=""
SERVER_LOG=""
CURRENT_DB=""

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 15; i++)); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

drop_db() {
  if [ -n "$CURRENT_DB" ]; then
    if [ -n "${AGORA_BENCH_KEEP_DB:-}" ]; then
      echo "keeping database $CURRENT_DB ($(db_url "$CURRENT_DB"))" >&2
    else
      psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $CURRENT_DB WITH (FORCE)" >/dev/null || true
    fi
    CURRENT_DB=""
  fi
}

cleanup() {
  local status=$?
  if [ "$status" != 0 ] && [ -n "$SERVER_LOG" ] && [ -s "$SERVER_LOG" ]; then
    echo "---- last 50 lines of the agora serve log ----" >&2
    tail -n 50 "$SERVER_LOG" >&2
  fi
  stop_server
  drop_db
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The admin URL with its database replaced by $1.
db_url() {
  python3 - "$ADMIN_URL" "$1" <<'EOF'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))
EOF
}

# Reports requests, duration, percentiles and errors in one parseable line.
cat >"$WORK/bench.lua" <<'EOF'
-- wrk ... -s bench.lua URL -- PATH [SLUGS]: GET PATH, or PATH<n> for random n < SLUGS.
local path, slugs, fixed = "/", 0, nil
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  path = args[1] or "/"
  slugs = tonumber(args[2] or "0") or 0
  math.randomseed(os.time() * 1000 + (seed or 0))
  if slugs == 0 then fixed = wrk.format("GET", path) end
end
function request()
  if fixed then return fixed end
  return wrk.format("GET", path .. math.random(0, slugs - 1))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
EOF

mkdir -p "$OUT"
RAW="$OUT/raw.tsv"
: >"$RAW"

# check NAME PATH: one request must answer 200 with JSON; prints its body.
check() {
  local name="$1" path="$2" body code
  body="$WORK/check.json"
  code="$(curl -sS -o "$body" -w '%{http_code}' --max-time 10 -H "authorization: Token $TOKEN" "$URL$path")"
  [ "$code" = 200 ] || die "$name: GET $path answered $code: $(head -c 300 "$body")"
  cat "$body"
}

# load SIZE NAME PATH [SLUGS]: wrk against PATH; appends a row to $RAW.
load() {
  local size="$1" name="$2" path="$3" slugs="${4:-0}" out line
  out="$WORK/wrk-$size-$name.txt"
  echo "-- $name: GET $path$([ "$slugs" != 0 ] && echo "<0..$((slugs - 1))>")" >&2
  # warm-up (pool connections, caches), not recorded
  timeout 30 wrk -t "$THREADS" -c "$CONNECTIONS" -d 3s -H "Authorization: Token $TOKEN" \
    -s "$WORK/bench.lua" "$URL" -- "$path" "$slugs" >/dev/null
  timeout $((DURATION + 60)) wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency \
    -H "Authorization: Token $TOKEN" -s "$WORK/bench.lua" "$URL" -- "$path" "$slugs" >"$out" ||
    die "$name: wrk failed: $(cat "$out")"
  grep -E 'Requests/sec|Non-2xx|Socket errors|^ +(50|99)%' "$out" | sed 's/^/   /' >&2
  line="$(grep '^BENCH ' "$out")" || die "$name: no summary from wrk: $(cat "$out")"
  python3 - "$size" "$name" "$line" >>"$RAW" <<'EOF'
import sys
size, name, line = sys.argv[1], sys.argv[2], sys.argv[3]
f = dict(kv.split("=") for kv in line.split()[1:])
f = {k: int(v) for k, v in f.items()}
errors = f["connect"] + f["read"] + f["write"] + f["timeout"]
if f["non2xx"] or errors or not f["requests"]:
    sys.exit(f"bench: {name} at {size}: {f['non2xx']} non-2xx responses, {errors} socket errors, {f['requests']} requests")
rps = f["requests"] / (f["duration_us"] / 1e6)
print(f"{size}\t{name}\t{rps:.0f}\t{f['p50_us'] / 1000:.2f}\t{f['p99_us'] / 1000:.2f}")
EOF
}

bench_size() {
  local size="$1"
  local db="agora_bench_$size"
  say "$size articles: database $db"
  psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  psql "$ADMIN_URL" -qAtc "CREATE DATABASE $db" >/dev/null
  CURRENT_DB="$db"
  local keys="$WORK/keys-$size"
  mkdir -p "$keys"
  [ -f "$keys/k1.pem" ] || openssl genpkey -algorithm ed25519 -out "$keys/k1.pem" 2>/dev/null

  local http_port grpc_port
  http_port="$(agora_free_port 18080)"
  grpc_port="$(agora_free_port 15051)"
  export AGORA_DATABASE_URL
  AGORA_DATABASE_URL="$(db_url "$db")"
  export AGORA_AUTH_KEYS_DIR="$keys"
  export AGORA_DATA_DIR="$WORK/data-$size"
  export AGORA_HTTP_ADDR="127.0.0.1:$http_port"
  export AGORA_GRPC_ADDR="127.0.0.1:$grpc_port"
  export AGORA_RATE_LIMIT_PER_SECOND=1000000
  export AGORA_AUTH_RATE_LIMIT_PER_MINUTE=1000
  export AGORA_ACCESS_TOKEN_TTL=1h
  export AGORA_LOG_FORMAT=json RUST_LOG=warn
  unset AGORA_AMQP_URL AGORA_USER_DATABASE_URL AGORA_AUTH_DATABASE_URL AGORA_POST_DATABASE_URL \
    AGORA_NOTIFICATION_DATABASE_URL AGORA_USER_GRPC_URL AGORA_AUTH_GRPC_URL AGORA_POST_GRPC_URL \
    AGORA_NOTIFICATION_GRPC_URL

  say "$size articles: seed --users $USERS --articles $size --follows $FOLLOWS"
  timeout 600 "$BIN" seed --users "$USERS" --articles "$size" --follows "$FOLLOWS"
  psql "$AGORA_DATABASE_URL" -qAtc "VACUUM ANALYZE" >/dev/null

  say "$size articles: agora serve on $AGORA_HTTP_ADDR"
  SERVER_LOG="$WORK/serve-$size.log"
  "$BIN" serve >"$SERVER_LOG" 2>&1 </dev/null &
  SERVER_PID=$!
  URL="http://$AGORA_HTTP_ADDR"
  local i
  for ((i = 0; i < 60; i++)); do
    curl -fsS -o /dev/null --max-time 2 "$URL/readyz" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "agora serve exited: $(tail -n 30 "$SERVER_LOG")"
    sleep 1
  done
  [ "$i" -lt 60 ] || die "agora serve not ready within 60 s"

  TOKEN="$(curl -sS --max-time 10 "$URL/api/users/login" -H 'content-type: application/json' \
    -d '{"user":{"email":"seed0@agora.test","password":"password123"}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["token"])')" ||
    die "signing in as seed0 failed"

  # Every endpoint answers 200 with what the seed put there before it is loaded.
  local tag
  tag="$(check tags /api/tags | python3 -c 'import json,sys; print(json.load(sys.stdin)["tags"][0])')"
  check list "/api/articles?limit=20" | python3 -c "
import json, sys
d = json.load(sys.stdin)
assert len(d['articles']) == min(20, $size) and d['articlesCount'] == $size, (len(d['articles']), d['articlesCount'])
" || die "list: unexpected answer"
  check feed "/api/articles/feed" | python3 -c "
import json, sys
d = json.load(sys.stdin)
assert d['articlesCount'] > 0, d['articlesCount']
print('   feed of seed0:', d['articlesCount'], 'articles', file=sys.stderr)
" || die "feed: empty"
  check get "/api/articles/seed-article-0" >/dev/null

  say "$size articles: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s per endpoint"
  load "$size" "list" "/api/articles?limit=20"
  load "$size" "list offset=500" "/api/articles?limit=20&offset=500"
  load "$size" "list tag=$tag" "/api/articles?limit=20&tag=$tag"
  load "$size" "get (one slug)" "/api/articles/seed-article-$((size - 1))"
  load "$size" "get (random slug)" "/api/articles/seed-article-" "$size"
  load "$size" "feed" "/api/articles/feed?limit=20"

  stop_server
  SERVER_LOG=""
  drop_db
}

for size in "${SIZES[@]}"; do
  bench_size "$size"
done

# One table: a row per endpoint, a column group per size, and the ratio of the largest
# size's p50 to the smallest's.
python3 - "$RAW" "$(date -u +%Y-%m-%d)" "$(nproc)" "$(git describe --always --dirty 2>/dev/null || echo unknown)" \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$USERS" "$FOLLOWS" >"$OUT/results.md" <<'EOF'
import sys
raw, date, cores, commit, threads, conns, dur, users, follows = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
sizes = sorted({int(r[0]) for r in rows})
names = list(dict.fromkeys(r[1].split(" tag=")[0] + (" tag" if " tag=" in r[1] else "") for r in rows))
data = {}
for size, name, rps, p50, p99 in rows:
    key = name.split(" tag=")[0] + (" tag" if " tag=" in name else "")
    data[(int(size), key)] = (float(rps), float(p50), float(p99))
head = ["endpoint"]
for s in sizes:
    head += [f"{s:,}: req/s", f"{s:,}: p50 ms", f"{s:,}: p99 ms"]
if len(sizes) > 1:
    head.append(f"p50 {sizes[-1]:,} / {sizes[0]:,}")
print(f"agora bench, {date}, commit {commit}, {cores} cores, PostgreSQL, through the gateway; "
      f"wrk -t{threads} -c{conns} -d{dur}s; {users} users following {follows} each")
print()
print("| " + " | ".join(head) + " |")
print("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
for n in names:
    cells = [n]
    for s in sizes:
        v = data.get((s, n))
        cells += [f"{v[0]:,.0f}", f"{v[1]:.2f}", f"{v[2]:.2f}"] if v else ["-"] * 3
    if len(sizes) > 1:
        a, b = data.get((sizes[0], n)), data.get((sizes[-1], n))
        cells.append(f"{b[1] / a[1]:.1f}×" if a and b else "-")
    print("| " + " | ".join(cells) + " |")
if len(sizes) > 1 and (sizes[0], "list") in data and (sizes[-1], "list") in data:
    r = data[(sizes[-1], "list")][1] / data[(sizes[0], "list")][1]
    verdict = "within" if r <= 2 else "NOT within"
    print()
    print(f"list p50 at {sizes[-1]:,} is {r:.1f}× the p50 at {sizes[0]:,}: {verdict} 2×.")
EOF
say "results ($OUT/results.md)"
cat "$OUT/results.md"
