#!/usr/bin/env python3
"""Event pipeline benchmark: outbox -> bus -> notification service -> SSE.

    python3 scripts/bench-events.py [--followers 200] [--articles 50] [--latency 200]
                                    [--bus rabbitmq|memory]

Starts one `agora serve` (every target in one process) on a fresh PostgreSQL database
and a RabbitMQ namespace of its own (`--bus memory`: SQLite files and the in-process
bus instead), then measures three things through the REST gateway:

1. follows: F followers follow one author as fast as 4 client threads go; time from
   the first follow request sent to the author's unreadCount reaching F (each
   `user.followed` stored as a FOLLOWED notification). -> follow events/s.
2. fan-out: the author publishes A articles back to back; time from the first
   publish to all A x F ARTICLE_PUBLISHED notifications stored (counted in the
   notification service's database), and to their `notification.created` events
   all relayed to the bus. -> notifications stored/s, article events/s.
3. commit -> SSE: a subscriber holds GET /api/notifications/stream open; another
   user comments on the subscriber's article N times, one at a time. Latency = when
   the COMMENTED notification's `data:` line arrives minus when the comment's 201
   arrived (the post transaction had committed by then). -> p50/p90/p99/max.

A second table splits each phase by the server's own event metrics (GET /metrics):
relay batches and their duration, consumer lag. The tables go to stdout and
target/bench/events.md. Any failed request, timeout (120 s per phase), missing or extra
notification, dead-lettered event or ERROR line in the server log fails the run (exit
status 1). The server is stopped, the database dropped and the namespace's queues
deleted on every exit.

Environment: AGORA_BENCH_DATABASE_URL (postgres://postgres@127.0.0.1:5432/postgres, a
role that may create databases), AGORA_BENCH_AMQP_URL (else AGORA_AMQP_URL, else
amqp://guest:guest@127.0.0.1:5672/%2f), AGORA_BENCH_BIN (target/release/agora, built
with `cargo build --release` unless AGORA_BENCH_NO_BUILD=1), AGORA_BENCH_KEEP_DB=1,
AGORA_BENCH_RUST_LOG (the server's RUST_LOG, default warn). On failure the whole server
log is kept in target/bench/events-serve.log.
See docs/bench.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import math
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASE_TIMEOUT = 120.0
PASSWORD = "password123"


class BenchError(Exception):
    pass


def log(msg: str) -> None:
    print(f"== {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def db_url(admin: str, name: str) -> str:
    p = urllib.parse.urlsplit(admin)
    return urllib.parse.urlunsplit(p._replace(path="/" + name))


def psql(url: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    if out.returncode != 0:
        raise BenchError(f"psql {sql!r}: {out.stderr.strip()}")
    return out.stdout.strip()


class Api:
    """JSON over one keep-alive HTTP connection per thread."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            self.local.conn = conn
            self.local.requests = 0
            self.local.last = time.perf_counter()
        return conn

    def call(self, method: str, path: str, token: str | None = None, body=None,
             expect: int = 200):
        headers = {"accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        if token:
            headers["authorization"] = f"Token {token}"
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as err:
            idle = time.perf_counter() - self.local.last
            conn.close()
            self.local.conn = None
            raise BenchError(f"{method} {path}: {type(err).__name__}: {err} on a keep-alive "
                             f"connection after {self.local.requests} requests, idle "
                             f"{idle * 1000:.0f} ms") from err
        self.local.requests += 1
        self.local.last = time.perf_counter()
        if resp.status != expect:
            raise BenchError(f"{method} {path} answered {resp.status} (wanted {expect}): "
                             f"{raw[:300].decode(errors='replace')}")
        return json.loads(raw) if raw else None

    def register(self, username: str) -> str:
        body = {"user": {"username": username, "email": f"{username}@agora.test",
                         "password": PASSWORD}}
        return self.call("POST", "/api/users", body=body, expect=201)["user"]["token"]

    def unread(self, token: str) -> int:
        return self.call("GET", "/api/notifications?limit=1", token)["unreadCount"]


class SseReader(threading.Thread):
    """Reads GET /api/notifications/stream, timestamping every `data:` line."""

    def __init__(self, host: str, port: int, token: str):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.conn.request("GET", "/api/notifications/stream",
                          headers={"authorization": f"Token {token}",
                                   "accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise BenchError(f"notification stream answered {self.resp.status}: "
                             f"{self.resp.read(300)!r}")
        self.events: list[tuple[float, dict]] = []
        self.cond = threading.Condition()
        self.error: str | None = None
        self.closing = False

    def run(self) -> None:
        try:
            while True:
                line = self.resp.readline()
                now = time.perf_counter()
                if not line:
                    raise BenchError("the notification stream ended")
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:") and "error" in text:
                    raise BenchError(f"the notification stream sent {text}")
                if text.startswith("data:"):
                    data = json.loads(text[5:].strip())
                    with self.cond:
                        self.events.append((now, data))
                        self.cond.notify_all()
        except Exception as err:  # noqa: BLE001 - reported by wait_for
            with self.cond:
                if not self.closing:
                    self.error = f"{type(err).__name__}: {err}"
                self.cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < count:
                if self.error:
                    raise BenchError(self.error)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"SSE event {count} did not arrive within {timeout:.0f} s "
                                     f"({len(self.events)} arrived)")
                self.cond.wait(left)
            return self.events[count - 1]

    def close(self) -> None:
        with self.cond:
            self.closing = True
        try:
            self.conn.sock and self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def wait_until(what: str, probe, done, interval: float, timeout: float = PHASE_TIMEOUT):
    """Calls probe() every `interval` until done(value); returns (value, perf_counter)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        now = time.perf_counter()
        if done(value):
            return value, now
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not reached within {timeout:.0f} s (last: {value})")
        time.sleep(interval)


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


class Bench:
    def __init__(self, args):
        self.args = args
        self.rabbit = args.bus == "rabbitmq"
        self.admin_url = os.environ.get("AGORA_BENCH_DATABASE_URL",
                                        "postgres://postgres@127.0.0.1:5432/postgres")
        self.amqp_url = (os.environ.get("AGORA_BENCH_AMQP_URL") or os.environ.get("AGORA_AMQP_URL")
                         or "amqp://guest:guest@127.0.0.1:5672/%2f")
        self.bin = os.environ.get("AGORA_BENCH_BIN", os.path.join(ROOT, "target/release/agora"))
        tag = secrets.token_hex(6)
        self.namespace = f"agora-bench-{tag}"
        self.db = f"agora_bench_events_{tag}"
        self.db_created = False
        self.work = tempfile.mkdtemp(prefix="agora-bench-events.")
        self.server: subprocess.Popen | None = None
        self.server_log = os.path.join(self.work, "serve.log")
        self.results: dict[str, str] = {}

    # ---- setup and teardown -------------------------------------------------

    def start(self) -> None:
        for tool in ["openssl"] + (["psql", "rabbitmqctl"] if self.rabbit else []):
            if not shutil.which(tool):
                raise BenchError(f"{tool} is needed")
        if not os.environ.get("AGORA_BENCH_NO_BUILD"):
            log("cargo build --release")
            subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
        if not os.access(self.bin, os.X_OK):
            raise BenchError(f"no agora binary at {self.bin}")

        env = {k: v for k, v in os.environ.items() if not k.startswith("AGORA_")}
        data_dir = os.path.join(self.work, "data")
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        self.metrics_port = metrics_port
        env.update({
            "AGORA_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "AGORA_DATA_DIR": data_dir,
            "AGORA_HTTP_ADDR": f"127.0.0.1:{http_port}",
            "AGORA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "AGORA_RATE_LIMIT_PER_SECOND": "1000000",
            "AGORA_AUTH_RATE_LIMIT_PER_MINUTE": "1000000",
            "AGORA_ACCESS_TOKEN_TTL": "1h",
            "AGORA_LOG_FORMAT": "json",
            "RUST_LOG": os.environ.get("AGORA_BENCH_RUST_LOG", "warn"),
        })
        if self.rabbit:
            keys = os.path.join(self.work, "keys")
            os.makedirs(keys)
            subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out",
                            os.path.join(keys, "k1.pem")], check=True, capture_output=True)
            psql(self.admin_url, "SELECT 1")
            log(f"database {self.db}, RabbitMQ namespace {self.namespace}")
            psql(self.admin_url, f"CREATE DATABASE {self.db}")
            self.db_created = True
            self.pg_url = db_url(self.admin_url, self.db)
            env.update({
                "AGORA_DATABASE_URL": self.pg_url,
                "AGORA_AUTH_KEYS_DIR": keys,
                "AGORA_AMQP_URL": self.amqp_url,
                "AGORA_AMQP_NAMESPACE": self.namespace,
            })
        else:
            log(f"SQLite under {data_dir}, in-process bus")
        self.data_dir = data_dir

        log(f"agora serve on 127.0.0.1:{http_port}")
        with open(self.server_log, "wb") as out:
            self.server = subprocess.Popen([self.bin, "serve"], cwd=self.work, env=env,
                                           stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
        self.host, self.port = "127.0.0.1", http_port
        self.api = Api(self.host, self.port)
        deadline = time.monotonic() + 60
        while True:
            if self.server.poll() is not None:
                raise BenchError(f"agora serve exited with {self.server.returncode}")
            try:
                c = http.client.HTTPConnection(self.host, self.port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError("agora serve not ready within 60 s")
            time.sleep(0.5)

    def stop_server(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def cleanup(self, failed: bool) -> None:
        self.stop_server()
        if self.server and self.server.returncode not in (None, 0, -signal.SIGTERM):
            print(f"bench: agora serve exited with {self.server.returncode}", file=sys.stderr)
        if failed and os.path.exists(self.server_log):
            with open(self.server_log, errors="replace") as f:
                tail = f.readlines()[-50:]
            print("---- last 50 lines of the agora serve log ----", file=sys.stderr)
            sys.stderr.writelines(tail)
            kept = os.path.join(ROOT, "target/bench/events-serve.log")
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            shutil.copyfile(self.server_log, kept)
            print(f"(the whole log: {kept})", file=sys.stderr)
        if self.db_created:
            if os.environ.get("AGORA_BENCH_KEEP_DB"):
                print(f"keeping database {self.db} ({self.pg_url})", file=sys.stderr)
            else:
                try:
                    psql(self.admin_url, f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
                except Exception as err:  # noqa: BLE001
                    print(f"bench: dropping {self.db} failed: {err}", file=sys.stderr)
        if self.rabbit:
            queues = [f"{self.namespace}.notification", f"{self.namespace}.notification.dead"]
            queues += [f"{self.namespace}.notification.retry.{n}" for n in range(1, 5)]
            for q in queues:
                subprocess.run(["rabbitmqctl", "-q", "delete_queue", q],
                               capture_output=True, timeout=60)
            # The (empty, unbound) `<ns>.events` exchange stays: rabbitmqctl cannot delete it.
        shutil.rmtree(self.work, ignore_errors=True)

    # ---- measuring helpers --------------------------------------------------

    def count(self, sql: str) -> list[int]:
        """One row of integers from the notification service's database."""
        if self.rabbit:
            out = psql(self.pg_url, f"SET search_path TO agora_notification; {sql}")
            return [int(v) for v in out.splitlines()[-1].split("|")]
        path = os.path.join(self.data_dir, "notification.db")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return [int(v) for v in conn.execute(sql).fetchone()]
        finally:
            conn.close()

    def dead_letters(self) -> int | None:
        if not self.rabbit:
            return None
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages"],
                             capture_output=True, text=True, timeout=120)
        total = 0
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith(self.namespace + ".") and (
                    parts[0].endswith(".dead") or ".retry." in parts[0]):
                total += int(parts[1])
        return total

    def server_problems(self) -> tuple[list[str], list[str]]:
        warns, errors = [], []
        with open(self.server_log, errors="replace") as f:
            for line in f:
                try:
                    level = str(json.loads(line).get("level", "")).upper()
                except ValueError:
                    level = "ERROR" if "panicked" in line else ""
                if level == "ERROR":
                    errors.append(line.rstrip())
                elif level in ("WARN", "WARNING"):
                    warns.append(line.rstrip())
        return warns, errors

    def metrics(self) -> dict[tuple[str, str], float]:
        """The event counters and histogram sums of GET /metrics, by (name, label value)."""
        conn = http.client.HTTPConnection(self.host, self.metrics_port, timeout=30)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        out = {}
        for line in text.splitlines():
            if not line.startswith("agora_events_") or "_bucket{" in line:
                continue
            name, _, rest = line.partition("{")
            labels, _, value = rest.partition("} ")
            who = labels.split('"')[1] if '"' in labels else ""
            out[(name, who)] = float(value)
        return out

    def pipeline(self, before: dict, after: dict, producer: str) -> dict[str, float]:
        """What the relays and the consumer did between two /metrics snapshots."""
        d = lambda name, who: after.get((name, who), 0.0) - before.get((name, who), 0.0)  # noqa: E731
        out = {}
        for key, service in (("src", producer), ("ntf", "notification")):
            batches = d("agora_events_publish_seconds_count", service)
            out[f"{key}_events"] = d("agora_events_published_total", service)
            out[f"{key}_batches"] = batches
            out[f"{key}_batch_ms"] = (d("agora_events_publish_seconds_sum", service) / batches
                                      * 1000 if batches else 0.0)
        handled = d("agora_events_consumer_lag_seconds_count", "notification")
        out["handled"] = handled
        out["lag_ms"] = (d("agora_events_consumer_lag_seconds_sum", "notification") / handled
                         * 1000 if handled else 0.0)
        return out

    # ---- the benchmark ------------------------------------------------------

    def run(self) -> None:
        a = self.args
        F, A, N = a.followers, a.articles, a.latency
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

        log(f"registering 1 author, {F} followers, a subscriber and a commenter")
        author = self.api.register("author")
        t = time.perf_counter()
        followers = list(pool.map(self.api.register, [f"fan{i}" for i in range(F)]))
        reg_s = time.perf_counter() - t
        subscriber = self.api.register("subscriber")
        commenter = self.api.register("commenter")
        users = F + 3
        # user.registered must be applied before the follows count, or they would wait
        # for a retry (UnknownActor).
        wait_until("accounts projected", lambda: self.count("SELECT COUNT(*) FROM account")[0],
                   lambda v: v >= users, 0.2)
        log(f"registered {users} users in {reg_s:.1f} s ({F / reg_s:.0f}/s for the followers)")

        # -- 1. follows
        log(f"phase 1: {F} follows")

        def follow(token: str) -> None:
            # No body: the route takes none, and the gateway answers before reading one and
            # then drops the keep-alive connection when it arrives late (see docs/bench.md).
            self.api.call("POST", "/api/profiles/author/follow", token)

        m0 = self.metrics()
        t_start = time.perf_counter()
        list(pool.map(follow, followers))
        t_sent = time.perf_counter()
        _, t_seen = wait_until("author's unreadCount == followers",
                               lambda: self.api.unread(author), lambda v: v >= F, 0.05)
        p1 = t_seen - t_start
        self.results["p1_requests_s"] = t_sent - t_start
        self.results["p1_s"] = p1
        self.results["p1_rate"] = F / p1
        log(f"  {F} follows answered in {t_sent - t_start:.2f} s, all stored after {p1:.2f} s")
        wait_until("follower projection", lambda: self.count(
            "SELECT COUNT(*) FROM follower")[0], lambda v: v >= F, 0.1)
        wait_until("FOLLOWED relayed", lambda: self.count(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0], lambda v: v == 0, 0.1)
        m1 = self.metrics()
        self.results["p1_pipe"] = self.pipeline(m0, m1, "user")

        # -- 2. fan-out
        expected = F + A * F
        log(f"phase 2: {A} articles x {F} followers = {A * F} notifications")
        probe_sql = ("SELECT (SELECT COUNT(*) FROM notification), "
                     "(SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL)")
        t_start = time.perf_counter()
        for i in range(A):
            self.api.call("POST", "/api/articles", author,
                          {"article": {"title": f"Bench {i}", "description": "d",
                                       "body": "b", "tagList": []}}, expect=201)
        t_sent = time.perf_counter()
        stored_at = None

        def probe():
            nonlocal stored_at
            v = self.count(probe_sql)
            if stored_at is None and v[0] >= expected:
                stored_at = time.perf_counter()
            return v

        _, t_relayed = wait_until("notifications stored and relayed", probe,
                                  lambda v: v[0] >= expected and v[1] >= expected, 0.1)
        p2 = stored_at - t_start
        self.results["p2_requests_s"] = t_sent - t_start
        self.results["p2_s"] = p2
        self.results["p2_relayed_s"] = t_relayed - t_start
        self.results["p2_rate"] = A * F / p2
        self.results["p2_events"] = A / p2
        m2 = self.metrics()
        self.results["p2_pipe"] = self.pipeline(m1, m2, "post")
        log(f"  {A} publishes answered in {t_sent - t_start:.2f} s, {A * F} stored after "
            f"{p2:.2f} s, their notification.created relayed after {t_relayed - t_start:.2f} s")

        # -- 3. commit -> SSE
        log(f"phase 3: {N} comments, commit -> SSE")
        slug = self.api.call("POST", "/api/articles", subscriber,
                             {"article": {"title": "Live", "description": "d", "body": "b",
                                          "tagList": []}}, expect=201)["article"]["slug"]
        stream = SseReader(self.host, self.port, subscriber)
        stream.start()
        try:
            warmup = 5
            lat, req = [], []
            for i in range(warmup + N):
                t0 = time.perf_counter()
                self.api.call("POST", f"/api/articles/{slug}/comments", commenter,
                              {"comment": {"body": f"comment {i}"}}, expect=201)
                t1 = time.perf_counter()
                arrived, data = stream.wait_for(i + 1, 10)
                n = data.get("notification", {})
                if n.get("kind") != "NOTIFICATION_KIND_COMMENTED" or n.get("actor") != "commenter":
                    raise BenchError(f"SSE event {i + 1} is not the comment's: {data}")
                if i >= warmup:
                    lat.append((arrived - t1) * 1000)
                    req.append((t1 - t0) * 1000)
                time.sleep(0.02)
            time.sleep(0.5)
            if len(stream.events) != warmup + N:
                raise BenchError(f"{len(stream.events)} SSE events for {warmup + N} comments")
        finally:
            stream.close()
        wait_until("COMMENTED relayed", lambda: self.count(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")[0], lambda v: v == 0, 0.1)
        self.results["p3_pipe"] = self.pipeline(m2, self.metrics(), "post")
        self.results["lat"] = lat
        self.results["req"] = req
        log(f"  p50 {statistics.median(lat):.1f} ms, p99 {pct(lat, 99):.1f} ms")

        # -- nothing lost, nothing doubled
        time.sleep(1.0)
        total = self.count("SELECT COUNT(*) FROM notification")[0]
        want = expected + warmup + N
        if total != want:
            raise BenchError(f"{total} notifications stored, expected exactly {want}")
        if self.api.unread(author) != F:
            raise BenchError("the author's unreadCount changed after phase 1")
        dead = self.dead_letters()
        self.results["dead"] = dead
        if dead:
            raise BenchError(f"{dead} messages in {self.namespace}'s retry/dead-letter queues")
        pool.shutdown()

    def table(self) -> str:
        a, r = self.args, self.results
        lat, req = r["lat"], r["req"]
        F, A = a.followers, a.articles
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip() or "unknown"
        bus = (f"RabbitMQ ({self.namespace}) + PostgreSQL" if self.rabbit
               else "in-process bus + SQLite")
        lines = [
            f"agora events bench, {datetime.date.today()}, commit {commit}, "
            f"{os.cpu_count()} cores, {bus}",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| follows: {F} `user.followed` → FOLLOWED stored, s | {r['p1_s']:.2f} |",
            f"| follows: events/s (first request → last stored) | {r['p1_rate']:,.0f} |",
            f"| follows: the {F} follow requests alone, s (4 clients) | {r['p1_requests_s']:.2f} |",
            f"| fan-out: {A} articles → {A * F:,} notifications stored, s | {r['p2_s']:.2f} |",
            f"| fan-out: notifications stored/s | {r['p2_rate']:,.0f} |",
            f"| fan-out: `post.article_published` events/s | {r['p2_events']:,.1f} |",
            f"| fan-out: the {A} publish requests alone, s (1 client) | {r['p2_requests_s']:.2f} |",
            f"| fan-out: all {A * F + F:,} `notification.created` relayed, s | "
            f"{r['p2_relayed_s']:.2f} |",
            f"| commit → SSE p50 ms ({len(lat)} comments) | {pct(lat, 50):.1f} |",
            f"| commit → SSE p90 ms | {pct(lat, 90):.1f} |",
            f"| commit → SSE p99 ms | {pct(lat, 99):.1f} |",
            f"| commit → SSE max ms | {max(lat):.1f} |",
            f"| comment request (POST → 201) p50 ms | {pct(req, 50):.1f} |",
            "",
            "Where it went, from the server's own metrics (`/metrics`) per phase: the producer's",
            "and the notification service's outbox relays (ms per batch = publish, with publisher",
            "confirms on RabbitMQ, plus marking the rows sent), and the notification consumer",
            "(lag = event created in the producer's transaction → its effect committed).",
            "",
            "| phase | producer relay: events / batches / ms per batch | notification consumer: "
            "events / mean lag ms | notification relay: events / batches / ms per batch |",
            "|---|---:|---:|---:|",
        ]
        for name, key in (("follows (user)", "p1_pipe"), ("fan-out (post)", "p2_pipe"),
                          ("commit → SSE (post)", "p3_pipe")):
            p = r[key]
            lines.append(
                f"| {name} | {p['src_events']:,.0f} / {p['src_batches']:,.0f} / "
                f"{p['src_batch_ms']:.1f} | {p['handled']:,.0f} / {p['lag_ms']:.1f} | "
                f"{p['ntf_events']:,.0f} / {p['ntf_batches']:,.0f} / {p['ntf_batch_ms']:.1f} |")
        return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--followers", type=int, default=200)
    p.add_argument("--articles", type=int, default=50)
    p.add_argument("--latency", type=int, default=200, help="comments for commit -> SSE")
    p.add_argument("--bus", choices=["rabbitmq", "memory"], default="rabbitmq")
    p.add_argument("--out", default=os.path.join(ROOT, "target/bench/events.md"))
    args = p.parse_args()
    if min(args.followers, args.articles, args.latency) < 1:
        p.error("counts must be positive")

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args)
    failed = True
    try:
        bench.start()
        bench.run()
        warns, errors = bench.server_problems()
        if warns:
            print(f"---- {len(warns)} WARN lines in the server log ----", file=sys.stderr)
            print("\n".join(warns[:20]), file=sys.stderr)
        if errors:
            print(f"---- {len(errors)} ERROR lines in the server log ----", file=sys.stderr)
            print("\n".join(errors[:20]), file=sys.stderr)
            raise BenchError("the server logged errors")
        table = bench.table()
        if warns:
            table += f"\n{len(warns)} WARN lines in the server log (see stderr).\n"
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table)
        print(table)
        failed = False
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
    finally:
        bench.cleanup(failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
