# agora's routine tasks. `just --list` shows them. Nothing in CI depends on just: .ci/run is plain
# bash, and every recipe here is a few lines you can paste into a shell.

set shell := ["bash", "-euo", "pipefail", "-c"]

test_database_url := "postgres://postgres@127.0.0.1:5432/postgres"
test_amqp_url := "amqp://guest:guest@127.0.0.1:5672/%2f"

# List the recipes.
default:
    @just --list

# Every target in one process on SQLite and the in-process bus (http://127.0.0.1:8080).
run *ARGS:
    cargo run --release -- serve {{ARGS}}

# Every target as its own process against PostgreSQL and RabbitMQ (deploy/local/run-all.sh).
up *ARGS:
    deploy/local/run-all.sh {{ARGS}}

# The test suite, on SQLite and the in-process bus only.
test *ARGS:
    cargo test --workspace {{ARGS}}

# The test suite against this machine's PostgreSQL and RabbitMQ as well.
test-real *ARGS:
    AGORA_TEST_DATABASE_URL='{{test_database_url}}' \
    AGORA_TEST_AMQP_URL='{{test_amqp_url}}' \
    cargo test --workspace {{ARGS}}

# The whole Conduit Postman suite, then the Python gRPC/gRPC-web client, against a fresh `agora serve`.
conformance:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build
    source scripts/lib/server.sh
    agora_server_start target/debug/agora
    bash ../shared/conformance/realworld/run.sh "http://$AGORA_HTTP_ADDR/api"
    python3 scripts/grpc_client_check.py

# Fill the configured databases (AGORA_DATABASE_URL, else ./data SQLite) with 1000 users and N articles.
seed N="1000" *ARGS:
    cargo run --release -- seed --users 1000 --articles {{N}} {{ARGS}}

# Seed PostgreSQL, run every benchmark scenario against its reference points, write docs/benchmarks.md
# (AGORA_BENCH_QUICK=1 for the reduced form).
bench:
    scripts/bench.sh

# Event throughput (commit → notification stored) and commit → SSE latency on RabbitMQ and PostgreSQL (docs/bench.md).
bench-events *ARGS:
    python3 scripts/bench-events.py {{ARGS}}

# Format check, clippy with warnings as errors, buf lint of the protos.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd proto && npx --yes @bufbuild/buf@1.75.0 lint

# Format the code.
fmt:
    cargo fmt --all

# Render the kustomize base and overlays and validate them against the Kubernetes schemas.
k8s-validate:
    bash scripts/k8s-validate.sh

# Build the container image (needs a Docker engine; none runs on the dev machines).
image TAG="agora:dev":
    docker build -f deploy/Dockerfile -t {{TAG}} .

# Everything CI runs, the same way CI runs it.
ci:
    bash .ci/run
