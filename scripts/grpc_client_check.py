#!/usr/bin/env python3
"""An independent gRPC and gRPC-web client check against a running `agora serve` (target all).

It knows nothing of agora's Rust code: every message class is built at run time from the
descriptors the server publishes through reflection (grpc.reflection.v1alpha, which is what
grpcio speaks). Steps:

1. list services through reflection and require the four agora services and grpc.health.v1.Health;
2. AuthService/Register a fresh account, then UserService/GetProfile it over plain gRPC;
3. the same GetProfile over gRPC-web (binary) through the gateway, framed by hand with urllib;
4. grpc.health.v1.Health/Check must answer SERVING.

Addresses: AGORA_GRPC_ADDR (default 127.0.0.1:50051), AGORA_HTTP_ADDR (default 127.0.0.1:8080).
Exit codes: 0 all checks passed, 1 a check failed, 2 the server could not be reached.

Run it with any python3: it re-executes itself in the cached venv that scripts/pyenv.sh builds
(pinned grpcio, grpcio-reflection, protobuf).
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Always run on the pinned versions of scripts/requirements.txt, whatever python3 started us.
if not os.environ.get("AGORA_PYENV_ACTIVE"):
    venv = subprocess.run(
        ["bash", os.path.join(HERE, "pyenv.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip().splitlines()[-1]
    python = os.path.join(venv, "bin", "python")
    os.environ["AGORA_PYENV_ACTIVE"] = "1"
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])

import struct
import time
import urllib.error
import urllib.request

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

REQUIRED_SERVICES = [
    "agora.user.v1.UserService",
    "agora.auth.v1.AuthService",
    "agora.post.v1.PostService",
    "agora.notification.v1.NotificationService",
    "grpc.health.v1.Health",
]
TIMEOUT = 15.0
SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


class CheckFailed(Exception):
    """A check did not hold; the message says which and why."""


class Unreachable(Exception):
    """The server is not there at all."""


def loopback(addr: str) -> str:
    """A listen address such as 0.0.0.0:50051 is dialled on loopback."""
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def ok(msg: str) -> None:
    print(f"  ok  {msg}", flush=True)


class Reflected:
    """Message classes and unary callables built from the server's reflection descriptors."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def services(self) -> list:
        return list(self.db.get_services())

    def method(self, service: str, name: str):
        svc = self.pool.FindServiceByName(service)
        m = svc.methods_by_name.get(name)
        if m is None:
            raise CheckFailed(f"{service} has no method {name} in its reflected descriptor")
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        call = self.channel.unary_unary(
            f"/{service}/{name}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        return req_cls, resp_cls, call


def call_unary(call, request, what: str):
    try:
        return call(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
        raise CheckFailed(f"{what} failed: {e.code().name}: {e.details()}") from None


def grpc_web_unary(http_addr: str, path: str, request_bytes: bytes) -> bytes:
    """One unary call in gRPC-web binary framing; returns the response message bytes."""
    body = b"\x00" + struct.pack(">I", len(request_bytes)) + request_bytes
    url = f"http://{http_addr}{path}"
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "content-type": "application/grpc-web+proto",
            "accept": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "x-user-agent": "agora-grpc-client-check",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, headers, payload = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        raise CheckFailed(
            f"gRPC-web POST {url}: HTTP {e.code}; grpc-status={e.headers.get('grpc-status')} "
            f"grpc-message={e.headers.get('grpc-message')}; body={e.read()[:200]!r}"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        raise Unreachable(f"cannot connect to the gateway at http://{http_addr}: {e}") from None

    if status != 200:
        raise CheckFailed(f"gRPC-web POST {url}: HTTP {status}")
    ctype = headers.get("content-type", "")
    if not ctype.startswith("application/grpc-web"):
        raise CheckFailed(f"gRPC-web response content-type is {ctype!r}, want application/grpc-web+proto")

    messages, trailers, i = [], None, 0
    while i < len(payload):
        if len(payload) - i < 5:
            raise CheckFailed(f"gRPC-web response has a truncated frame header at byte {i}")
        flag = payload[i]
        (length,) = struct.unpack(">I", payload[i + 1 : i + 5])
        frame = payload[i + 5 : i + 5 + length]
        if len(frame) != length:
            raise CheckFailed(f"gRPC-web frame at byte {i} announces {length} bytes, has {len(frame)}")
        i += 5 + length
        if flag & 0x80:
            trailers = {}
            for line in frame.decode("latin-1").split("\r\n"):
                if ":" in line:
                    k, _, v = line.partition(":")
                    trailers[k.strip().lower()] = v.strip()
        elif flag & 0x01:
            raise CheckFailed("gRPC-web data frame is compressed although none was offered")
        else:
            messages.append(frame)

    if trailers is None:
        raise CheckFailed(
            "gRPC-web response has no trailer frame (flag 0x80); header grpc-status="
            f"{headers.get('grpc-status')} grpc-message={headers.get('grpc-message')}"
        )
    if trailers.get("grpc-status") != "0":
        raise CheckFailed(
            f"gRPC-web trailer grpc-status={trailers.get('grpc-status')} "
            f"grpc-message={trailers.get('grpc-message')}"
        )
    if len(messages) != 1:
        raise CheckFailed(f"gRPC-web unary response carries {len(messages)} data frames, want 1")
    return messages[0]


def health_check(channel: grpc.Channel, service: str = "") -> int:
    """grpc.health.v1.Health/Check, encoded by hand so it needs no descriptor at all."""
    service_bytes = service.encode()
    request = (b"\x0a" + bytes([len(service_bytes)]) + service_bytes) if service else b""
    call = channel.unary_unary("/grpc.health.v1.Health/Check")
    try:
        raw = call(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
        raise CheckFailed(f"Health/Check({service!r}) failed: {e.code().name}: {e.details()}") from None
    # HealthCheckResponse { ServingStatus status = 1; } -> 0x08 <varint>; empty means UNKNOWN (0).
    if raw == b"":
        return 0
    if raw[0] != 0x08 or len(raw) < 2:
        raise CheckFailed(f"Health/Check answered undecodable bytes {raw!r}")
    return raw[1]


def run(grpc_addr: str, http_addr: str) -> None:
    channel = grpc.insecure_channel(grpc_addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=10)
    except grpc.FutureTimeoutError:
        raise Unreachable(
            f"cannot connect to the gRPC server at {grpc_addr} within 10 s (is `agora serve` running?)"
        ) from None
    ok(f"connected to {grpc_addr}")

    r = Reflected(channel)
    try:
        listed = r.services()
    except grpc.RpcError as e:
        raise CheckFailed(
            f"server reflection (grpc.reflection.v1alpha) failed: {e.code().name}: {e.details()}"
        ) from None
    missing = [s for s in REQUIRED_SERVICES if s not in listed]
    if missing:
        raise CheckFailed(f"reflection does not list {missing}; it lists {sorted(listed)}")
    ok(f"reflection lists {len(listed)} services, all {len(REQUIRED_SERVICES)} required present")

    suffix = f"{int(time.time() * 1000) % 10**10}{os.getpid() % 1000}"
    username = f"py{suffix}"
    email = f"{username}@example.com"

    reg_req_cls, _, register = r.method("agora.auth.v1.AuthService", "Register")
    reg_req = json_format.ParseDict(
        {"user": {"username": username, "email": email, "password": "password123"}}, reg_req_cls()
    )
    reg = call_unary(register, reg_req, "AuthService/Register")
    if reg.user.username != username:
        raise CheckFailed(f"Register returned username {reg.user.username!r}, want {username!r}")
    if not reg.user.token:
        raise CheckFailed("Register returned no access token")
    ok(f"AuthService/Register created {username}")

    prof_req_cls, prof_resp_cls, get_profile = r.method("agora.user.v1.UserService", "GetProfile")
    prof_req = json_format.ParseDict({"username": username}, prof_req_cls())
    prof = call_unary(get_profile, prof_req, "UserService/GetProfile")
    if prof.profile.username != username:
        raise CheckFailed(f"GetProfile returned username {prof.profile.username!r}, want {username!r}")
    ok("UserService/GetProfile over gRPC returns the new profile")

    raw = grpc_web_unary(
        http_addr, "/agora.user.v1.UserService/GetProfile", prof_req.SerializeToString()
    )
    web = prof_resp_cls.FromString(raw)
    if web.profile.username != username:
        raise CheckFailed(f"gRPC-web GetProfile returned username {web.profile.username!r}, want {username!r}")
    ok(f"UserService/GetProfile over gRPC-web via http://{http_addr} returns the same profile")

    status = health_check(channel)
    if status != SERVING:
        raise CheckFailed(f"Health/Check('') status is {status}, want SERVING ({SERVING})")
    ok("grpc.health.v1.Health/Check is SERVING")
    channel.close()


def main() -> int:
    grpc_addr = loopback(os.environ.get("AGORA_GRPC_ADDR", "127.0.0.1:50051"))
    http_addr = loopback(os.environ.get("AGORA_HTTP_ADDR", "127.0.0.1:8080"))
    print(f"grpc client check: gRPC {grpc_addr}, gRPC-web http://{http_addr}", flush=True)
    try:
        run(grpc_addr, http_addr)
    except Unreachable as e:
        print(f"grpc client check: FAILED: {e}", file=sys.stderr)
        return 2
    except CheckFailed as e:
        print(f"grpc client check: FAILED: {e}", file=sys.stderr)
        return 1
    print("grpc client check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
