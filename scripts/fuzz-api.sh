#!/usr/bin/env bash
# Validates keygate's OpenAPI document and fuzzes the running binary
# against it, on SQLite and on PostgreSQL: schemathesis generates requests
# from the document (valid and invalid ones) and fails on any 5xx and on
# any answer the document does not allow (status code, content type,
# body schema).
#
# The binary (target/debug/keygate, built by `cargo test`; KEYGATE_BIN to
# use another) and the fuzzer run together in a network namespace of their
# own, where only loopback exists: whatever upstream URL or provider host
# the fuzzer stores, keygate cannot reach anything but 127.0.0.1 (and it
# refuses loopback upstreams too, KEYGATE_ALLOW_PRIVATE_UPSTREAMS being
# off). Where no namespace can be made (`unshare --net` needs root), the
# operations that call out are left out of the run instead, and the script
# says so.
#
# Settings: KEYGATE_FUZZ_EXAMPLES (examples per operation, default 25),
# KEYGATE_FUZZ_SEED (default 1), KEYGATE_SCHEMATHESIS_VENV (where the
# fuzzer is installed, default ${TMPDIR:-/tmp}/keygate-schemathesis),
# KEYGATE_TEST_POSTGRES_HOST (default 127.0.0.1), KEYGATE_FUZZ_PORT (default 7860).
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${KEYGATE_BIN:-target/debug/keygate}"
venv="${KEYGATE_SCHEMATHESIS_VENV:-${TMPDIR:-/tmp}/keygate-schemathesis}"
requirements=tests/fuzz/requirements.txt
examples="${KEYGATE_FUZZ_EXAMPLES:-25}"
seed="${KEYGATE_FUZZ_SEED:-1}"
port="${KEYGATE_FUZZ_PORT:-7860}"
base="http://127.0.0.1:$port"
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
# The operations that make keygate call out, left out without a namespace.
outbound_ops='^/api/v1/(run|process|webhook|files/upload)/|^/api/v1/providers/\{provider\}$'

# One backend, inside the namespace: start keygate on DATABASE_URL, make
# a key, fuzz, stop. Arguments: backend name, database URL, work directory,
# whether outbound operations are excluded.
fuzz_one() {
    local backend="$1" url="$2" work="$3" exclude_outbound="$4"
    if [ "$exclude_outbound" = no ]; then
        ip link set lo up
    fi
    export KEYGATE_HOST=127.0.0.1 KEYGATE_PORT="$port" KEYGATE_DATA_DIR="$work/data" \
        KEYGATE_DATABASE_URL="$url" KEYGATE_SUPERUSER=admin \
        KEYGATE_SUPERUSER_PASSWORD="fuzz-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')" \
        KEYGATE_ALLOWED_HOSTS=127.0.0.1,localhost KEYGATE_ALLOW_PRIVATE_UPSTREAMS=false \
        KEYGATE_KEY_FAILURES_PER_MINUTE=0 KEYGATE_UPSTREAM_TIMEOUT_MS=2000 \
        KEYGATE_PROVIDER_TIMEOUT_MS=2000 KEYGATE_WORKERS=2 KEYGATE_LOG=warn
    KEYGATE_FUZZ_KEY="$("$bin" api-key --name fuzz 2>>"$work/keygate.log")"
    export KEYGATE_FUZZ_KEY
    "$bin" serve >>"$work/keygate.log" 2>&1 &
    local server=$!
    # Readiness, polled until a deadline.
    local deadline=$((SECONDS + 60))
    until curl -sf -o /dev/null "$base/ready"; do
        if ((SECONDS > deadline)) || ! kill -0 "$server" 2>/dev/null; then
            echo "keygate ($backend) did not become ready; its log:" >&2
            cat "$work/keygate.log" >&2
            kill "$server" 2>/dev/null || true
            return 1
        fi
        sleep 0.1
    done
    # The document, as the binary serves it, must be valid OpenAPI 3.1.
    curl -sf -o "$work/openapi.json" "$base/api/v1/openapi.json"
    "$venv/bin/openapi-spec-validator" "$work/openapi.json"
    local filter=()
    if [ "$exclude_outbound" = yes ]; then
        filter=(--exclude-path-regex "$outbound_ops")
    fi
    local status=0
    "$venv/bin/schemathesis" --config-file tests/fuzz/schemathesis.toml run \
        "$base/api/v1/openapi.json" \
        --checks "$checks" \
        --phases examples,coverage,fuzzing \
        --max-examples "$examples" --seed "$seed" --workers 2 \
        --request-timeout 10 --no-color \
        "${filter[@]}" \
        --report junit --report-junit-path "$work/junit.xml" || status=$?
    kill "$server"
    wait "$server" || true
    if grep -q -E 'panicked|internal error' "$work/keygate.log"; then
        echo "keygate ($backend) logged an internal error:" >&2
        grep -E 'panicked|internal error' "$work/keygate.log" >&2
        status=1
    fi
    return "$status"
}

if [ "${1:-}" = --inside ]; then
    shift
    fuzz_one "$@"
    exit
fi

[ -x "$bin" ] || { echo "$bin is missing: run cargo test (or cargo build) first" >&2; exit 1; }

# The fuzzer, in a virtual environment outside the source tree, installed
# again only when a pinned version is missing.
pinned_present() {
    "$venv/bin/python" - "$requirements" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        assert m.version(name) == version, name
PY
}
if ! pinned_present; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/keygate-fuzz.XXXXXX")"
pg_db=""
cleanup() {
    if [ -n "$pg_db" ]; then
        dropdb -h "${KEYGATE_TEST_POSTGRES_HOST:-127.0.0.1}" -U postgres --if-exists "$pg_db" || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if unshare --net ip link set lo up 2>/dev/null; then
    isolate=(unshare --net)
    exclude_outbound=no
else
    isolate=()
    exclude_outbound=yes
    echo "fuzz-api: no network namespace (unshare --net needs root): the operations that" \
        "call out (runs, provider checks) are not fuzzed" >&2
fi

started=$SECONDS
failed=0
mkdir -p "$work/sqlite"
echo "== fuzzing on SQLite"
"${isolate[@]}" bash "$0" --inside sqlite "sqlite://$work/sqlite/keygate.db" "$work/sqlite" "$exclude_outbound" ||
    failed=1

# PostgreSQL through its Unix socket: the namespace has no route to the
# server's TCP port, but a socket file is reachable from any namespace.
pg_host="${KEYGATE_TEST_POSTGRES_HOST:-127.0.0.1}"
socket_dir="$(psql -h "$pg_host" -U postgres -Atc 'show unix_socket_directories' | cut -d, -f1)"
pg_db="keygate_fuzz_$$_$RANDOM"
createdb -h "$pg_host" -U postgres "$pg_db"
mkdir -p "$work/postgres"
echo "== fuzzing on PostgreSQL"
"${isolate[@]}" bash "$0" --inside postgres "postgres://postgres@/$pg_db?host=$socket_dir" "$work/postgres" \
    "$exclude_outbound" || failed=1

echo "fuzz-api: both backends in $((SECONDS - started)) s, $examples examples per operation at most"
exit "$failed"
