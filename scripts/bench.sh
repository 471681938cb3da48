#!/usr/bin/env bash
# Load benchmark for key verification and the gateway (a benchmark, not a
# test: it asserts nothing, it prints figures for docs/performance.md, and
# marks each target of the "hot paths" issue met or missed).
#
#   bash scripts/bench.sh                # both backends, 1k and 1M keys, 2 runs
#   BACKENDS=sqlite DURATION=5 bash scripts/bench.sh
#   BACKENDS=sqlite STORED=1000 RUNS=1 DURATION=2 bash scripts/bench.sh   # a quick look
#
# For each backend (SQLite file, PostgreSQL on 127.0.0.1:5432) it starts the
# release binary, seeds 1,000 and then 1,000,000 stored keys, and runs wrk
# (installed with apt if missing) against:
#   a) GET /health                    unauthenticated
#   b) GET /api/v1/auth/check         valid key in the x-api-key header
#  b0) GET /health                    the same key (verification cost alone)
#   c) GET /api/v1/auth/check         valid key in the ?x-api-key= parameter
#   d) GET /api/v1/auth/check         a flood of random well-formed unknown keys
#  d2) GET /api/v1/users/whoami       the same flood of unknown keys
#   e) POST /api/v1/run/<flow>        through keygate to a local upstream,
#      against the same upstream called directly (when the gateway exists),
#      at 64 and (e8) at 8 connections
#   f) GET /api/v1/users/whoami       valid key in the x-api-key header
#  f2) GET /api/v1/users/whoami       a key with scopes and a rate limit set
#      (a limit far above the load, so every request is admitted and counted,
#      and the instance shares its count every KEYGATE_RATE_LIMIT_SYNC_MS):
#      limits and scopes are checked from the cached key, so f2/f should be ~1
#   h) GET /api/v1/api_key/           valid key in the x-api-key header (the
#      caller's own key list: the seeded keys belong to another user, so the
#      list stays one key long while the stored count grows)
#   g) POST /api/v1/run/<flow>        a flow that injects the owner's stored
#      generic credential as a header, against nginx doing the same job in
#      front of the same upstream (a map of the allowed x-api-key value, the
#      upstream's key set as a header, a keep-alive upstream pool), at 64
#      and (g8) at 8 connections (nginx installed with apt if missing); the
#      upstream called directly at 8 connections is e8's direct row
#
# Each row is measured RUNS times (default 2), interleaved: every run goes
# through the whole row list once, so a slow phase of this shared machine
# does not land on one row's repeats. Tables show the MEDIAN req/s, p50 and
# p99 across the runs (for 2 runs the median is the mean of the two), and
# each run's raw req/s in the "runs" column (each run's p99 after it).
#
# After each table it prints the ratios and the targets, each "met" or
# "missed" with its numbers: whoami >= 0.90 of /health (throughput) and
# whoami p99 <= 1.2 x /health p99 + 0.5 ms; unknown-key whoami (d2) >= 0.80
# of valid-key whoami (f); run with a stored credential >= 0.80 of nginx at
# 64 and at 8 connections, and its p50 added over the upstream called
# directly at 8 connections <= nginx's + 0.2 ms. After the 1M table: whoami
# and credential-run throughput at 1M as a ratio of 1k (flat). Memory: idle
# RSS right after start with 1k keys (< 30 MB); with 1M keys the server is
# restarted on the same database and the start-up time (launch until
# /health answers, < 1000 ms) and the idle RSS after the restart (< 100 MB)
# are reported before the 1M table runs against the restarted server.
#
# Everything listens on and is sent to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

BACKENDS=${BACKENDS:-"sqlite postgres"}
DURATION=${DURATION:-10}
# Times each row is measured (interleaved); the table shows the medians.
RUNS=${RUNS:-2}
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
# The per-address limit on refused keys is off by default here: the whole
# flood comes from 127.0.0.1, and with the limit on, rows d and d2 would
# measure the 429s of one throttled address instead of what verifying an
# unknown key costs (a flood spread over many addresses).
KEY_FAILURES_PER_MINUTE=${KEY_FAILURES_PER_MINUTE:-0}
HOST=127.0.0.1

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

target/release/examples/bench_upstream "$HOST:$UPSTREAM_PORT" &
UPSTREAM_PID=$!

# unknown_lua PATH: a random well-formed unknown sk- key on every request.
# unknown_lua PATH: each wrk thread makes 50,000 random well-formed unknown
# keys up front and cycles through them (far more than the negative cache
# holds, so every request is a miss), so the load tool does not spend the
# shared CPU building a key per request while the valid-key rows reuse one.
unknown_lua() {
    cat <<LUA
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local pool, n = {}, 0
init = function(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  for k = 1, 50000 do
    local t = {}
    for i = 1, 43 do local r = math.random(1, 64); t[i] = chars:sub(r, r) end
    pool[k] = wrk.format("GET", "$1", {["x-api-key"] = "sk-" .. table.concat(t)})
  end
end
request = function()
  n = n % #pool + 1
  return pool[n]
end
LUA
}
unknown_lua /api/v1/auth/check >"$WORK/unknown.lua"
unknown_lua /api/v1/users/whoami >"$WORK/unknown_whoami.lua"
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
    upstream bench_upstream { server $HOST:$UPSTREAM_PORT; keepalive 64; }
    server {
        listen $HOST:$NGINX_PORT;
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
        curl -s -o /dev/null "http://$HOST:$NGINX_PORT/" && return 0
        sleep 0.05
    done
    echo "nginx did not start" >&2; return 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# start_server: launches keygate on $DATABASE_URL and waits until /health
# answers (polled every 10 ms, up to 60 s); STARTUP_MS is the time from
# launching the process until the first answer.
start_server() {
    local t0
    t0=$(now_ms)
    KEYGATE_DATABASE_URL=$DATABASE_URL KEYGATE_DATA_DIR="$WORK/data" KEYGATE_HOST=$HOST KEYGATE_PORT=$PORT \
        KEYGATE_SUPERUSER=admin KEYGATE_SUPERUSER_PASSWORD=$PASSWORD KEYGATE_LOG=warn \
        KEYGATE_KEY_FAILURES_PER_MINUTE=$KEY_FAILURES_PER_MINUTE \
        KEYGATE_ALLOW_PRIVATE_UPSTREAMS=true "$BIN" serve --host "$HOST" >/dev/null 2>>"$WORK/server.log" &
    SERVER_PID=$!
    for _ in $(seq 1 6000); do
        if curl -sf --max-time 1 "http://$HOST:$PORT/health" >/dev/null; then
            STARTUP_MS=$(($(now_ms) - t0))
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.01
    done
    echo "keygate did not start:" >&2; tail -20 "$WORK/server.log" >&2; return 1
}

stop_server() {
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
}

# to_ms VALUE: wrk prints 812.00us, 1.20ms or 1.01s.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

# The rows of one table, in the order they run (the list is built per
# table from what this build offers: see rows_for_table).
ROWS=()
LIMITED_KEY=""
rows_for_table() {
    ROWS=("a) /health, no key" "b) auth/check, key in header" "b0) /health, key in header"
        "c) auth/check, key in query" "d) auth/check, unknown keys" "d2) whoami, unknown keys")
    if [[ $FLOW == 201 ]]; then
        ROWS+=("e) run through keygate" "e) upstream called directly"
            "e8) run through keygate, 8 conns" "e8) upstream directly, 8 conns")
    fi
    ROWS+=("f) whoami, key in header" "h) key list, key in header")
    [[ -n $LIMITED_KEY ]] && ROWS+=("f2) whoami, limited key")
    if [[ $CRED == 200 && $CRED_FLOW == 201 ]]; then
        ROWS+=("g) run + stored credential" "g) nginx, same job"
            "g8) run + credential, 8 conns" "g8) nginx, 8 conns")
        # g8's "p50 added over direct" needs the upstream called directly at
        # 8 connections; e8 measures it when the plain flow exists.
        [[ $FLOW == 201 ]] || ROWS+=("e8) upstream directly, 8 conns")
    fi
}

# wrk_row NAME: one wrk run of that row; prints wrk's output.
wrk_row() {
    local name=$1 conns=$CONNECTIONS url args=()
    local key=(-H "x-api-key: $KEY") lua=(-s "$WORK/run.lua")
    case $name in
        "a) /health, no key") url=$BASE/health ;;
        "b) auth/check, key in header") url=$BASE/api/v1/auth/check; args=("${key[@]}") ;;
        "b0) /health, key in header") url=$BASE/health; args=("${key[@]}") ;;
        "c) auth/check, key in query") url="$BASE/api/v1/auth/check?x-api-key=$KEY" ;;
        "d) auth/check, unknown keys") url=$BASE/api/v1/auth/check; args=(-s "$WORK/unknown.lua") ;;
        "d2) whoami, unknown keys") url=$BASE/api/v1/users/whoami; args=(-s "$WORK/unknown_whoami.lua") ;;
        "e) run through keygate") url=$BASE/api/v1/run/bench; args=("${lua[@]}" "${key[@]}") ;;
        "e) upstream called directly") url=http://$HOST:$UPSTREAM_PORT/run; args=("${lua[@]}") ;;
        # At 8 connections latency is per-request cost rather than queueing
        # behind the 2 shared cores.
        "e8) run through keygate, 8 conns") conns=8; url=$BASE/api/v1/run/bench; args=("${lua[@]}" "${key[@]}") ;;
        "e8) upstream directly, 8 conns") conns=8; url=http://$HOST:$UPSTREAM_PORT/run; args=("${lua[@]}") ;;
        "f) whoami, key in header") url=$BASE/api/v1/users/whoami; args=("${key[@]}") ;;
        "h) key list, key in header") url=$BASE/api/v1/api_key/; args=("${key[@]}") ;;
        "f2) whoami, limited key") url=$BASE/api/v1/users/whoami; args=(-H "x-api-key: $LIMITED_KEY") ;;
        "g) run + stored credential") url=$BASE/api/v1/run/bench-cred; args=("${lua[@]}" "${key[@]}") ;;
        "g) nginx, same job") url=http://$HOST:$NGINX_PORT/api/v1/run/bench; args=("${lua[@]}" "${key[@]}") ;;
        "g8) run + credential, 8 conns") conns=8; url=$BASE/api/v1/run/bench-cred; args=("${lua[@]}" "${key[@]}") ;;
        "g8) nginx, 8 conns") conns=8; url=http://$HOST:$NGINX_PORT/api/v1/run/bench; args=("${lua[@]}" "${key[@]}") ;;
        *) echo "unknown row: $name" >&2; return 1 ;;
    esac
    wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency "${args[@]}" "$url"
}

# measure_once NAME RUN: one run of a row, kept in RUN_RPS/RUN_P50/RUN_P99
# under "NAME#RUN"; non-2xx answers and socket errors are added up in NOTES.
declare -A RUN_RPS RUN_P50 RUN_P99 NON2XX SOCKERR RPS P50 P99
measure_once() {
    local name=$1 run=$2 out n
    out=$(wrk_row "$name")
    RUN_RPS[$name#$run]=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    RUN_P50[$name#$run]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    RUN_P99[$name#$run]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    n=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    [[ -n $n ]] && NON2XX[$name]=$((${NON2XX[$name]:-0} + n))
    n=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' <<<"$out")
    [[ -n $n && $n != 0 ]] && SOCKERR[$name]=$((${SOCKERR[$name]:-0} + n))
    return 0
}

# median VALUES...: the middle value, or the mean of the two middle ones.
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) exit
        if (NR % 2) printf "%s", v[(NR + 1) / 2]
        else printf "%s", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# summarise NAME: medians across the runs into RPS/P50/P99, and one row.
summarise() {
    local name=$1 run rps=() p50=() p99=() raw notes=""
    for run in $(seq 1 "$RUNS"); do
        rps+=("${RUN_RPS[$name#$run]}"); p50+=("${RUN_P50[$name#$run]}"); p99+=("${RUN_P99[$name#$run]}")
    done
    RPS[$name]=$(median "${rps[@]}" | awk '{printf "%.0f", $1}')
    P50[$name]=$(median "${p50[@]}" | awk '{printf "%.3f", $1}')
    P99[$name]=$(median "${p99[@]}" | awk '{printf "%.3f", $1}')
    raw=$(IFS=/; echo "${rps[*]}")
    # Each run's p99 too: a median of two hides which run had a stall.
    notes="p99 runs: $(IFS=/; echo "${p99[*]}")"
    [[ -n ${NON2XX[$name]:-} ]] && notes="$notes, non-2xx: ${NON2XX[$name]}"
    [[ -n ${SOCKERR[$name]:-} ]] && notes="${notes:+$notes, }socket errors: ${SOCKERR[$name]}"
    printf "| %-34s | %9s | %8s | %8s | %-17s | %s\n" "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" "$raw" "$notes"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
ratio3() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
# calc EXPR A [B]: EXPR over a and b, to 3 decimals.
calc() { awk -v a="$2" -v b="${3:-0}" "BEGIN { printf \"%.3f\", $1 }"; }
# verdict A OP B: "met" when A OP B holds (OP one of >= <= <), else "missed".
verdict() {
    awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN {
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/) { print "n/a"; exit }
        ok = op == ">=" ? a + 0 >= b + 0 : op == "<=" ? a + 0 <= b + 0 : op == "<" ? a + 0 < b + 0 : 0
        print ok ? "met" : "missed" }'
}

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

# warm_up: the caches and pools each row relies on, before a table.
warm_up() {
    wrk -t1 -c8 -d2s -H "x-api-key: $KEY" "$BASE/api/v1/auth/check" >/dev/null
    wrk -t1 -c8 -d1s -H "x-api-key: $KEY" "$BASE/api/v1/users/whoami" >/dev/null
    wrk -t1 -c8 -d1s -H "x-api-key: $KEY" "$BASE/api/v1/api_key/" >/dev/null
    if [[ $FLOW == 201 ]]; then
        wrk -t1 -c8 -d1s -s "$WORK/run.lua" -H "x-api-key: $KEY" "$BASE/api/v1/run/bench" >/dev/null
    fi
    if [[ $CRED == 200 && $CRED_FLOW == 201 ]]; then
        wrk -t1 -c8 -d1s -s "$WORK/run.lua" -H "x-api-key: $KEY" "$BASE/api/v1/run/bench-cred" >/dev/null
    fi
}

echo "# keygate benchmark $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo);" \
    "shared, noisy 2-core machine; load tool on the same machine; quote ratios and medians"
echo "wrk: ${THREADS} threads, ${CONNECTIONS} connections (8 on the *8 rows), ${DURATION}s per row;" \
    "RUNS=${RUNS} runs per row, interleaved; figures are medians across runs (for 2 runs the mean of the two)"
echo "STARTUP: milliseconds from launching keygate until /health answers (polled every 10 ms);" \
    "measured at each start, the target (< 1000 ms) after the restart on 1,000,000 stored keys"
echo "listening on and load sent to $HOST only"

for backend in $BACKENDS; do
    rm -rf "$WORK/data"; mkdir -p "$WORK/data"
    if [[ $backend == postgres ]]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS keygate_bench WITH (FORCE)" >/dev/null
        psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE keygate_bench" >/dev/null
        DATABASE_URL="${PG_ADMIN_URL%/*}/keygate_bench"
    else
        DATABASE_URL="sqlite://$WORK/data/keygate.db"
    fi
    start_server
    FIRST_STARTUP_MS=$STARTUP_MS
    BASE="http://$HOST:$PORT"
    TOKEN=$(curl -sf -X POST "$BASE/api/v1/login" -d "username=admin&password=$PASSWORD" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
    USER_ID=$(curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/users/whoami" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
    KEY=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"name": "bench"}' "$BASE/api/v1/api_key/" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
    # f2's key: scopes and a rate limit (empty on a build without them).
    LIMITED_KEY=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d '{"name": "bench-limited", "scopes": ["read", "run"], "rate_limit": {"requests": 1000000000, "per_seconds": 86400}}' \
        "$BASE/api/v1/api_key/" |
        python3 -c 'import json, sys; k = json.load(sys.stdin); print(k["api_key"] if k.get("rate_limit") else "")' 2>/dev/null || true)
    # The seeded keys belong to a second user, so the caller's key list (h)
    # stays its own one key while the stored count grows (key lists are not
    # paged); a build that cannot create users seeds onto the caller.
    SEED_USER=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"username\": \"seed-owner\", \"password\": \"$PASSWORD\", \"is_active\": true}" "$BASE/api/v1/users/" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' 2>/dev/null || echo "$USER_ID")
    FLOW=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"bench\", \"endpoint_name\": \"bench\", \"upstream\": {\"url\": \"http://$HOST:$UPSTREAM_PORT/run\"}}" \
        -w '%{http_code}' -o /dev/null "$BASE/api/v1/flows/" || true)
    CRED=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"secret_key\": \"$UPSTREAM_SECRET\"}" -w '%{http_code}' -o /dev/null \
        "$BASE/api/v1/providers/generic" || true)
    CRED_FLOW=$(curl -s -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"bench-cred\", \"endpoint_name\": \"bench-cred\", \"upstream\": {\"url\": \"http://$HOST:$UPSTREAM_PORT/run\", \"credential\": {\"provider\": \"generic\", \"as\": \"header\", \"header\": \"x-upstream-key\"}}}" \
        -w '%{http_code}' -o /dev/null "$BASE/api/v1/flows/" || true)
    # nginx lets exactly this backend's key through.
    [[ -n "$NGINX_PID" ]] && { kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; }
    start_nginx "$KEY"
    seed_keys "$backend" "$SEED_USER" 999
    echo
    echo "## $backend"
    echo "start-up, empty database (migrations included): $FIRST_STARTUP_MS ms"
    IDLE=$(rss_mb)
    echo "idle resident memory: $IDLE MB (1,000 stored keys; target < 30 MB: $(verdict "$IDLE" "<" 30))"
    F_1K=""; G_1K=""
    for stored in $STORED; do
        if [[ $stored == 1000000 ]]; then
            seed_keys "$backend" "$SEED_USER" 999000
            # A restart on the same database: what start-up and idle memory
            # cost with 1,000,000 keys stored.
            stop_server
            # The seeding wrote 1M rows as one transaction behind the
            # server's back; on SQLite its ~380 MB write-ahead log would be
            # recovered by the next start, which measures the seeding rather
            # than a database that holds 1M keys: fold it in first.
            if [[ $backend == sqlite ]]; then
                sqlite3 "$WORK/data/keygate.db" "PRAGMA wal_checkpoint(TRUNCATE);" >/dev/null
            fi
            start_server
            sleep 1
            IDLE=$(rss_mb)
            echo
            echo "restart with 1,000,000 stored keys: start-up $STARTUP_MS ms (target < 1000 ms: $(verdict "$STARTUP_MS" "<" 1000)),"
            echo "  idle resident memory after the restart $IDLE MB (target < 100 MB: $(verdict "$IDLE" "<" 100))"
        fi
        echo
        echo "### $backend, $stored stored keys"
        echo "| scenario                           |     req/s |  p50 ms  |  p99 ms  | runs req/s        |"
        echo "|------------------------------------|-----------|----------|----------|-------------------|"
        warm_up
        rows_for_table
        unset RUN_RPS RUN_P50 RUN_P99 NON2XX SOCKERR RPS P50 P99
        declare -A RUN_RPS RUN_P50 RUN_P99 NON2XX SOCKERR RPS P50 P99
        for run in $(seq 1 "$RUNS"); do
            echo "  ($backend, $stored keys: run $run of $RUNS, ${#ROWS[@]} rows)" >&2
            for row in "${ROWS[@]}"; do measure_once "$row" "$run"; done
        done
        for row in "${ROWS[@]}"; do summarise "$row"; done
        a_rps=${RPS[a) /health, no key]} a_p99=${P99[a) /health, no key]}
        f_rps=${RPS[f) whoami, key in header]} f_p99=${P99[f) whoami, key in header]}
        echo
        echo "ratio header/unauthenticated: $(ratio "${RPS[b) auth/check, key in header]}" "$a_rps") (throughput)," \
            "p99 $(ratio "${P99[b) auth/check, key in header]}" "$a_p99")x"
        echo "ratio verification only (/health with key / without): $(ratio "${RPS[b0) /health, key in header]}" "$a_rps") (throughput)," \
            "p99 $(ratio "${P99[b0) /health, key in header]}" "$a_p99")x"
        echo "ratio query/unauthenticated:  $(ratio "${RPS[c) auth/check, key in query]}" "$a_rps") (throughput)," \
            "p99 $(ratio "${P99[c) auth/check, key in query]}" "$a_p99")x"
        if [[ $FLOW == 201 ]]; then
            echo "ratio gateway/direct:         $(ratio "${RPS[e) run through keygate]}" "${RPS[e) upstream called directly]}") (throughput)," \
                "p50 added $(calc "a - b" "${P50[e) run through keygate]}" "${P50[e) upstream called directly]}") ms"
            echo "gateway at 8 connections:     p50 added $(calc "a - b" "${P50[e8) run through keygate, 8 conns]}" "${P50[e8) upstream directly, 8 conns]}") ms"
        else
            echo "(e) skipped: this build has no flows/gateway"
        fi
        echo "ratio whoami/unauthenticated: $(ratio "$f_rps" "$a_rps") (throughput), p99 $(ratio "$f_p99" "$a_p99")x"
        if [[ -n $LIMITED_KEY ]]; then
            echo "ratio limited-key whoami/whoami: $(ratio "${RPS[f2) whoami, limited key]}" "$f_rps") (throughput)," \
                "p99 $(ratio "${P99[f2) whoami, limited key]}" "$f_p99")x"
        fi
        echo "ratio key list/unauthenticated: $(ratio "${RPS[h) key list, key in header]}" "$a_rps") (throughput)," \
            "p99 $(ratio "${P99[h) key list, key in header]}" "$a_p99")x"
        HAVE_G="" g_rps=""
        if [[ $CRED == 200 && $CRED_FLOW == 201 ]]; then
            HAVE_G=1
            g_rps=${RPS[g) run + stored credential]} gn_rps=${RPS[g) nginx, same job]}
            g8_rps=${RPS[g8) run + credential, 8 conns]} g8n_rps=${RPS[g8) nginx, 8 conns]}
            g8_p50=${P50[g8) run + credential, 8 conns]} g8n_p50=${P50[g8) nginx, 8 conns]}
            direct8_p50=${P50[e8) upstream directly, 8 conns]}
            echo "ratio run with credential/nginx: $(ratio "$g_rps" "$gn_rps") (throughput)," \
                "p50 $(calc "a" "${P50[g) run + stored credential]}") vs $(calc "a" "${P50[g) nginx, same job]}") ms"
            echo "at 8 connections:             $(ratio "$g8_rps" "$g8n_rps") (throughput), p50 $g8_p50 vs $g8n_p50 ms"
        fi
        d2_rps=${RPS[d2) whoami, unknown keys]}
        p99_limit=$(calc "1.2 * a + 0.5" "$a_p99")
        echo
        echo "targets ($backend, $stored stored keys):"
        echo "  whoami with a key >= 0.90 x /health without: $(ratio3 "$f_rps" "$a_rps") ($f_rps vs $a_rps req/s):" \
            "$(verdict "$(ratio3 "$f_rps" "$a_rps")" ">=" 0.90)"
        echo "  whoami p99 <= 1.2 x unauthenticated p99 + 0.5 ms: $f_p99 ms vs limit $p99_limit ms (1.2 x $a_p99 + 0.5):" \
            "$(verdict "$f_p99" "<=" "$p99_limit")"
        echo "  unknown-key whoami (d2) >= 0.80 x valid-key whoami (f): $(ratio3 "$d2_rps" "$f_rps") ($d2_rps vs $f_rps req/s):" \
            "$(verdict "$(ratio3 "$d2_rps" "$f_rps")" ">=" 0.80)"
        if [[ -n $HAVE_G ]]; then
            added_k=$(calc "a - b" "$g8_p50" "$direct8_p50") added_n=$(calc "a - b" "$g8n_p50" "$direct8_p50")
            echo "  run with stored credential >= 0.80 x nginx, 64 conns: $(ratio3 "$g_rps" "$gn_rps") ($g_rps vs $gn_rps req/s):" \
                "$(verdict "$(ratio3 "$g_rps" "$gn_rps")" ">=" 0.80)"
            echo "  run with stored credential >= 0.80 x nginx, 8 conns: $(ratio3 "$g8_rps" "$g8n_rps") ($g8_rps vs $g8n_rps req/s):" \
                "$(verdict "$(ratio3 "$g8_rps" "$g8n_rps")" ">=" 0.80)"
            echo "  p50 added over direct at 8 conns, keygate <= nginx + 0.2 ms: keygate $added_k ms ($g8_p50 - $direct8_p50)," \
                "nginx $added_n ms ($g8n_p50 - $direct8_p50), limit $(calc "a + 0.2" "$added_n") ms:" \
                "$(verdict "$added_k" "<=" "$(calc "a + 0.2" "$added_n")")"
        else
            echo "  (run with stored credential: skipped, this build has no credential injection)"
        fi
        if [[ $stored == 1000 ]]; then
            F_1K=$f_rps; G_1K=${g_rps:-}
        elif [[ $stored == 1000000 ]]; then
            echo "  flat from 1,000 to 1,000,000 keys (1M / 1k throughput):" \
                "whoami $(ratio "$f_rps" "$F_1K") ($f_rps vs ${F_1K:-n/a} req/s)," \
                "run with credential $(ratio "${g_rps:-}" "$G_1K") (${g_rps:-n/a} vs ${G_1K:-n/a} req/s)"
        fi
        echo "resident memory after the runs: $(rss_mb) MB"
    done
    stop_server
done
