#!/usr/bin/env bash
# Load benchmark for key verification and the gateway (a benchmark, not a
# test: it asserts nothing, it prints figures for docs/performance.md).
#
#   bash scripts/bench.sh                # both backends, 1k and 1M keys
#   BACKENDS=sqlite DURATION=5 bash scripts/bench.sh
#   BACKENDS=sqlite STORED=1000 DURATION=2 bash scripts/bench.sh   # a quick look
#
# For each backend (SQLite file, PostgreSQL on 127.0.0.1:5432) it starts the
# release binary, seeds 1,000 and then 1,000,000 stored keys, and runs wrk
# (installed with apt if missing) against:
#   a) GET /health                    unauthenticated
#   b) GET /api/v1/auth/check         valid key in the x-api-key header
#  b0) GET /health                    the same key (verification cost alone)
#   c) GET /api/v1/auth/check         valid key in the ?x-api-key= parameter
#   d) GET /api/v1/auth/check         a flood of random well-formed unknown keys
#   e) POST /api/v1/run/<flow>        through keygate to a local upstream,
#      against the same upstream called directly (when the gateway exists)
#   f) GET /api/v1/users/whoami       valid key in the x-api-key header
#   g) POST /api/v1/run/<flow>        a flow that injects the owner's stored
#      generic credential as a header, against nginx doing the same job in
#      front of the same upstream (a map of the allowed x-api-key value, the
#      upstream's key set as a header, a keep-alive upstream pool), at 64
#      and at 8 connections (nginx installed with apt if missing)
# and prints requests/s, p50 and p99, the ratios authenticated/unauthenticated
# and gateway/direct, and the server's resident memory.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${BACKENDS:-"sqlite postgres"}
DURATION=${DURATION:-10}
# Stored key counts to measure at (1000, then 1000000 by seeding 999,000 more).
STORED=${STORED:-"1000 1000000"}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${PORT:-7899}
UPSTREAM_PORT=${UPSTREAM_PORT:-7898}
NGINX_PORT=${NGINX_PORT:-7897}
# BIN=path/to/keygate measures another build (e.g. an older commit's) with
# the same script; the upstream example is still built from this checkout.
BIN=${BIN:-target/release/keygate}
PASSWORD=bench-password-123

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || { apt-get update -qq && apt-get install -y -qq nginx-light; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet --bin keygate --example bench_upstream
WORK=$(mktemp -d)
SERVER_PID=""
UPSTREAM_PID=""
NGINX_PID=""
UPSTREAM_SECRET=bench-upstream-secret-0123456789
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
    [[ -n "$UPSTREAM_PID" ]] && kill "$UPSTREAM_PID" 2>/dev/null || true
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null || true
    psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS keygate_bench WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

target/release/examples/bench_upstream "127.0.0.1:$UPSTREAM_PORT" &
UPSTREAM_PID=$!

cat >"$WORK/unknown.lua" <<'LUA'
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1000000)) end
request = function()
  local t = {}
  for i = 1, 43 do local r = math.random(1, 64); t[i] = chars:sub(r, r) end
  return wrk.format("GET", "/api/v1/auth/check", {["x-api-key"] = "sk-" .. table.concat(t)})
end
LUA
cat >"$WORK/run.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"inputs": {"input_value": "hello"}, "tweaks": {}}'
wrk.headers["Content-Type"] = "application/json"
LUA

# nginx as a user would configure it for the same job: only the one key
# passes, the upstream's secret is set as a header, the caller's key is not
# forwarded, connections to the upstream are kept alive.
start_nginx() { # start_nginx ALLOWED_KEY
    mkdir -p "$WORK/nginx/logs"
    cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    map \$http_x_api_key \$allowed { default 0; "$1" 1; }
    upstream bench_upstream { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /api/v1/run/ {
            if (\$allowed = 0) { return 401 '{"detail": "Invalid API key"}'; }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-api-key "";
            proxy_set_header x-upstream-key "$UPSTREAM_SECRET";
            proxy_pass http://bench_upstream/run;
        }
    }
}
NGINX
    "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
    NGINX_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && return 0
        sleep 0.05
    done
    echo "nginx did not start" >&2; return 1
}

wait_ready() {
    for _ in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && return 0
        sleep 0.05
    done
    echo "keygate did not start" >&2; return 1
}

# to_ms VALUE: wrk prints 812.00us, 1.20ms or 1.01s.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

# measure NAME URL [wrk args...]: prints one row and stores rps in RPS[NAME].
declare -A RPS P50 P99
measure() {
    local name=$1 url=$2; shift 2
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
    RPS[$name]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    P50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    P99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    local non2xx
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    printf "| %-34s | %9s | %8s | %8s | %s\n" "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "${non2xx:+non-2xx: $non2xx}"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$SERVER_PID/status"; }

seed_keys() { # seed_keys BACKEND USER_ID COUNT
    local backend=$1 user=$2 count=$3
    if [[ $backend == sqlite ]]; then
        sqlite3 "$WORK/data/keygate.db" >/dev/null <<SQL
PRAGMA busy_timeout = 10000;
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $count)
INSERT INTO api_keys (id, user_id, name, key_hash, display_prefix, created_at, total_uses, is_active)
SELECT lower(hex(randomblob(16))), '$user', 'seed', lower(hex(randomblob(32))), 'sk-seed0',
       strftime('%Y-%m-%d %H:%M:%S', 'now'), 0, 1 FROM seq;
SQL
    else
        psql -q "$DATABASE_URL" -c "INSERT INTO api_keys (id, user_id, name, key_hash, display_prefix, created_at, total_uses, is_active)
            SELECT md5(random()::text || g), '$user', 'seed', encode(sha256((random()::text || g)::bytea), 'hex'),
                   'sk-seed0', now()::timestamp, 0, true FROM generate_series(1, $count) g" >/dev/null
    fi
}

echo "# keygate benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load tool on the same machine"
echo "wrk: ${THREADS} threads, ${CONNECTIONS} connections, ${DURATION}s per row"

for backend in $BACKENDS; do
    rm -rf "$WORK/data"; mkdir -p "$WORK/data"
    if [[ $backend == postgres ]]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS keygate_bench WITH (FORCE)" >/dev/null
        psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE keygate_bench" >/dev/null
        DATABASE_URL="${PG_ADMIN_URL%/*}/keygate_bench"
    else
        DATABASE_URL="sqlite://$WORK/data/keygate.db"
    fi
    KEYGATE_DATABASE_URL=$DATABASE_URL KEYGATE_DATA_DIR="$WORK/data" KEYGATE_PORT=$PORT \
        KEYGATE_SUPERUSER=admin KEYGATE_SUPERUSER_PASSWORD=$PASSWORD KEYGATE_LOG=warn \
        KEYGATE_ALLOW_PRIVATE_UPSTREAMS=true "$BIN" serve >/dev/null 2>"$WORK/server.log" &
    SERVER_PID=$!
    wait_ready
    BASE="http://127.0.0.1:$PORT"
    TOKEN=$(curl -sf -X POST "$BASE/api/v1/login" -d "username=admin&password=$PASSWORD" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
    USER_ID=$(curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/users/whoami" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    KEY=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"name": "bench"}' "$BASE/api/v1/api_key/" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
    FLOW=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"bench\", \"endpoint_name\": \"bench\", \"upstream\": {\"url\": \"http://127.0.0.1:$UPSTREAM_PORT/run\"}}" \
        -w '%{http_code}' -o /dev/null "$BASE/api/v1/flows/" || true)
    CRED=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"secret_key\": \"$UPSTREAM_SECRET\"}" -w '%{http_code}' -o /dev/null \
        "$BASE/api/v1/providers/generic" || true)
    CRED_FLOW=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"bench-cred\", \"endpoint_name\": \"bench-cred\", \"upstream\": {\"url\": \"http://127.0.0.1:$UPSTREAM_PORT/run\", \"credential\": {\"provider\": \"generic\", \"as\": \"header\", \"header\": \"x-upstream-key\"}}}" \
        -w '%{http_code}' -o /dev/null "$BASE/api/v1/flows/" || true)
    # nginx lets exactly this backend's key through.
    [[ -n "$NGINX_PID" ]] && { kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; }
    start_nginx "$KEY"
    seed_keys "$backend" "$USER_ID" 999
    echo
    echo "## $backend"
    echo "idle resident memory: $(rss_mb) MB"
    for stored in $STORED; do
        if [[ $stored == 1000000 ]]; then seed_keys "$backend" "$USER_ID" 999000; fi
        echo
        echo "### $backend, $stored stored keys"
        echo "| scenario                           |     req/s |  p50 ms  |  p99 ms  |"
        echo "|------------------------------------|-----------|----------|----------|"
        wrk -t1 -c8 -d2s -H "x-api-key: $KEY" "$BASE/api/v1/auth/check" >/dev/null # warm-up
        measure "a) /health, no key" "$BASE/health"
        measure "b) auth/check, key in header" "$BASE/api/v1/auth/check" -H "x-api-key: $KEY"
        measure "b0) /health, key in header" "$BASE/health" -H "x-api-key: $KEY"
        measure "c) auth/check, key in query" "$BASE/api/v1/auth/check?x-api-key=$KEY"
        measure "d) auth/check, unknown keys" "$BASE/api/v1/auth/check" -s "$WORK/unknown.lua"
        if [[ $FLOW == 201 ]]; then
            measure "e) run through keygate" "$BASE/api/v1/run/bench" -s "$WORK/run.lua" -H "x-api-key: $KEY"
            measure "e) upstream called directly" "http://127.0.0.1:$UPSTREAM_PORT/run" -s "$WORK/run.lua"
            # The same at 8 connections, where latency is per-request cost
            # rather than queueing behind the 2 shared cores.
            CONNECTIONS=8 measure "e8) run through keygate, 8 conns" "$BASE/api/v1/run/bench" -s "$WORK/run.lua" -H "x-api-key: $KEY"
            CONNECTIONS=8 measure "e8) upstream directly, 8 conns" "http://127.0.0.1:$UPSTREAM_PORT/run" -s "$WORK/run.lua"
        fi
        measure "f) whoami, key in header" "$BASE/api/v1/users/whoami" -H "x-api-key: $KEY"
        if [[ $CRED == 200 && $CRED_FLOW == 201 ]]; then
            measure "g) run + stored credential" "$BASE/api/v1/run/bench-cred" -s "$WORK/run.lua" -H "x-api-key: $KEY"
            measure "g) nginx, same job" "http://127.0.0.1:$NGINX_PORT/api/v1/run/bench" -s "$WORK/run.lua" -H "x-api-key: $KEY"
            CONNECTIONS=8 measure "g8) run + credential, 8 conns" "$BASE/api/v1/run/bench-cred" -s "$WORK/run.lua" -H "x-api-key: $KEY"
            CONNECTIONS=8 measure "g8) nginx, 8 conns" "http://127.0.0.1:$NGINX_PORT/api/v1/run/bench" -s "$WORK/run.lua" -H "x-api-key: $KEY"
        fi
        echo
        echo "ratio header/unauthenticated: $(ratio "${RPS[b) auth/check, key in header]}" "${RPS[a) /health, no key]}") (throughput)," \
            "p99 $(ratio "${P99[b) auth/check, key in header]}" "${P99[a) /health, no key]}")x"
        echo "ratio verification only (/health with key / without): $(ratio "${RPS[b0) /health, key in header]}" "${RPS[a) /health, no key]}") (throughput)," \
            "p99 $(ratio "${P99[b0) /health, key in header]}" "${P99[a) /health, no key]}")x"
        echo "ratio query/unauthenticated:  $(ratio "${RPS[c) auth/check, key in query]}" "${RPS[a) /health, no key]}") (throughput)," \
            "p99 $(ratio "${P99[c) auth/check, key in query]}" "${P99[a) /health, no key]}")x"
        if [[ $FLOW == 201 ]]; then
            echo "ratio gateway/direct:         $(ratio "${RPS[e) run through keygate]}" "${RPS[e) upstream called directly]}") (throughput)," \
                "p50 added $(awk -v a="${P50[e) run through keygate]}" -v b="${P50[e) upstream called directly]}" 'BEGIN {printf "%.3f", a - b}') ms"
            echo "gateway at 8 connections:     p50 added $(awk -v a="${P50[e8) run through keygate, 8 conns]}" -v b="${P50[e8) upstream directly, 8 conns]}" 'BEGIN {printf "%.3f", a - b}') ms"
        else
            echo "(e) skipped: this build has no flows/gateway"
        fi
        echo "ratio whoami/unauthenticated: $(ratio "${RPS[f) whoami, key in header]}" "${RPS[a) /health, no key]}") (throughput)"
        if [[ $CRED == 200 && $CRED_FLOW == 201 ]]; then
            echo "ratio run with credential/nginx: $(ratio "${RPS[g) run + stored credential]}" "${RPS[g) nginx, same job]}") (throughput)," \
                "p50 $(awk -v a="${P50[g) run + stored credential]}" -v b="${P50[g) nginx, same job]}" 'BEGIN {printf "%.3f vs %.3f", a, b}') ms"
            echo "at 8 connections:             $(ratio "${RPS[g8) run + credential, 8 conns]}" "${RPS[g8) nginx, 8 conns]}") (throughput)," \
                "p50 $(awk -v a="${P50[g8) run + credential, 8 conns]}" -v b="${P50[g8) nginx, 8 conns]}" 'BEGIN {printf "%.3f vs %.3f", a, b}') ms"
        fi
        echo "resident memory after the runs: $(rss_mb) MB"
    done
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
done
