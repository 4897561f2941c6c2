#!/usr/bin/env bash
# The entitlements benchmark (issue 17): `GET /billing/entitlements` of billing-service (release)
# on SQLite and PostgreSQL, beside the HTTP floor (the same stack answering the same JSON at once),
# all at the same concurrency in one run on this machine. Prints a Markdown table for
# BENCHMARKS.md.
#
#   bench/entitlements.sh             64 connections, 20 s per target
#   BENCH_SECS=5 bench/entitlements.sh
#
# Needs: cargo, wrk, psql, sqlite3, curl; PostgreSQL at BENCH_PG_ADMIN (default
# postgres://postgres@127.0.0.1:5432/postgres, trust auth). The load goes to 127.0.0.1 only;
# every process started here is stopped on exit; the database bench_billing_entitlements is
# dropped and created anew.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-bench}"
BIN="$CARGO_TARGET_DIR/release"
PG_ADMIN="${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"
SECS="${BENCH_SECS:-20}"
CONNECTIONS=64
# Users with a subscription and three features each; the load asks for users at random, so
# the index lookups are spread over the whole table, not one cached row.
USERS=10000
PORT=18090
FLOOR_PORT=18091
OUT=$(mktemp -d)

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$OUT"
}
trap cleanup EXIT

wait_ready() {
    for _ in $(seq 1 2000); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/status/ready")" == 200 ]] && return 0
        sleep 0.01
    done
    echo "nothing ready on port $1" >&2
    return 1
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}

# The rows `GET /billing/entitlements` reads, written as the webhook handlers would leave them,
# then the planner's statistics, as autovacuum keeps them on a live database (on fresh tables
# PostgreSQL's planner guesses them empty and scans subscriptions whole).
SEED_SQL="
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)
INSERT INTO customers (stripe_customer_id, user_id, email, event_created, created_at_ms, updated_at_ms)
SELECT 'cus_bench' || i, 'user-' || i, 'user-' || i || '@example.com', 1, 0, 0 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)
INSERT INTO subscriptions (id, customer_id, user_id, status, price_id, event_created, created_at_ms, updated_at_ms)
SELECT 'sub_bench' || i, 'cus_bench' || i, 'user-' || i, 'active', 'price_bench', 1, 0, 0 FROM n;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)
INSERT INTO entitlements (customer_id, feature)
SELECT 'cus_bench' || i, f.feature FROM n,
  (SELECT 'billing_basic' AS feature UNION ALL SELECT 'exports' UNION ALL SELECT 'priority_support') f;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $USERS)
INSERT INTO entitlement_summaries (customer_id, event_created, updated_at_ms)
SELECT 'cus_bench' || i, 1, 0 FROM n;
ANALYZE;
"

cat >"$OUT/users.lua" <<LUA
-- A random user per request, as the auth proxy would name them.
math.randomseed(os.time())
request = function()
  wrk.headers["x-user-id"] = "user-" .. math.random(1, $USERS)
  wrk.headers["x-user-email"] = "bench@example.com"
  return wrk.format("GET", "/billing/entitlements")
end
LUA

# Runs wrk against the port; prints "requests/s p50_ms p99_ms non2xx".
load() {
    wrk -t2 -c"$CONNECTIONS" -d"${SECS}s" --latency -s "$OUT/users.lua" "http://127.0.0.1:$1" >"$OUT/wrk.txt"
    python3 - "$OUT/wrk.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {bad.group(1) if bad else 0} {'errors' if errors else 'ok'}")
PY
}

echo "== release build" >&2
(cd "$ROOT" && cargo build --release -p billing-service --bin billing-service --example http_floor) >&2

declare -A RESULT
run_service() { # engine url
    DATABASE_URL="$2" "$BIN/billing-service" migrate >/dev/null
    echo "== $1: seeding $USERS users" >&2
    case $1 in
        sqlite) sqlite3 "${2#sqlite://}" "$SEED_SQL" ;;
        postgres) psql "$2" -qAt -v ON_ERROR_STOP=1 -c "$SEED_SQL" >/dev/null ;;
    esac
    DATABASE_URL="$2" SERVER_HOST=127.0.0.1 SERVER_PORT=$PORT STRIPE_API_SECRET_KEY=sk_test_bench \
        STRIPE_WEBHOOK_SECRET=whsec_bench RUST_LOG=warn LOG_FORMAT=json \
        "$BIN/billing-service" >"$OUT/service-$1.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_ready $PORT
    local one
    one=$(curl -s -H 'x-user-id: user-7' -H 'x-user-email: u@example.com' "http://127.0.0.1:$PORT/billing/entitlements")
    [[ $one == '{"features":["billing_basic","exports","priority_support"]}' ]] || {
        echo "unexpected answer on $1: $one" >&2
        exit 1
    }
    echo "== $1: $CONNECTIONS connections, ${SECS} s" >&2
    load $PORT >/dev/null # warm-up: connections, the pool, the page cache
    RESULT[$1]=$(load $PORT)
    stop_pid "$pid"
}

"$BIN/examples/http_floor" $FLOOR_PORT >"$OUT/floor.log" 2>&1 &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
wait_ready $FLOOR_PORT
echo "== HTTP floor: $CONNECTIONS connections, ${SECS} s" >&2
load $FLOOR_PORT >/dev/null
RESULT[floor]=$(load $FLOOR_PORT)
stop_pid "$FLOOR_PID"

run_service sqlite "sqlite://$OUT/billing.db"
psql "$PG_ADMIN" -qAt -c "DROP DATABASE IF EXISTS bench_billing_entitlements WITH (FORCE)" \
    -c "CREATE DATABASE bench_billing_entitlements"
run_service postgres "$PG_BASE/bench_billing_entitlements?sslmode=disable"
psql "$PG_ADMIN" -qAt -c "DROP DATABASE IF EXISTS bench_billing_entitlements WITH (FORCE)"

read -r floor_rps floor_p50 floor_p99 _ _ <<<"${RESULT[floor]}"
echo
echo "| target | requests/s | p50 ms | p99 ms | non-2xx | requests/s ÷ floor | p50 ÷ floor | p99 ÷ floor |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for target in floor sqlite postgres; do
    read -r rps p50 p99 bad _ <<<"${RESULT[$target]}"
    python3 -c "
import sys
t, rps, p50, p99, bad, frps, fp50, fp99 = sys.argv[1:]
name = {'floor': 'HTTP floor (same stack, fixed answer)', 'sqlite': 'billing-service, SQLite', 'postgres': 'billing-service, PostgreSQL'}[t]
r = lambda a, b: f'{float(a) / float(b):.2f}'
print(f'| {name} | {float(rps):,.0f} | {p50} | {p99} | {bad} | {r(rps, frps)} | {r(p50, fp50)} | {r(p99, fp99)} |')
" "$target" "$rps" "$p50" "$p99" "$bad" "$floor_rps" "$floor_p50" "$floor_p99"
done
