#!/usr/bin/env bash
# The webhook benchmark (issue 7): billing-service (release) on PostgreSQL, MariaDB and SQLite against
# its floor (the verifier's CPU cost, bare INSERTs by pgbench) and against the Node handler a
# team would otherwise write, all measured in one run on this machine. Writes BENCHMARKS.md.
#
#   bench/run.sh            full run (~6 minutes after the release build)
#   bench/run.sh --quick    smaller counts, shorter timings (~2 minutes after the build)
#
# BENCH_SERVICE_BIN=path measures that billing-service binary instead of this checkout's (say, a
# release build of the previous commit), with the same loads and the same generator: runs of
# the two, interleaved, give a change's before and after.
#
# Needs: cargo, psql + pgbench, sqlite3, node + npm, python3, curl; PostgreSQL reachable at
# BENCH_PG_ADMIN (default postgres://postgres@127.0.0.1:5432/postgres, trust auth); the mysql
# client and MariaDB or MySQL at BENCH_MYSQL (default root@127.0.0.1:3306, no password). Every load
# goes to 127.0.0.1 only, every loop is bounded, and every process started here is stopped by
# its pid on exit. Databases bench_billing_* are dropped and created anew.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH="$ROOT/bench"
OUT="$BENCH/results"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-bench}"
BIN="$CARGO_TARGET_DIR/release"
SERVICE_BIN="${BENCH_SERVICE_BIN:-$BIN/billing-service}"
PG_ADMIN="${BENCH_PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"
MYSQL_BASE="${BENCH_MYSQL:-mysql://root@127.0.0.1:3306}"
SECRET="whsec_bench_0123456789abcdef"
PORT=18080
NODE_PORT=18081
HTTP_FLOOR_PORT=18082

QUICK=0 COST=0
case "${1:-}" in
    --quick) QUICK=1 ;;
    --cost) COST=1 ;;
    "") ;;
    *) echo "usage: bench/run.sh [--quick | --cost]" >&2; exit 2 ;;
esac
# What the loads send: a charge, whose handler writes a row of its own (\`charges\`).
EVENT=charge.succeeded
CONCURRENCIES=(1 16 64 256)
ENGINES=(postgres mysql sqlite)
FLOOR_CONCURRENCIES=(1 16 64)
if ((QUICK)); then
    COUNT_C1=1000; COUNT=10000; NODE_COUNT_C1=500; NODE_COUNT=3000
    BACKLOG=20000; PGBENCH_SECS=3; CRITERION_ARGS=(--warm-up-time 1 --measurement-time 2)
else
    COUNT_C1=3000; COUNT=50000; NODE_COUNT_C1=1000; NODE_COUNT=10000
    BACKLOG=100000; PGBENCH_SECS=8; CRITERION_ARGS=(--warm-up-time 2 --measurement-time 5)
fi
# --cost: only what the CPU-per-event figures need (concurrency 64, PostgreSQL and SQLite, the
# Node handler, the HTTP floor), for trying a change in a few minutes; BENCHMARKS.md is left as
# it is and the figures are printed.
if ((COST)); then
    CONCURRENCIES=(64); ENGINES=(postgres sqlite)
fi

rm -rf "$OUT"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

log() { printf '\n== %s\n' "$*" >&2; }
# One JSON object per figure; python3 renders them at the end.
record() { python3 -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' "$@" >>"$RESULTS"; }
now_ns() { date +%s%N; }
# Read with bash's own `read`: sampled every 50 ms during the load, a process per sample would
# take CPU from what is measured.
rss_kib() {
    local key value _
    while read -r key value _; do
        [[ $key == VmRSS: ]] && { echo "$value"; return; }
    done <"/proc/$1/status" 2>/dev/null
    echo 0
}
psql_admin() { psql "$PG_ADMIN" -v ON_ERROR_STOP=1 -qAt "$@"; }
CLK_TCK=$(getconf CLK_TCK)
# CPU time (user + system, in clock ticks) of the given processes, with that of their children
# they have reaped: a PostgreSQL backend that exits moves its time to the postmaster's. A
# process gone meanwhile counts 0. Every thread of a process is in its /proc/PID/stat.
cpu_ticks() {
    local total=0 pid stat fields
    for pid in "$@"; do
        read -r stat <"/proc/$pid/stat" 2>/dev/null || continue
        # The fields after the command name, which may hold spaces: utime is the 12th.
        read -ra fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12] + fields[13] + fields[14]))
    done
    echo "$total"
}
# The database server's processes for an engine (none for SQLite: it runs in the service).
db_pids() {
    case $1 in
        postgres) pgrep -x postgres || true ;;
        mysql) pgrep -x 'mariadbd|mysqld' || true ;;
    esac
}

PIDS=()
AUTOVACUUM_WAS=
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ $AUTOVACUUM_WAS == off ]]; then
        psql "$PG_ADMIN" -qAt -c "ALTER SYSTEM RESET autovacuum" -c "SELECT pg_reload_conf()" >/dev/null || true
    fi
}
trap cleanup EXIT

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Waits (at most 20 s) for GET /status/ready to answer 200; prints the milliseconds it took
# from $2 (the start time in ns).
wait_ready() {
    local port=$1 started=$2
    for _ in $(seq 1 4000); do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/status/ready")" == 200 ]]; then
            echo $((($(now_ns) - started) / 1000000))
            return 0
        fi
        sleep 0.005
    done
    echo "not ready on port $port after 20 s" >&2
    return 1
}

# Without TLS: on loopback it only adds encryption to both sides' CPU, and node-postgres (the
# Node handler's driver) does not use it by default, so both are measured the same way.
fresh_pg_db() {
    psql_admin -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
    echo "$PG_BASE/$1?sslmode=disable"
}

SERVICE_PID=
start_service() { # url log
    local started
    started=$(now_ns)
    DATABASE_URL="$1" SERVER_PORT=$PORT STRIPE_API_SECRET_KEY=sk_test_bench \
        STRIPE_WEBHOOK_SECRET=$SECRET LOG_FORMAT=json RUST_LOG=warn \
        "$SERVICE_BIN" >>"$2" 2>&1 &
    SERVICE_PID=$!
    PIDS+=("$SERVICE_PID")
    READY_MS=$(wait_ready $PORT "$started")
}

# Drives one load; records events/s, latency, the target's peak RSS and the accepted count.
# With worker=yes (billing-service), also how many accepted events were still pending for the
# worker when the load ended and how long it then took to finish them; the next load starts
# only after that. Prints the accepted count.
#
# The CPU time of the target process and of the database server (the generator's excluded) is
# taken from the start of the load until every accepted event is handled: for billing-service
# stored and processed, for the others stored (answered).
drive() { # system engine port pid concurrency count worker
    local system=$1 engine=$2 port=$3 pid=$4 c=$5 n=$6 worker=$7 json="$OUT/load-$1-$2-c$5.json"
    local cpu_target cpu_db started_ns
    # shellcheck disable=SC2046 # one pid a word
    cpu_db=$(cpu_ticks $(db_pids "$engine"))
    cpu_target=$(cpu_ticks "$pid")
    started_ns=$(now_ns)
    STRIPE_WEBHOOK_SECRET="$SECRET" "$BIN/stripe-setup" trigger "$EVENT" --url "http://127.0.0.1:$port/webhook/stripe" \
        --count "$n" --concurrency "$c" --json >"$json" &
    local trigger=$!
    PIDS+=("$trigger")
    local peak=0 rss
    # Bounded: 6000 samples of 50 ms is 5 minutes, far beyond any run here.
    for _ in $(seq 1 6000); do
        kill -0 "$trigger" 2>/dev/null || break
        rss=$(rss_kib "$pid")
        ((rss > peak)) && peak=$rss
        sleep 0.05
    done
    wait "$trigger"
    local ended pending=0 catchup_ms=0
    ended=$(now_ns)
    if [[ $worker == yes ]]; then
        pending=$(pending_events)
        # Bounded: 6000 polls of 20 ms is 2 minutes.
        for _ in $(seq 1 6000); do
            [[ "$(any_pending)" == 0 ]] && break
            sleep 0.02
        done
        catchup_ms=$((($(now_ns) - ended) / 1000000))
    fi
    local handled_ns
    handled_ns=$(($(now_ns) - started_ns))
    # shellcheck disable=SC2046 # one pid a word
    cpu_db=$(($(cpu_ticks $(db_pids "$engine")) - cpu_db))
    cpu_target=$(($(cpu_ticks "$pid") - cpu_target))
    python3 - "$json" "$system" "$engine" "$c" "$peak" "$pending" "$catchup_ms" \
        "$cpu_target" "$cpu_db" "$CLK_TCK" "$handled_ns" >>"$RESULTS" <<'EOF'
import json, sys
path, system, engine, c, peak, pending, catchup_ms, cpu_target, cpu_db, tck, handled_ns = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"kind": "load", "system": system, "engine": engine, "c": int(c),
    "sent": r["sent"], "accepted": r["accepted"], "failed": r["failed"],
    "eps": r["events_per_sec"], "p50": r["latency_ms"]["p50"], "p99": r["latency_ms"]["p99"],
    "elapsed_s": r["elapsed_secs"], "rss_kib": int(peak), "first_failure": r["first_failure"],
    "pending_at_end": int(pending), "catchup_ms": int(catchup_ms),
    "cpu_target_s": int(cpu_target) / int(tck), "cpu_db_s": int(cpu_db) / int(tck),
    "handled_s": int(handled_ns) / 1e9}))
EOF
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accepted"])' "$json"
}

pg_count() { psql "$1" -qAt -c "$2"; }
sqlite_count() { sqlite3 "$1" "$2"; }
# mysql://user@host:port/db → the mysql client's options.
mysql_count() {
    local rest=${1#mysql://} user host port db
    user=${rest%%@*}; rest=${rest#*@}; db=${rest#*/}; rest=${rest%%/*}
    host=${rest%:*}; port=${rest##*:}
    mysql -u"$user" -h"$host" -P"$port" -N -B "$db" -e "$2"
}
fresh_mysql_db() {
    mysql_count "$MYSQL_BASE/mysql" "DROP DATABASE IF EXISTS $1; CREATE DATABASE $1"
    echo "$MYSQL_BASE/$1"
}

# Every database a team runs vacuums its tables as they change; a test server may not (this
# machine's does not), and the worker's queue would then be measured dragging every dead row it
# ever left behind. Autovacuum is on for the run (its workers' CPU counts as the database's) and
# put back as it was afterwards.
AUTOVACUUM_WAS=$(psql_admin -c "SHOW autovacuum")
if [[ $AUTOVACUUM_WAS == off ]]; then
    psql_admin -c "ALTER SYSTEM SET autovacuum = on" -c "SELECT pg_reload_conf()" >/dev/null
fi

# --- build -------------------------------------------------------------------------------
log "release build"
(cd "$ROOT" && cargo build --release -p billing-service -p stripe-setup)
(cd "$ROOT" && cargo build --release -p billing-service --example http_floor)

if ((!COST)); then
log "criterion: verify + parse of a 4 KiB event"
(cd "$ROOT" && cargo bench -p billing-service --bench verify -- "${CRITERION_ARGS[@]}") \
    >"$OUT/criterion.txt" 2>&1 || { cat "$OUT/criterion.txt" >&2; exit 1; }
for name in signature envelope verify_delivery; do
    ns=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["mean"]["point_estimate"])' \
        "$CARGO_TARGET_DIR/criterion/webhook_4k/$name/new/estimates.json")
    record kind=criterion name="$name" ns="$ns"
done
fi

# --- billing-service ---------------------------------------------------------------------
bench_service() { # engine url count_sql...
    local engine=$1 url=$2 log="$OUT/service-$1.log"
    case $engine in
        postgres) count() { pg_count "$url" "$1"; } ;;
        mysql) count() { mysql_count "$url" "$1"; } ;;
        *) count() { sqlite_count "${url#sqlite://}" "$1"; } ;;
    esac
    local pending_sql="SELECT COUNT(*) FROM stripe_events WHERE status = 'pending'"
    # Polled until none: whether any is left costs the database far less than how many.
    local any_sql="SELECT CASE WHEN EXISTS (SELECT 1 FROM stripe_events WHERE status = 'pending') THEN 1 ELSE 0 END"
    if [[ $engine == postgres ]]; then
        # Polled every 20 ms on one connection: a psql per poll would start a backend each time,
        # and its CPU would count as the service's database work.
        coproc PENDING_POLL { psql "$url" -qAtX; }
        PIDS+=("$PENDING_POLL_PID")
        poll() {
            local n
            echo "$1;" >&"${PENDING_POLL[1]}"
            read -r -t 10 n <&"${PENDING_POLL[0]}"
            echo "$n"
        }
    else
        poll() { count "$1"; }
    fi
    pending_events() { poll "$pending_sql"; }
    any_pending() { poll "$any_sql"; }

    log "billing-service on $engine: first start (migrations), then a restart"
    start_service "$url" "$log"
    record kind=ready system=billing-service engine="$engine" phase=first ms="$READY_MS"
    stop_pid "$SERVICE_PID"
    start_service "$url" "$log"
    record kind=ready system=billing-service engine="$engine" phase=restart ms="$READY_MS"
    sleep 1
    record kind=idle system=billing-service engine="$engine" rss_kib="$(rss_kib "$SERVICE_PID")"

    local accepted=0 n
    accepted=$((accepted + $(drive warmup "$engine" $PORT "$SERVICE_PID" 16 2000 yes)))
    for c in "${CONCURRENCIES[@]}"; do
        n=$COUNT; ((c == 1)) && n=$COUNT_C1
        log "billing-service on $engine: $n events at concurrency $c"
        accepted=$((accepted + $(drive billing-service "$engine" $PORT "$SERVICE_PID" "$c" "$n" yes)))
    done
    local rows
    rows=$(count "SELECT COUNT(*) FROM stripe_events")
    record kind=stored system=billing-service engine="$engine" accepted="$accepted" rows="$rows"
    log "$engine: $accepted acknowledged, $rows stored"

    # Let the worker finish what the load left, so the backlog below is all there is.
    for _ in $(seq 1 600); do
        [[ "$(any_pending)" == 0 ]] && break
        sleep 0.5
    done
    stop_pid "$SERVICE_PID"
    if [[ $engine == postgres ]]; then
        kill "$PENDING_POLL_PID" 2>/dev/null || true
    fi
    ((COST)) && return

    log "$engine: a backlog of $BACKLOG events stored while the service is down, then drained"
    # Real stored events with fresh ids, each about its own customer.
    local template="(SELECT payload, id, object_id FROM stripe_events WHERE type = '$EVENT' ORDER BY id LIMIT 1)"
    if [[ $engine == postgres ]]; then
        count "INSERT INTO stripe_events (id, type, created, livemode, object_id, payload, received_at_ms)
               SELECT 'evt_backlog' || g, '$EVENT', 1700000000 + g, false, 'obj_backlog' || g,
                      replace(replace(t.payload, t.id, 'evt_backlog' || g), t.object_id, 'obj_backlog' || g), 0
               FROM $template t, generate_series(1, $BACKLOG) g" >/dev/null
    elif [[ $engine == mysql ]]; then
        # Both servers stop a recursive CTE early unless told otherwise, each by its own variable.
        local depth=cte_max_recursion_depth
        [[ "$(count "SELECT VERSION()")" == *MariaDB* ]] && depth=max_recursive_iterations
        count "SET SESSION $depth = $BACKLOG + 1;
               INSERT INTO stripe_events (id, type, created, livemode, object_id, payload, received_at_ms)
               WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $BACKLOG)
               SELECT CONCAT('evt_backlog', g), '$EVENT', 1700000000 + g, 0, CONCAT('obj_backlog', g),
                      REPLACE(REPLACE(t.payload, t.id, CONCAT('evt_backlog', g)), t.object_id, CONCAT('obj_backlog', g)), 0
               FROM $template t, s" >/dev/null
    else
        count "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $BACKLOG)
               INSERT INTO stripe_events (id, type, created, livemode, object_id, payload, received_at_ms)
               SELECT 'evt_backlog' || g, '$EVENT', 1700000000 + g, 0, 'obj_backlog' || g,
                      replace(replace(t.payload, t.id, 'evt_backlog' || g), t.object_id, 'obj_backlog' || g), 0
               FROM $template t, s" >/dev/null
    fi
    local started done_ns pending
    started=$(now_ns)
    start_service "$url" "$log"
    # Bounded: 3000 polls of 100 ms is 5 minutes.
    for _ in $(seq 1 3000); do
        pending=$(count "$pending_sql")
        [[ $pending == 0 ]] && break
        sleep 0.1
    done
    done_ns=$(now_ns)
    local processed
    processed=$(count "SELECT COUNT(*) FROM stripe_events WHERE id LIKE 'evt_backlog%' AND status = 'processed'")
    record kind=drain system=billing-service engine="$engine" events="$BACKLOG" processed="$processed" \
        ms=$(((done_ns - started) / 1000000)) pending="$pending"
    stop_pid "$SERVICE_PID"
}

PG_URL=$(fresh_pg_db bench_billing_service)
for engine in "${ENGINES[@]}"; do
    case $engine in
        postgres) bench_service postgres "$PG_URL" ;;
        mysql)
            bench_service mysql "$(fresh_mysql_db bench_billing_service)"
            mysql_count "$MYSQL_BASE/mysql" "DROP DATABASE IF EXISTS bench_billing_service"
            ;;
        sqlite)
            SQLITE_DIR=$(mktemp -d)
            bench_service sqlite "sqlite://$SQLITE_DIR/billing.db"
            rm -rf "$SQLITE_DIR"
            ;;
    esac
done

# --- the HTTP floor: the same stack answering without doing anything --------------------
log "HTTP floor: the service's HTTP stack answering at once, under the same load"
started=$(now_ns)
"$BIN/examples/http_floor" $HTTP_FLOOR_PORT >"$OUT/http-floor.log" 2>&1 &
HTTP_FLOOR_PID=$!
PIDS+=("$HTTP_FLOOR_PID")
wait_ready $HTTP_FLOOR_PORT "$started" >/dev/null
drive warmup none $HTTP_FLOOR_PORT "$HTTP_FLOOR_PID" 16 2000 no >/dev/null
for c in "${CONCURRENCIES[@]}"; do
    n=$COUNT; ((c == 1)) && n=$COUNT_C1
    log "HTTP floor: $n events at concurrency $c"
    drive http-floor none $HTTP_FLOOR_PORT "$HTTP_FLOOR_PID" "$c" "$n" no >/dev/null
done
stop_pid "$HTTP_FLOOR_PID"

# --- the floor: bare INSERTs into a copy of stripe_events -------------------------------
if ((!COST)); then
log "floor: pgbench INSERT ... ON CONFLICT DO NOTHING, one per commit and 256 per commit"
FLOOR_URL=$(fresh_pg_db bench_billing_floor)
# The service's own schema: the same table, with the same indexes to maintain.
DATABASE_URL="$FLOOR_URL" "$SERVICE_BIN" migrate >/dev/null
# The payload the load sends, behind an immutable function: in the script's text pgbench would
# take the JSON's colons for its own variables, and a constant function is folded away.
PAYLOAD=$(pg_count "$PG_URL" "SELECT quote_literal(payload) FROM stripe_events WHERE id LIKE 'evt_trg%' LIMIT 1")
psql "$FLOOR_URL" -qAt -v ON_ERROR_STOP=1 \
    -c "CREATE FUNCTION bench_payload() RETURNS text IMMUTABLE LANGUAGE sql AS \$\$ SELECT $PAYLOAD::text \$\$"
COLUMNS_SQL="INSERT INTO stripe_events (id, type, created, livemode, object_id, payload, received_at_ms)"
cat >"$OUT/floor-single.sql" <<EOF
\set n random(1, 9000000000000000000)
$COLUMNS_SQL VALUES ('evt_floor' || :n, '$EVENT', 1700000000, false, 'cus_1', bench_payload(), 0) ON CONFLICT (id) DO NOTHING;
EOF
cat >"$OUT/floor-batch.sql" <<EOF
\set n random(1, 9000000000000000000)
$COLUMNS_SQL SELECT 'evt_floor' || :n || '_' || g, '$EVENT', 1700000000, false, 'cus_1', bench_payload(), 0 FROM generate_series(1, 256) g ON CONFLICT (id) DO NOTHING;
EOF
for variant in single batch; do
    for c in "${FLOOR_CONCURRENCIES[@]}"; do
        pgbench "$FLOOR_URL" -n -M prepared -c "$c" -j "$((c < 2 ? 1 : 2))" -T "$PGBENCH_SECS" \
            -f "$OUT/floor-$variant.sql" >"$OUT/pgbench-$variant-c$c.txt" 2>&1
        tps=$(awk '/^tps = / {print $3}' "$OUT/pgbench-$variant-c$c.txt")
        lat=$(awk '/^latency average = / {print $4}' "$OUT/pgbench-$variant-c$c.txt")
        rows=1; [[ $variant == batch ]] && rows=256
        record kind=floor variant="$variant" c="$c" tps="$tps" rows_per_tx="$rows" latency_ms="$lat"
    done
done
fi

# --- the Node handler -------------------------------------------------------------------
log "Node handler: npm install"
(cd "$BENCH/node-handler" && npm install --no-audit --no-fund --loglevel=error) >"$OUT/npm.txt" 2>&1
NODE_URL=$(fresh_pg_db bench_billing_node)
started=$(now_ns)
PORT=$NODE_PORT DATABASE_URL="$NODE_URL" STRIPE_WEBHOOK_SECRET=$SECRET \
    node "$BENCH/node-handler/server.js" >"$OUT/node.log" 2>&1 &
NODE_PID=$!
PIDS+=("$NODE_PID")
record kind=ready system=node engine=postgres phase=first ms="$(wait_ready $NODE_PORT "$started")"
sleep 1
record kind=idle system=node engine=postgres rss_kib="$(rss_kib "$NODE_PID")"
accepted=$(drive warmup postgres $NODE_PORT "$NODE_PID" 16 1000 no)
for c in "${CONCURRENCIES[@]}"; do
    n=$NODE_COUNT; ((c == 1)) && n=$NODE_COUNT_C1
    log "Node handler: $n events at concurrency $c"
    accepted=$((accepted + $(drive node postgres $NODE_PORT "$NODE_PID" "$c" "$n" no)))
done
record kind=stored system=node engine=postgres accepted="$accepted" \
    rows="$(pg_count "$NODE_URL" "SELECT COUNT(*) FROM node_stripe_events")"
stop_pid "$NODE_PID"

for db in bench_billing_service bench_billing_floor bench_billing_node; do
    psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
done

# --- report -----------------------------------------------------------------------------
log "report"
COMMAND="bench/run.sh"
((QUICK)) && COMMAND="bench/run.sh --quick"
if ((COST)); then
    python3 "$BENCH/report.py" --cost "$RESULTS"
else
    python3 "$BENCH/report.py" "$RESULTS" "$COMMAND" "$ROOT/BENCHMARKS.md"
fi
