#!/usr/bin/env bash
# agora's benchmark suite: every figure of docs/benchmarks.md in one run.
#
#   scripts/bench.sh            # full: 10,000 users, 100,000 articles, 15 s per scenario, 2 rounds
#   AGORA_BENCH_QUICK=1 scripts/bench.sh   # reduced: 1,000 users, 2,000 articles, 3 s, 1 round
#
# It builds the release binaries of the workspace (agora, bench-monolith,
# bench-grpc-ceiling, bench-argon2), measures the cold start of `agora serve` on a
# fresh SQLite data directory, seeds a fresh PostgreSQL database with `agora seed`,
# starts `agora serve` on it next to the reference points (bench-monolith: one axum
# handler and one SQL query per request over the same tables; bench-grpc-ceiling: a
# trivial tonic unary service), and then loads them in turn with wrk (HTTP/1.1,
# 64 connections) and h2load (gRPC, 64 streams), alternating agora and its
# reference point in every round. Then the raw argon2id rate, sign-ins at 64
# connections, reads while sign-ins run, and resident memory (VmRSS / VmHWM of the
# agora process) idle, under reads and around the sign-ins.
#
# Raw results go to target/bench/ (results.jsonl, the tools' outputs), the rendered
# report to docs/benchmarks.md. Any non-2xx answer, socket error, failed gRPC status
# or unexpected answer fails the run; the servers are stopped and the database
# dropped on any exit.
#
# Knobs (environment):
#   AGORA_BENCH_QUICK=1            the reduced form above (login phase 10 s)
#   AGORA_BENCH_DURATION           seconds per scenario (15; quick: 3)
#   AGORA_BENCH_ROUNDS             A/B rounds of the read scenarios (2; quick: 1)
#   AGORA_BENCH_LOGIN_DURATION     seconds of the sign-in phase (60; quick: 10)
#   AGORA_BENCH_DATABASE_URL       admin URL (postgres://postgres@127.0.0.1:5432/postgres),
#                                  a role that may create databases
#   AGORA_BENCH_NO_BUILD=1         use the binaries in target/release as they are
#   AGORA_BENCH_KEEP_DB=1          keep the database agora_bench (e.g. to EXPLAIN)
#   AGORA_BENCH_REPORT             where the report goes (docs/benchmarks.md)
set -euo pipefail

cd "$(dirname "$0")/.."

ADMIN_URL="${AGORA_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
if [ -n "${AGORA_BENCH_QUICK:-}" ] && [ "${AGORA_BENCH_QUICK}" != 0 ]; then
  MODE=quick USERS=1000 ARTICLES=2000
  DURATION="${AGORA_BENCH_DURATION:-3}"
  ROUNDS="${AGORA_BENCH_ROUNDS:-1}"
  LOGIN_DURATION="${AGORA_BENCH_LOGIN_DURATION:-10}"
  WARMUP=1
else
  MODE=full USERS=10000 ARTICLES=100000
  DURATION="${AGORA_BENCH_DURATION:-15}"
  ROUNDS="${AGORA_BENCH_ROUNDS:-2}"
  LOGIN_DURATION="${AGORA_BENCH_LOGIN_DURATION:-60}"
  WARMUP=2
fi
FOLLOWS=20
CONNECTIONS=64 # wrk connections; h2load: 1 connection with 64 concurrent streams
THREADS=2      # wrk threads
COLD_STARTS=3
BIN_DIR=target/release
OUT=target/bench
REPORT="${AGORA_BENCH_REPORT:-docs/benchmarks.md}"
DB=agora_bench

export PGCONNECT_TIMEOUT=10

say() { printf '\n== %s\n' "$*" >&2; }
die() {
  printf 'bench: %s\n' "$*" >&2
  exit 1
}

for v in "$DURATION" "$ROUNDS" "$LOGIN_DURATION"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "durations and rounds must be positive whole numbers: $v"
done
for tool in psql curl openssl python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
# wrk and h2load (Debian: wrk, nghttp2-client), installed when missing and running as root.
need_package() {
  local tool="$1" package="$2"
  command -v "$tool" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing $package"
    apt-get install -y -qq "$package" >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq "$package" >/dev/null; }
  fi
  command -v "$tool" >/dev/null || die "$tool is needed (Debian: apt-get install $package)"
}
need_package wrk wrk
need_package h2load nghttp2-client
psql "$ADMIN_URL" -qAtc 'SELECT 1' >/dev/null || die "cannot reach PostgreSQL at $ADMIN_URL"

if [ -z "${AGORA_BENCH_NO_BUILD:-}" ]; then
  say "cargo build --release --workspace --bins"
  cargo build --release --workspace --bins
fi
RUN_STARTED=$SECONDS
BINS=(agora bench-monolith bench-grpc-ceiling bench-argon2)
for bin in "${BINS[@]}"; do
  [ -x "$BIN_DIR/$bin" ] || die "no $bin binary in $BIN_DIR"
done

source scripts/lib/server.sh # agora_free_port

WORK="$(mktemp -d -t agora-bench.XXXXXX)"
# The binaries under test, copied: a build in the same checkout during the run
# (target/release is shared) changes nothing here.
mkdir "$WORK/bin"
for bin in "${BINS[@]}"; do
  cp "$BIN_DIR/$bin" "$WORK/bin/"
done
BIN_DIR="$WORK/bin"
AGORA="$BIN_DIR/agora"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
rm -f "$OUT"/*.txt "$OUT"/*.log "$OUT"/*.json "$OUT"/*.tsv

# Background processes, stopped (TERM, then KILL) by the EXIT trap.
PIDS=()
SERVER_PID=""
SERVER_LOG=""
CURRENT_DB=""

stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 30; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$? pid
  if [ "$status" != 0 ] && [ -n "$SERVER_LOG" ] && [ -s "$SERVER_LOG" ]; then
    echo "---- last 50 lines of the agora serve log ----" >&2
    tail -n 50 "$SERVER_LOG" >&2
  fi
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [ -n "$CURRENT_DB" ]; then
    if [ -n "${AGORA_BENCH_KEEP_DB:-}" ]; then
      echo "keeping database $CURRENT_DB ($(db_url "$CURRENT_DB"))" >&2
    else
      psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $CURRENT_DB WITH (FORCE)" >/dev/null || true
    fi
  fi
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

# ---------------------------------------------------------------------------
# Python helpers: parsing the tools' outputs into results.jsonl, memory samples,
# cold starts, gRPC framing and checks, JSON comparison, and the report.
cat >"$WORK/benchlib.py" <<'EOF'
import http.client, json, os, re, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, time

RESULTS = os.environ["BENCH_RESULTS"]


def emit(**row):
    with open(RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")


def fail(msg):
    sys.exit(f"bench: {msg}")


def wrk(name, rnd, path):
    """Checks a wrk run (the BENCH line of bench.lua) and records it."""
    text = open(path).read()
    m = re.search(r"^BENCH (.*)$", text, re.M)
    if not m:
        fail(f"{name}: no summary from wrk:\n{text}")
    f = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    errors = f["connect"] + f["read"] + f["write"] + f["timeout"]
    if f["non2xx"] or errors or not f["requests"]:
        fail(f"{name}: {f['non2xx']} non-2xx answers, {errors} socket errors "
             f"(connect {f['connect']}, read {f['read']}, write {f['write']}, timeout {f['timeout']}), "
             f"{f['requests']} requests")
    end = time.time()
    row = dict(kind="load", name=name, round=int(rnd), tool="wrk", requests=f["requests"],
               rps=f["requests"] / (f["duration_us"] / 1e6),
               p50=f["p50_us"] / 1000, p99=f["p99_us"] / 1000,
               t0=end - f["duration_us"] / 1e6, t1=end)
    emit(**row)
    print(f"   {row['rps']:,.0f} req/s, p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms", file=sys.stderr)


def h2load(name, rnd, out_path, log_path):
    """Checks an h2load run (every request done, 2xx) and records it with
    percentiles from its per-request log."""
    text = open(out_path).read()
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and r and s):
        fail(f"{name}: cannot read h2load's summary:\n{text}")
    _, _, done, ok, failed, errored, timeout = map(int, r.groups())
    non2xx = sum(map(int, s.groups()[1:]))
    if failed or errored or timeout or non2xx or not ok:
        fail(f"{name}: h2load: {ok} succeeded, {failed} failed, {errored} errored, "
             f"{timeout} timeouts, {non2xx} non-2xx\n{text}")
    lat = sorted(int(line.split("\t")[2]) for line in open(log_path) if line.strip())
    if not lat:
        fail(f"{name}: empty h2load log")
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000
    end = time.time()
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    row = dict(kind="load", name=name, round=int(rnd), tool="h2load", requests=ok,
               rps=float(m.group(3)), p50=pct(50), p99=pct(99), t0=end - seconds, t1=end)
    emit(**row)
    print(f"   {row['rps']:,.0f} req/s, p50 {row['p50']:.2f} ms, p99 {row['p99']:.2f} ms", file=sys.stderr)


def status_kib(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def memory(point, pid):
    """Records VmRSS and VmHWM of pid now."""
    m = status_kib(pid)
    emit(kind="memory", point=point, rss_mib=m["VmRSS"] / 1024, hwm_mib=m["VmHWM"] / 1024)
    print(f"   {point}: VmRSS {m['VmRSS'] / 1024:.1f} MiB, VmHWM {m['VmHWM'] / 1024:.1f} MiB", file=sys.stderr)


def sample(pid, path):
    """Appends pid's VmRSS (KiB) to path every second until killed or pid ends."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        try:
            rss = status_kib(pid)["VmRSS"]
        except (OSError, KeyError):
            return
        with open(path, "a") as f:
            f.write(f"{rss}\n")
        time.sleep(1)


def sampled(point, path):
    """Records the largest sample of a finished sampler."""
    values = [int(line) for line in open(path) if line.strip()]
    if not values:
        fail(f"no memory samples in {path}")
    emit(kind="memory", point=point, rss_mib=max(values) / 1024, hwm_mib=None, samples=len(values))
    print(f"   {point}: max VmRSS {max(values) / 1024:.1f} MiB over {len(values)} samples", file=sys.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
        c.request("GET", "/readyz")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def coldstart(binary, runs):
    """exec -> /readyz 200 of `agora serve` on a fresh data directory (SQLite, keys
    generated), polled every 2 ms; also the idle memory of the last start."""
    times = []
    for i in range(int(runs)):
        data = tempfile.mkdtemp(prefix="agora-cold.")
        http_port, grpc_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("AGORA_") and (k.endswith("_URL") or k == "AGORA_AUTH_KEYS_DIR"))}
        env.update(AGORA_DATA_DIR=data, AGORA_HTTP_ADDR=f"127.0.0.1:{http_port}", AGORA_METRICS_ADDR="off",
                   AGORA_GRPC_ADDR=f"127.0.0.1:{grpc_port}", AGORA_LOG_FORMAT="json", RUST_LOG="warn")
        log = open(data + ".log", "w")
        started = time.monotonic()
        proc = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            while not ready(http_port):
                if proc.poll() is not None:
                    fail(f"cold start: agora serve exited with {proc.returncode}: {open(data + '.log').read()[-2000:]}")
                if time.monotonic() - started > 30:
                    fail("cold start: not ready within 30 s")
                time.sleep(0.002)
            elapsed = time.monotonic() - started
            times.append(elapsed)
            print(f"   start {i + 1}: ready after {elapsed * 1000:.0f} ms", file=sys.stderr)
            if i == int(runs) - 1:
                time.sleep(2)
                m = status_kib(proc.pid)
                emit(kind="memory", point="idle-sqlite", rss_mib=m["VmRSS"] / 1024, hwm_mib=m["VmHWM"] / 1024)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            shutil.rmtree(data, ignore_errors=True)
            os.unlink(data + ".log")
    emit(kind="coldstart", seconds=times)


def grpc_frame(path, slug=None):
    """A length-prefixed gRPC message: GetArticleRequest{slug} or an empty message."""
    msg = b""
    if slug:
        raw = slug.encode()
        msg = b"\x0a" + bytes([len(raw)]) + raw
    open(path, "wb").write(b"\x00" + struct.pack(">I", len(msg)) + msg)


def grpc_check(name, headers_path, body_path, expect):
    """One gRPC call made with curl: HTTP 200, grpc-status 0 in the trailers and
    `expect` in the answer."""
    head = open(headers_path, encoding="latin-1").read()
    body = open(body_path, "rb").read()
    status = re.findall(r"^grpc-status:\s*(\d+)", head, re.M | re.I)
    if not re.search(r"^HTTP/2 200", head, re.M) or status != ["0"] or expect.encode() not in body:
        fail(f"{name}: gRPC call failed (grpc-status {status}):\n{head}\n{body[:300]!r}")


def compare(name, a_path, b_path):
    """Differences between the gateway's and the monolith's JSON, key order aside
    (recorded, not fatal)."""
    a, b = json.load(open(a_path)), json.load(open(b_path))
    diffs = []

    def walk(x, y, at):
        if isinstance(x, dict) and isinstance(y, dict):
            for k in list(x) + [k for k in y if k not in x]:
                if k not in y:
                    diffs.append(f"{at}.{k} only from agora")
                elif k not in x:
                    diffs.append(f"{at}.{k} only from the monolith")
                else:
                    walk(x[k], y[k], f"{at}.{k}")
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            for i, (p, q) in enumerate(zip(x, y)):
                walk(p, q, f"{at}[{i}]")
        elif x != y:
            diffs.append(f"{at}: {json.dumps(x)[:60]} vs {json.dumps(y)[:60]}")

    walk(a, b, "")
    emit(kind="compare", name=name, diffs=diffs[:10], ndiffs=len(diffs))
    print(f"   {name}: " + ("identical" if not diffs else f"{len(diffs)} differences: {diffs[:5]}"),
          file=sys.stderr)


def argon2(path):
    text = open(path).read()
    m = re.search(r"^BENCH threads=(\d+) seconds=([\d.]+) hashes=(\d+) hashes_per_s=([\d.]+)", text, re.M)
    if not m:
        fail(f"bench-argon2 printed no summary:\n{text}")
    end = time.time()
    emit(kind="argon2", threads=int(m.group(1)), seconds=float(m.group(2)), hashes=int(m.group(3)),
         rate=float(m.group(4)), t0=end - float(m.group(2)), t1=end)
    print(f"   {float(m.group(4)):.1f} hashes/s on {m.group(1)} threads", file=sys.stderr)


def monitor(root, path):
    """Every second, appends `time cpu_seconds_of_others` to path: the CPU used since
    the start by processes that are not part of this run (not descendants of root,
    not PostgreSQL backends of the bench database; PostgreSQL's own background
    processes are left out). Other work on the machine skews every figure; the
    report shows how much there was during each measurement."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    root, tick = int(root), os.sysconf("SC_CLK_TCK")
    seen, others = {}, 0.0
    first = True
    while True:
        procs = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = open(f"/proc/{d}/stat").read()
                fields = stat[stat.rindex(")") + 2:].split()
                procs[int(d)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
            except (OSError, ValueError, IndexError):
                pass
        ours = {root}
        children = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        todo = [root]
        while todo:
            for c in children.get(todo.pop(), []):
                if c not in ours:
                    ours.add(c)
                    todo.append(c)
        for pid, (ppid, cpu) in procs.items():
            before = seen.get(pid)
            seen[pid] = cpu
            if pid in ours or pid == os.getpid():
                continue
            try:
                title = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                title = ""
            # PostgreSQL: backends of the bench database are ours, other backends
            # (`user db host(port) state`) are not, background processes are left out.
            if title.startswith("postgres:") and (" agora_bench " in title or
                                                  not ("(" in title or "[local]" in title)):
                continue
            if not first:
                others += cpu - (before or 0.0)
        first = False
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {others:.3f}\n")
        time.sleep(1)


def value(key, val):
    emit(kind="value", key=key, value=val)


if __name__ == "__main__":
    globals()[sys.argv[1].replace("-", "_")](*sys.argv[2:])
EOF
export BENCH_RESULTS="$RESULTS"
lib() { python3 "$WORK/benchlib.py" "$@"; }

# wrk: `-- get PATH [N]` GETs PATH, or PATH<n> with n random below N;
# `-- login N` signs in as seed<n>@agora.test, n random below N. Prints one
# parseable BENCH line with requests, duration, percentiles and errors.
cat >"$WORK/bench.lua" <<'EOF'
local mode, path, n, fixed = "get", "/", 0, nil
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
function init(args)
  mode = args[1] or "get"
  math.randomseed(os.time() * 1000 + (seed or 0))
  if mode == "login" then
    n = tonumber(args[2])
  else
    path = args[2] or "/"
    n = tonumber(args[3] or "0") or 0
    if n == 0 then fixed = wrk.format("GET", path) end
  end
end
function request()
  if fixed then return fixed end
  if mode == "login" then
    local body = string.format('{"user":{"email":"seed%d@agora.test","password":"password123"}}',
      math.random(0, n - 1))
    return wrk.format("POST", "/api/users/login", {["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", path .. math.random(0, n - 1))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
EOF

# http NAME URL [TOKEN] > body: one GET that must answer 200.
http() {
  local name="$1" url="$2" token="${3:-}" code
  local auth=()
  [ -n "$token" ] && auth=(-H "authorization: Token $token")
  code="$(curl -sS -o "$WORK/http.json" -w '%{http_code}' --max-time 10 "${auth[@]}" "$url")"
  [ "$code" = 200 ] || die "$name: GET $url answered $code: $(head -c 300 "$WORK/http.json")"
  cat "$WORK/http.json"
}

# Fails the run when a server under test has gone (crashed, or killed from outside).
# SERVERS holds `pid:name` entries.
SERVERS=()
servers_alive() {
  local entry state
  for entry in "${SERVERS[@]}"; do
    state="$(ps -o stat= -p "${entry%%:*}" 2>/dev/null || true)"
    case "$state" in
      "" | Z*) die "${entry#*:} (pid ${entry%%:*}) is no longer running; logs in $OUT/" ;;
    esac
  done
}

# wrk_run NAME ROUND BASE_URL TOKEN(or -) THREADS ARGS...: warm-up, then the measured run.
wrk_run() {
  local name="$1" rnd="$2" url="$3" token="$4" threads="$5"
  shift 5
  local auth=() out="$OUT/wrk-${name// /-}-$rnd.txt"
  [ "$token" != - ] && auth=(-H "Authorization: Token $token")
  echo "-- round $rnd: $name (wrk $* )" >&2
  timeout 60 wrk -t "$threads" -c "$CONNECTIONS" -d "${WARMUP}s" --timeout 10s "${auth[@]}" \
    -s "$WORK/bench.lua" "$url" -- "$@" >/dev/null
  timeout $((DURATION + 60)) wrk -t "$threads" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 10s \
    "${auth[@]}" -s "$WORK/bench.lua" "$url" -- "$@" >"$out" || die "$name: wrk failed: $(cat "$out")"
  servers_alive
  lib wrk "$name" "$rnd" "$out"
}

# grpc_call NAME ADDR PATH FRAME EXPECT: one call with curl, checked (status 0, EXPECT in the body).
grpc_call() {
  local name="$1" addr="$2" path="$3" frame="$4" expect="$5"
  curl -sS --max-time 10 --http2-prior-knowledge -X POST -H 'content-type: application/grpc' \
    -H 'te: trailers' --data-binary "@$frame" -D "$WORK/grpc.headers" -o "$WORK/grpc.body" \
    "http://$addr$path" || die "$name: curl failed"
  lib grpc-check "$name" "$WORK/grpc.headers" "$WORK/grpc.body" "$expect"
}

# h2load_run NAME ROUND ADDR PATH FRAME EXPECT: 1 connection, 64 streams; warm-up, measured
# run, then one checked call (h2load counts gRPC errors as successes).
h2load_run() {
  local name="$1" rnd="$2" addr="$3" path="$4" frame="$5" expect="$6"
  local out="$OUT/h2load-${name// /-}-$rnd.txt" log="$WORK/h2load.log"
  local args=(-c 1 -m "$CONNECTIONS" -t 1)
  # FRAME "-": a plain GET over cleartext HTTP/2 (the gateway's REST on the same
  # transport h2load gives the gRPC calls); otherwise a gRPC call with that body.
  [ "$frame" = - ] || args+=(-H 'content-type: application/grpc' -H 'te: trailers' -d "$frame")
  echo "-- round $rnd: $name (h2load -c1 -m$CONNECTIONS $path)" >&2
  timeout 60 h2load "${args[@]}" -D "$WARMUP" "http://$addr$path" >/dev/null
  rm -f "$log"
  timeout $((DURATION + 60)) h2load "${args[@]}" -D "$DURATION" --log-file="$log" "http://$addr$path" >"$out" ||
    die "$name: h2load failed: $(cat "$out")"
  servers_alive
  lib h2load "$name" "$rnd" "$out" "$log"
  [ "$frame" = - ] || grpc_call "$name" "$addr" "$path" "$frame" "$expect"
}

# ---------------------------------------------------------------------------
say "machine and versions"
GIT_COMMIT="$(git describe --always --dirty 2>/dev/null || echo unknown)"
lib value mode "$MODE"
lib value date "$(date -u '+%Y-%m-%d %H:%M UTC')"
lib value commit "$GIT_COMMIT"
lib value cores "$(nproc)"
lib value cpu "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
lib value ram_gib "$(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
lib value rustc "$(rustc --version 2>/dev/null || echo unknown)"
lib value postgres "$(psql "$ADMIN_URL" -qAtc 'SHOW server_version')"
lib value wrk "$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
lib value h2load "$(h2load --version | head -n1)"
lib value users "$USERS"
lib value articles "$ARTICLES"
lib value follows "$FOLLOWS"
lib value duration "$DURATION"
lib value rounds "$ROUNDS"
lib value login_duration "$LOGIN_DURATION"
lib value connections "$CONNECTIONS"
python3 - "$RESULTS" <<'EOF2' >&2
import json, sys
v = {r["key"]: r["value"] for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "value"}
print(f"   {v['mode']} mode, commit {v['commit']}; {v['cores']} cores ({v['cpu']}), {v['ram_gib']} GiB RAM")
print(f"   {v['rustc']}; PostgreSQL {v['postgres']}; {v['wrk']}; {v['h2load']}")
EOF2

# CPU used by everything else on the machine, for the report.
python3 "$WORK/benchlib.py" monitor "$$" "$OUT/others-cpu.txt" &
PIDS+=("$!")

say "cold start: agora serve on a fresh SQLite data directory, best of $COLD_STARTS"
lib coldstart "$AGORA" "$COLD_STARTS"

say "database $DB: agora seed --users $USERS --articles $ARTICLES --follows $FOLLOWS"
psql "$ADMIN_URL" -qAtc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql "$ADMIN_URL" -qAtc "CREATE DATABASE $DB" >/dev/null
CURRENT_DB="$DB"
KEYS="$WORK/keys"
mkdir -p "$KEYS"
openssl genpkey -algorithm ed25519 -out "$KEYS/k1.pem" 2>/dev/null

export AGORA_DATABASE_URL
AGORA_DATABASE_URL="$(db_url "$DB")"
export AGORA_AUTH_KEYS_DIR="$KEYS"
export AGORA_DATA_DIR="$WORK/data"
export AGORA_HTTP_ADDR="127.0.0.1:$(agora_free_port 18080)"
export AGORA_GRPC_ADDR="127.0.0.1:$(agora_free_port 15051)"
export AGORA_RATE_LIMIT_PER_SECOND=1000000
export AGORA_AUTH_RATE_LIMIT_PER_MINUTE=100000000
export AGORA_ACCESS_TOKEN_TTL=3h
export AGORA_LOG_FORMAT=json RUST_LOG=warn
unset AGORA_AMQP_URL AGORA_USER_DATABASE_URL AGORA_AUTH_DATABASE_URL AGORA_POST_DATABASE_URL \
  AGORA_NOTIFICATION_DATABASE_URL AGORA_USER_GRPC_URL AGORA_AUTH_GRPC_URL AGORA_POST_GRPC_URL \
  AGORA_NOTIFICATION_GRPC_URL AGORA_PASSWORD_HASH_CONCURRENCY

timeout 900 "$AGORA" seed --users "$USERS" --articles "$ARTICLES" --follows "$FOLLOWS" | tee "$OUT/seed.txt" >&2
psql "$AGORA_DATABASE_URL" -qAtc "VACUUM ANALYZE" >/dev/null
lib value favorites "$(psql "$AGORA_DATABASE_URL" -qAtc 'SELECT COUNT(*) FROM agora_post.favorite')"
lib value tags "$(psql "$AGORA_DATABASE_URL" -qAtc 'SELECT COUNT(*) FROM agora_post.article_tag')"

say "agora serve on $AGORA_HTTP_ADDR (gRPC $AGORA_GRPC_ADDR)"
SERVER_LOG="$OUT/serve.log"
"$AGORA" serve >"$SERVER_LOG" 2>&1 </dev/null &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
SERVERS+=("$SERVER_PID:agora serve")
URL="http://$AGORA_HTTP_ADDR"
for ((i = 0; i < 600; i++)); do
  curl -fsS -o /dev/null --max-time 2 "$URL/readyz" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "agora serve exited"
  sleep 0.1
done
[ "$i" -lt 600 ] || die "agora serve not ready within 60 s"

MONOLITH_ADDR="127.0.0.1:$(agora_free_port 18090)"
"$BIN_DIR/bench-monolith" "$MONOLITH_ADDR" >"$OUT/monolith.log" 2>&1 </dev/null &
PIDS+=("$!")
SERVERS+=("$!:bench-monolith")
CEILING_ADDR="127.0.0.1:$(agora_free_port 15099)"
"$BIN_DIR/bench-grpc-ceiling" "$CEILING_ADDR" >"$OUT/ceiling.log" 2>&1 </dev/null &
PIDS+=("$!")
SERVERS+=("$!:bench-grpc-ceiling")
MONOLITH="http://$MONOLITH_ADDR"
for ((i = 0; i < 100; i++)); do
  curl -sS -o /dev/null --max-time 2 "$MONOLITH/api/articles?limit=1" 2>/dev/null && break
  sleep 0.1
done
[ "$i" -lt 100 ] || die "bench-monolith not answering: $(cat "$OUT/monolith.log")"

sleep 3
say "memory, idle"
lib memory idle "$SERVER_PID"

# ---------------------------------------------------------------------------
say "checks: every endpoint answers 200 with the seeded data, on agora and on the monolith"
TOKEN="$(curl -sS --max-time 10 "$URL/api/users/login" -H 'content-type: application/json' \
  -d '{"user":{"email":"seed0@agora.test","password":"password123"}}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["user"]["token"])')" ||
  die "signing in as seed0 failed"
SLUG="seed-article-$((ARTICLES / 2))"
SLUGS="/api/articles/seed-article-" # + random n below ARTICLES
for side in agora monolith; do
  base="$URL"
  [ "$side" = monolith ] && base="$MONOLITH"
  http "$side article" "$base/api/articles/$SLUG" >"$WORK/$side-article.json"
  http "$side article signed in" "$base/api/articles/$SLUG" "$TOKEN" >"$WORK/$side-article-signed.json"
  http "$side list" "$base/api/articles?limit=20" >"$WORK/$side-list.json"
  http "$side list signed in" "$base/api/articles?limit=20" "$TOKEN" >"$WORK/$side-list-signed.json"
  http "$side user" "$base/api/user" "$TOKEN" >"$WORK/$side-user.json"
  python3 - "$WORK/$side-list-signed.json" "$ARTICLES" "$WORK/$side-user.json" <<'EOF' || die "$side: unexpected answer"
import json, sys
lst, n, user = json.load(open(sys.argv[1])), int(sys.argv[2]), json.load(open(sys.argv[3]))
assert len(lst["articles"]) == min(20, n) and lst["articlesCount"] == n, (len(lst["articles"]), lst["articlesCount"])
assert user["user"]["username"] == "seed0", user
EOF
done
for what in article article-signed list list-signed user; do
  lib compare "$what" "$WORK/agora-$what.json" "$WORK/monolith-$what.json"
  cp "$WORK/agora-$what.json" "$WORK/monolith-$what.json" "$OUT/"
done

GET_ARTICLE=/agora.post.v1.PostService/GetArticle
HEALTH_CHECK=/grpc.health.v1.Health/Check
lib grpc-frame "$WORK/get-article.bin" "$SLUG"
lib grpc-frame "$WORK/health.bin"
grpc_call "grpc GetArticle check" "$AGORA_GRPC_ADDR" "$GET_ARTICLE" "$WORK/get-article.bin" "$SLUG"
grpc_call "ceiling Health/Check check" "$CEILING_ADDR" "$HEALTH_CHECK" "$WORK/health.bin" ""

# ---------------------------------------------------------------------------
say "reads: $ROUNDS round(s), wrk -t$THREADS -c$CONNECTIONS and h2load -c1 -m$CONNECTIONS, ${DURATION}s each"
: >"$WORK/rss-reads"
python3 "$WORK/benchlib.py" sample "$SERVER_PID" "$WORK/rss-reads" &
SAMPLER=$!
PIDS+=("$SAMPLER")

# pair ROUND NAME TOKEN ARGS...: agora and the monolith on the same scenario, the
# order swapped every round.
pair() {
  local rnd="$1" name="$2" token="$3"
  shift 3
  if ((rnd % 2)); then
    wrk_run "agora $name" "$rnd" "$URL" "$token" "$THREADS" "$@"
    wrk_run "monolith $name" "$rnd" "$MONOLITH" "$token" "$THREADS" "$@"
  else
    wrk_run "monolith $name" "$rnd" "$MONOLITH" "$token" "$THREADS" "$@"
    wrk_run "agora $name" "$rnd" "$URL" "$token" "$THREADS" "$@"
  fi
}

for ((r = 1; r <= ROUNDS; r++)); do
  # One article read again and again (what agora's caches hold: a hot working set),
  # then a uniformly random one of all of them (mostly misses at 100,000).
  pair "$r" "get article" - get "/api/articles/$SLUG"
  pair "$r" "get article signed in" "$TOKEN" get "/api/articles/$SLUG"
  pair "$r" "get random article" - get "$SLUGS" "$ARTICLES"
  pair "$r" "get random article signed in" "$TOKEN" get "$SLUGS" "$ARTICLES"
  pair "$r" "list 20" - get "/api/articles?limit=20"
  pair "$r" "list 20 signed in" "$TOKEN" get "/api/articles?limit=20"
  pair "$r" "current user" "$TOKEN" get /api/user
  # The same slug over gRPC (against the gateway's JSON of "get article"), and a
  # trivial gRPC call.
  if ((r % 2)); then
    h2load_run "gateway get article h2c" "$r" "$AGORA_HTTP_ADDR" "/api/articles/$SLUG" - ""
    h2load_run "grpc GetArticle" "$r" "$AGORA_GRPC_ADDR" "$GET_ARTICLE" "$WORK/get-article.bin" "$SLUG"
    h2load_run "grpc ceiling" "$r" "$CEILING_ADDR" "$HEALTH_CHECK" "$WORK/health.bin" ""
  else
    h2load_run "grpc ceiling" "$r" "$CEILING_ADDR" "$HEALTH_CHECK" "$WORK/health.bin" ""
    h2load_run "grpc GetArticle" "$r" "$AGORA_GRPC_ADDR" "$GET_ARTICLE" "$WORK/get-article.bin" "$SLUG"
    h2load_run "gateway get article h2c" "$r" "$AGORA_HTTP_ADDR" "/api/articles/$SLUG" - ""
  fi
done
stop_pid "$SAMPLER"
lib sampled during-reads "$WORK/rss-reads"
sleep 5
lib memory after-reads "$SERVER_PID"

# ---------------------------------------------------------------------------
say "raw argon2id rate: bench-argon2 on $(nproc) threads, ${DURATION}s (agora idle), before the sign-ins"
"$BIN_DIR/bench-argon2" --seconds "$DURATION" >"$OUT/argon2-before.txt"
lib argon2 "$OUT/argon2-before.txt"

say "sign-ins: wrk -t$THREADS -c$CONNECTIONS -d${LOGIN_DURATION}s POST /api/users/login, memory every second"
: >"$WORK/rss-logins"
python3 "$WORK/benchlib.py" sample "$SERVER_PID" "$WORK/rss-logins" &
SAMPLER=$!
PIDS+=("$SAMPLER")
echo "-- login" >&2
timeout $((LOGIN_DURATION + 60)) wrk -t "$THREADS" -c "$CONNECTIONS" -d "${LOGIN_DURATION}s" --timeout 30s \
  -s "$WORK/bench.lua" "$URL" -- login "$USERS" >"$OUT/wrk-login.txt" ||
  die "login: wrk failed: $(cat "$OUT/wrk-login.txt")"
servers_alive
lib wrk login 1 "$OUT/wrk-login.txt"
stop_pid "$SAMPLER"
lib sampled during-logins "$WORK/rss-logins"
sleep 5
lib memory after-logins "$SERVER_PID"

say "raw argon2id rate again, after the sign-ins"
"$BIN_DIR/bench-argon2" --seconds "$DURATION" >"$OUT/argon2-after.txt"
lib argon2 "$OUT/argon2-after.txt"

say "reads while sign-ins run: wrk -t1 -c$CONNECTIONS get article alone, then with a sign-in wrk -t1 -c$CONNECTIONS"
wrk_run "read alone" 1 "$URL" - 1 get "$SLUGS" "$ARTICLES"
echo "-- login in the background" >&2
timeout $((DURATION + 90)) wrk -t 1 -c "$CONNECTIONS" -d "$((DURATION + WARMUP + 4))s" --timeout 30s \
  -s "$WORK/bench.lua" "$URL" -- login "$USERS" >"$OUT/wrk-login-background.txt" &
LOGIN_WRK=$!
PIDS+=("$LOGIN_WRK")
sleep 2
wrk_run "read under logins" 1 "$URL" - 1 get "$SLUGS" "$ARTICLES"
wait "$LOGIN_WRK" || die "background login wrk failed: $(cat "$OUT/wrk-login-background.txt")"
lib wrk "login during reads" 1 "$OUT/wrk-login-background.txt"
lib memory end "$SERVER_PID"
grep -E '"level":"(WARN|ERROR)"' "$SERVER_LOG" | head -n 5 >&2 || true

# ---------------------------------------------------------------------------
lib value elapsed_min "$(((SECONDS - RUN_STARTED + 30) / 60))"
say "report: $REPORT"
python3 - "$RESULTS" "$OUT/others-cpu.txt" >"$WORK/report.md" <<'EOF'
import bisect, json, statistics, sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
others = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
meta = {r["key"]: r["value"] for r in rows if r["kind"] == "value"}
loads = defaultdict(list)
for r in rows:
    if r["kind"] == "load":
        loads[r["name"]].append(r)
mem = {r["point"]: r for r in rows if r["kind"] == "memory"}
compares = [r for r in rows if r["kind"] == "compare"]
runs = [r for r in rows if r["kind"] == "argon2"]
argon2 = {"threads": runs[0]["threads"], "rate": statistics.mean(r["rate"] for r in runs),
          "runs": runs}
cold = next(r for r in rows if r["kind"] == "coldstart")["seconds"]


CORES = int(meta["cores"])


def others_at(t):
    """CPU seconds used by other processes up to time t (linear between samples)."""
    times = [o[0] for o in others]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return others[0][1] if others else 0.0
    if i >= len(others):
        return others[-1][1]
    (ta, ca), (tb, cb) = others[i - 1], others[i]
    return ca + (cb - ca) * (t - ta) / (tb - ta) if tb > ta else cb


def busy(r):
    """Share of the machine's CPU other processes used during a measurement, %."""
    if not others or "t0" not in r or r["t1"] <= r["t0"]:
        return float("nan")
    return 100 * (others_at(r["t1"]) - others_at(r["t0"])) / ((r["t1"] - r["t0"]) * CORES)


def fig(name):
    """Median over rounds of req/s, p50 and p99, and the others' CPU share."""
    runs = loads[name]
    return {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")} | {
        "rounds": [r["rps"] for r in runs], "busy": max(busy(r) for r in runs)}


def n(x, d=0):
    return f"{x:,.{d}f}"


out = []
p = out.append
p("# agora — benchmarks")
p("")
p("Generated by `just bench` (`scripts/bench.sh`); do not edit by hand. Each run rewrites this")
p("file and leaves the tools' raw outputs in `target/bench/`.")
p("")
p("What is measured, all in one run on one machine, so that every ratio compares figures")
p("taken minutes apart under the same conditions:")
p("")
p("- **agora**: `agora serve` (every target in one process) on PostgreSQL, loaded through the")
p("  gateway with wrk (HTTP/1.1, 2 threads, 64 connections) or on its gRPC port with h2load")
p("  (one connection, 64 concurrent streams).")
p("- **monolith**: `bench-monolith` (`bench/src/bin/bench-monolith.rs`), the floor agora is held")
p("  to: one axum handler and one SQL query per request over agora's own tables, the same")
p("  Conduit JSON, the same token check, no caches.")
p("- **grpc ceiling**: `bench-grpc-ceiling`, tonic serving only `grpc.health.v1.Health/Check`:")
p("  the most any tonic unary call reaches here.")
p("- **argon2**: `bench-argon2`, the raw argon2id rate with agora's parameters (19 MiB, t=2,")
p("  p=1) on one thread per core: the most sign-ins per second the cores allow.")
p("- **memory**: VmRSS / VmHWM of the agora process from `/proc/<pid>/status`.")
p("- **cold start**: exec of `agora serve` to the first `/readyz` 200 on a fresh data directory")
p("  (embedded SQLite, keys generated), best of three.")
p("")
p("*get article* reads one slug again and again (the same slug as the direct gRPC call, for")
p("which h2load sends one fixed body): a hot working set, which agora's caches hold and the")
p("monolith reads from PostgreSQL each time. *get random article* reads a uniformly random")
p("`seed-article-<n>` per request: at 100,000 articles mostly cache misses, one query on both")
p("sides. *Signed in* requests carry `Authorization: Token …` of")
p("`seed0`, so `following` and `favorited` are computed per viewer. Each figure is the median")
p("over the rounds (agora and its reference point alternate, order swapped every round); p50")
p("and p99 are per-request latencies in ms. Server, database and load generators share the")
p("machine's cores, so latency is mostly queueing: absolute figures drift by ±30% between")
p("runs; the ratios are what count. Work by other processes skews both: the script measures the")
p("CPU they take during each scenario (column *others*) and says so below when the machine was")
p("not quiet.")
p("")
p("Run it: `just bench` (about 11 minutes plus the build: 10,000 users, 100,000 articles, 15 s")
p("per scenario, two rounds), or `AGORA_BENCH_QUICK=1 just bench` (1,000 users, 2,000 articles,")
p("3 s per scenario, one round, sign-ins for 10 s: about 2 minutes). It needs PostgreSQL")
p("(`AGORA_BENCH_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`, a role")
p("that may create databases), `wrk` and `h2load` (Debian `wrk`, `nghttp2-client`; installed")
p("when missing and running as root), `openssl`, `curl`, `python3`. Other knobs:")
p("`AGORA_BENCH_DURATION`, `AGORA_BENCH_ROUNDS`, `AGORA_BENCH_LOGIN_DURATION`,")
p("`AGORA_BENCH_NO_BUILD=1`, `AGORA_BENCH_KEEP_DB=1` (see the head of `scripts/bench.sh`).")
p("")
p("## This run")
p("")
p(f"- {meta['date']}, commit `{meta['commit']}`, {meta['mode']} mode: {int(meta['duration'])} s per "
  f"scenario, {meta['rounds']} round(s), sign-ins for {meta['login_duration']} s; about "
  f"{meta['elapsed_min']} min after the build.")
p(f"- Machine: {meta['cores']} cores ({meta['cpu']}), {meta['ram_gib']} GiB RAM; PostgreSQL, wrk and "
  f"h2load on the same machine.")
p(f"- Versions: {meta['rustc']}; PostgreSQL {meta['postgres']}; {meta['wrk']}; {meta['h2load']}.")
measured = [r for r in rows if r["kind"] in ("load", "argon2")]
shares = [busy(r) for r in measured]
shares = [x for x in shares if x == x]
if shares:
    total_t = sum(r["t1"] - r["t0"] for r in measured)
    total_c = sum(others_at(r["t1"]) - others_at(r["t0"]) for r in measured)
    mean = 100 * total_c / (total_t * CORES)
    worst = max(shares)
    p(f"- Other processes on the machine used {mean:.1f}% of its CPU during the measurements "
      f"(at most {worst:.1f}% during one; column *others* below)"
      + (". **The machine was not quiet: figures taken while others used more than 10% are "
         "suspect; run again on a quiet machine.**" if worst > 10 else "."))
fav = int(meta["favorites"])
p(f"- Data: `agora seed --users {int(meta['users']):,} --articles {int(meta['articles']):,} --follows "
  f"{meta['follows']}`: {int(meta['tags']):,} tags, "
  + (f"{fav:,} favorites." if fav else "no favorites (this `agora seed` writes none: `favorited` is "
     "false and `favoritesCount` 0 everywhere).")
  + " Then `VACUUM ANALYZE`.")
p("")

# ---- targets ----
def ratio(a, b):
    return a / b if b else float("nan")

targets = []
def target(figure, measured, shown, goal, ok):
    targets.append((figure, shown, goal, "met" if ok else "**not met**"))

for name, label in [("get article", "`GET /api/articles/{slug}` anonymous, one slug"),
                    ("get article signed in", "`GET /api/articles/{slug}` signed in, one slug"),
                    ("get random article", "`GET /api/articles/{slug}` anonymous, random slug"),
                    ("get random article signed in", "`GET /api/articles/{slug}` signed in, random slug"),
                    ("list 20", "`GET /api/articles?limit=20` anonymous"),
                    ("list 20 signed in", "`GET /api/articles?limit=20` signed in"),
                    ("current user", "`GET /api/user`")]:
    goal = 1.5 if name == "current user" else 2.0
    a, m = fig("agora " + name), fig("monolith " + name)
    r = ratio(a["rps"], m["rps"])
    target(label, r, f"{r:.2f}× ({n(a['rps'])} / {n(m['rps'])} req/s)", f"≥ {goal}× monolith", r >= goal)
g, d, c = fig("gateway get article h2c"), fig("grpc GetArticle"), fig("grpc ceiling")
r = ratio(g["rps"], d["rps"])
target("one article as JSON through the gateway / direct gRPC `GetArticle` (both h2load, one HTTP/2 connection)", r,
       f"{r:.2f}× ({n(g['rps'])} / {n(d['rps'])} req/s)", "≥ 0.75×", r >= 0.75)
w = fig("agora get article")
r = ratio(w["rps"], d["rps"])
target("the same, the gateway over HTTP/1.1 (wrk, 64 connections) / direct gRPC", r,
       f"{r:.2f}× ({n(w['rps'])} / {n(d['rps'])} req/s)", "≥ 0.75×", r >= 0.75)
r = ratio(d["rps"], c["rps"])
target("gRPC `GetArticle` / trivial tonic unary call", r,
       f"{r:.2f}× ({n(d['rps'])} / {n(c['rps'])} req/s)", "≥ 0.5×", r >= 0.5)
login = fig("login")
r = ratio(login["rps"], argon2["rate"])
target(f"sign-ins / raw argon2id rate ({argon2['threads']} threads)", r,
       f"{r:.2f}× ({login['rps']:.1f} / {argon2['rate']:.1f} per s)", "≥ 0.9×", r >= 0.9)
alone, under = fig("read alone"), fig("read under logins")
r = ratio(under["p99"], alone["p99"])
target("article read p99 while sign-ins saturate hashing / alone", r,
       f"{r:.2f}× ({under['p99']:.1f} / {alone['p99']:.1f} ms)", "≤ 2×", r <= 2)
idle = mem["idle"]
target("memory idle (VmRSS; VmHWM)", idle["rss_mib"],
       f"{idle['rss_mib']:.1f}; {idle['hwm_mib']:.1f} MiB", "≤ 40 MiB", max(idle["rss_mib"], idle["hwm_mib"]) <= 40)
dl, al = mem["during-logins"], mem["after-logins"]
worst = max(dl["rss_mib"], al["rss_mib"], al["hwm_mib"])
target("memory during / after sign-ins (max VmRSS; VmRSS 5 s after; VmHWM)", worst,
       f"{dl['rss_mib']:.1f}; {al['rss_mib']:.1f}; {al['hwm_mib']:.1f} MiB", "≤ 150 MiB", worst <= 150)
dr, ar = mem["during-reads"], mem["after-reads"]
worst = max(dr["rss_mib"], ar["rss_mib"], ar["hwm_mib"])
target("memory under the read load (max VmRSS; VmRSS 5 s after; VmHWM)", worst,
       f"{dr['rss_mib']:.1f}; {ar['rss_mib']:.1f}; {ar['hwm_mib']:.1f} MiB", "≤ 150 MiB", worst <= 150)
best = min(cold)
target(f"cold start to ready, SQLite, best of {len(cold)}", best,
       f"{best * 1000:.0f} ms ({', '.join(f'{s * 1000:.0f}' for s in cold)})", "≤ 1 s", best <= 1)

p("## Targets")
p("")
p("| figure | measured | target | |")
p("|---|---|---|---|")
for t in targets:
    p("| " + " | ".join(t) + " |")
met = sum(t[3] == "met" for t in targets)
p("")
p(f"{met} of {len(targets)} met.")
p("")

# ---- every scenario ----
p("## Every scenario")
p("")
p("| scenario | tool | req/s | p50 ms | p99 ms | req/s per round | others |")
p("|---|---|---:|---:|---:|---|---:|")
tools = {name: runs[0]["tool"] for name, runs in loads.items()}
for name in loads:
    f = fig(name)
    p(f"| {name} | {tools[name]} | {n(f['rps'])} | {f['p50']:.2f} | {f['p99']:.2f} | "
      + ", ".join(n(x) for x in f["rounds"]) + f" | {f['busy']:.0f}% |")
p("")
p("- *get article*, *list 20*, *current user*: wrk -t2 -c64; *grpc …*: h2load -c1 -m64 (a")
p("  checked call after each run: `grpc-status` 0).")
p("- *login*: `POST /api/users/login` as a random seeded user, wrk -t2 -c64, for the whole")
p("  sign-in phase; each sign-in verifies one argon2id hash.")
p("- *read alone* / *read under logins*: the anonymous random-slug article read with wrk -t1 -c64,")
p("  alone and then while a second wrk (-t1 -c64, *login during reads*) signs in.")
p(f"- *argon2*: the mean of a run just before and one just after the sign-ins ("
  + ", ".join(f"{r['hashes']:,} hashes in {r['seconds']:.1f} s = {r['rate']:.1f}/s, others {busy(r):.0f}%"
              for r in argon2["runs"])
  + f"), {argon2['threads']} threads, agora idle.")
p("- *others*: the largest share of the machine's CPU (all cores) that processes outside this")
p("  run used during one of the scenario's measurements.")
p("")

p("## Memory of the agora process")
p("")
p("| when | VmRSS MiB | VmHWM MiB |")
p("|---|---:|---:|")
labels = [("idle", "idle, before any load"), ("during-reads", "during the reads (max of 1 s samples)"),
          ("after-reads", "5 s after the reads"), ("during-logins", "during the sign-ins (max of 1 s samples)"),
          ("after-logins", "5 s after the sign-ins"), ("end", "after reads under sign-ins"),
          ("idle-sqlite", "idle, embedded SQLite (the cold-start process, 2 s after ready)")]
for key, label in labels:
    if key in mem:
        m = mem[key]
        hwm = "" if m.get("hwm_mib") is None else f"{m['hwm_mib']:.1f}"
        p(f"| {label} | {m['rss_mib']:.1f} | {hwm} |")
p("")

p("## The monolith's answers against agora's")
p("")
p("The same requests (one article and the list of 20, anonymous and signed in; the current")
p("user) to both, compared field by field:")
p("")
for c in compares:
    p(f"- {c['name']}: " + ("identical." if not c["ndiffs"] else
      f"{c['ndiffs']} difference(s): " + "; ".join(f"`{d}`" for d in c["diffs"][:5]) + "."))
print("\n".join(out))
EOF
# What the figures mean and what bounds the targets not met is written by hand and
# kept across runs.
if [ -f docs/benchmarks-analysis.md ]; then
  { echo; cat docs/benchmarks-analysis.md; } >>"$WORK/report.md"
fi
cp "$WORK/report.md" "$REPORT"
cp "$WORK/report.md" "$OUT/report.md"
say "done"
sed -n '/^## Targets/,/^## Memory/p' "$REPORT" >&2
