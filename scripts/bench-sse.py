#!/usr/bin/env python3
"""Live streams at scale: N SSE subscribers of one article's comment stream.

    scripts/bench-sse.py --url http://127.0.0.1:8080 --token <jwt> --slug <slug> \
        --subscribers 10000 [--pid <agora pid>] [--json out.json]

Opens every subscription at once (GET /api/articles/<slug>/comments/stream), waits
until all answered 200, then adds one comment through the API and measures how long
each subscriber takes to receive it. With --pid, also the resident memory of the
server before and after the subscribers connected. Prints one JSON line. Needs
nothing beyond the standard library (asyncio streams); raise `ulimit -n` above the
subscriber count.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def subscribe(host, port, path, connected, received, marker, opened_at, timeout):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout)
    if b" 200 " not in status:
        raise RuntimeError(f"subscription answered {status!r}")
    connected.append(time.monotonic() - opened_at)
    buffer = b""
    while marker[0] is None or marker[0].encode() not in buffer:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError("stream closed before the comment arrived")
        buffer = buffer[-4096:] + chunk
    received.append(time.monotonic())
    writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--slug", required=True)
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()

    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname, url.port or 80
    path = f"/api/articles/{args.slug}/comments/stream"
    before = rss_kib(args.pid) if args.pid else 0

    connected, received, marker = [], [], [None]
    opened_at = time.monotonic()
    tasks = [
        asyncio.create_task(
            subscribe(host, port, path, connected, received, marker, opened_at, args.timeout)
        )
        for _ in range(args.subscribers)
    ]
    deadline = opened_at + args.timeout
    while len(connected) < args.subscribers and time.monotonic() < deadline:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise failed[0].exception()
        await asyncio.sleep(0.05)
    all_connected = time.monotonic() - opened_at
    if len(connected) < args.subscribers:
        sys.exit(f"only {len(connected)} of {args.subscribers} connected in {args.timeout}s")
    await asyncio.sleep(1)  # let the server settle before reading its memory
    after = rss_kib(args.pid) if args.pid else 0

    marker[0] = f"bench-sse-{time.time_ns()}"
    body = json.dumps({"comment": {"body": marker[0]}}).encode()
    request = urllib.request.Request(
        f"{args.url}/api/articles/{args.slug}/comments",
        data=body,
        headers={"content-type": "application/json", "authorization": f"Token {args.token}"},
    )
    sent = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: urllib.request.urlopen(request, timeout=30).read()
    )
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    errors = [t.exception() for t in done if t.exception()]
    if errors or len(received) < args.subscribers:
        sys.exit(f"{len(received)} of {args.subscribers} received the comment; {errors[:1]}")
    delays = sorted((r - sent) * 1000 for r in received)
    print(json.dumps({
        "subscribers": args.subscribers,
        "all_connected_s": round(all_connected, 2),
        "delivery_p50_ms": round(statistics.median(delays), 1),
        "delivery_p99_ms": round(delays[int(len(delays) * 0.99) - 1], 1),
        "delivery_max_ms": round(delays[-1], 1),
        "rss_before_mib": round(before / 1024, 1),
        "rss_connected_mib": round(after / 1024, 1),
    }))


if __name__ == "__main__":
    asyncio.run(main())
