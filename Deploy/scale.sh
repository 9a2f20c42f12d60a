#!/usr/bin/env bash
# Fleet-scale measurements on this machine, for docs/performance.md:
#   Deploy/scale.sh [GATEWAYS] [SECONDS] [OUTAGE_SECONDS]      (defaults 5000, 60, 60)
# 1. GATEWAYS simulated gateways, each sending telemetry every second (the in-session rate),
#    into one mosquitto and one aggregator for SECONDS: the aggregator's ingest rate, its
#    backlog, and the end-to-end latency from the gateway's clock to the statistics commit
#    (p50, p99 from the aggregator's histogram).
# 2. A reconnect storm: the broker goes away for OUTAGE_SECONDS and comes back; how long until
#    every gateway's backlog is delivered, and the aggregator's completeness (100 % = nothing lost).
#    STORM_LIMIT (seconds, default 1800) bounds the wait; a storm not cleared by then is
#    reported with how far it got, and the script exits 1.
# Starts and stops its own mosquitto, aggregator and simulator on free loopback ports.
# LOAD=light puts the gateways' traffic on the broker from `spectra-bench fleet-load` instead:
# one light MQTT client per gateway (its own connection, Will, birth, epoch and gap-free seq,
# session telemetry with 10 channels; what is not acknowledged is kept in memory and sent again
# on the next connection, as an outbox would) and no agent behind it, so that the load
# generator takes under a third of the simulator's CPU and the figure is what one mosquitto and one
# aggregator keep up with. The default, LOAD=agents, runs the whole agent for every gateway.
# SHARE_GROUP=aggregators uses shared subscriptions (lossy across a mosquitto 2.0 restart; see docs/mqtt.md).
# DATABASE=postgres keeps the statistics in a throwaway PostgreSQL server (Deploy/postgres-server.sh);
# AGGREGATORS=N (with DATABASE=postgres) runs N instances in one share group on it. OUTAGE 0 skips
# the reconnect storm (which a share group on mosquitto 2.0 does not survive whole).
# SPECTRA_BIN=DIR runs the binaries in DIR instead of building this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
gateways="${1:-5000}" seconds="${2:-60}" outage="${3:-60}"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
bash Deploy/bootstrap.sh
load="${LOAD:-agents}"
case "$load" in
    agents) generator=simulator products="spectra-aggregator spectra-fleetsim" ;;
    light) generator="load generator" products="spectra-aggregator spectra-bench" ;;
    *) echo "LOAD must be agents or light, not $load" >&2; exit 2 ;;
esac
# SPECTRA_BIN=DIR measures the binaries in DIR (another build, beside this one) without building.
bin="${SPECTRA_BIN:-.build/release}"
if [ -z "${SPECTRA_BIN:-}" ]; then
    for product in $products; do swift build -c release --product "$product" >/dev/null; done
fi

work=$(mktemp -d)
pids=()
sim_pids=()
cleanup() { trap - EXIT INT TERM; for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; sleep 20; for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT INT TERM
free_port() { local p; while :; do p=$(( 20000 + RANDOM % 20000 )); ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && { echo $p; return; }; done; }
broker_port=$(free_port) http_port=$(free_port)
{
    echo "listener $broker_port 127.0.0.1"
    echo "allow_anonymous true"
    echo "persistence true"
    echo "persistence_location $work/"
    echo "max_queued_messages 0"
    echo "max_connections -1"
    [ "$(id -u)" -eq 0 ] && echo "user root"
} > "$work/mosquitto.conf"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
start_broker() { "$mosquitto" -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 & broker_pid=$!; pids+=($broker_pid); sleep 0.5; }
start_broker
aggregators="${AGGREGATORS:-1}"
database="$work/aggregator.sqlite"
share_group="${SHARE_GROUP-}"
database_ticks() { echo 0; }
if [ "${DATABASE:-sqlite}" = postgres ]; then
    source Deploy/postgres-server.sh
    start_postgres "$work/pg"
    pids+=($postgres_pid)
    psql -q -h 127.0.0.1 -p "$postgres_port" -U postgres -c "CREATE DATABASE spectra" >/dev/null
    database="postgres://postgres@127.0.0.1:$postgres_port/spectra?sslmode=disable"
    # The server and its backends (those that ended included).
    database_ticks() {
        local total pid
        total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$postgres_pid/stat")
        for pid in $(pgrep -P "$postgres_pid"); do total=$(( total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0) )); done
        echo "$total"
    }
    [ "$aggregators" -gt 1 ] && share_group="${SHARE_GROUP:-aggregators}"
elif [ "$aggregators" -gt 1 ]; then
    echo "AGGREGATORS=$aggregators needs DATABASE=postgres (one SQLite file has one instance)" >&2
    exit 2
fi
token=$("$bin/spectra-aggregator" tokens create scale --role operator --set "database=$database" 2>/dev/null)
aggregator_pids=() http_ports=()
for i in $(seq "$aggregators"); do
    port_i=$http_port
    [ "$i" -gt 1 ] && port_i=$(free_port)
    "$bin/spectra-aggregator" run --set "mqtt.url=mqtt://127.0.0.1:$broker_port" --set "http.port=$port_i" \
        --set "database=$database" --set "clientId=scale-aggregator-$i" --set "shareGroup=$share_group" \
        >"$work/aggregator-$i.log" 2>&1 &
    aggregator_pids+=($!)
    pids+=($!)
    http_ports+=($port_i)
done
sleep 2
# A metric of the first instance; metric_sum adds it up over every instance.
metric() { curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$http_port/metrics" | awk -v name="$1" '$1 == name { print $2 }' | head -1; }
metric_sum() {
    local port total=0 value
    for port in "${http_ports[@]}"; do
        value=$(curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" | awk -v name="$1" '$1 == name { print $2 }' | head -1)
        total=$(awk -v a="$total" -v b="${value:-0}" 'BEGIN { printf "%.0f", a + b }')
    done
    echo "$total"
}
summary() { curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$http_port/api/v1/fleet/summary"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
# Each simulated gateway holds 6 open files: past about 3,000 per process (a 20,000 limit),
# the fleet is split over several simulator processes with distinct gateways. A light
# gateway holds one.
files_per_gateway=6 most=3000
[ "$load" = light ] && files_per_gateway=1 most=50000
per_process=$(( ($(ulimit -n) - 256) / files_per_gateway ))
[ "$per_process" -gt "$most" ] && per_process=$most
processes=$(( (gateways + per_process - 1) / per_process ))
echo "starting $gateways gateways in $processes $generator process(es), telemetry every 1 s ..."
first=1
for i in $(seq "$processes"); do
    count=$(( (gateways - first + 1) / (processes - i + 1) ))
    if [ "$load" = light ]; then
        "$bin/spectra-bench" fleet-load --port "$broker_port" --gateways "$count" --first-gateway "$first" --interval 1 \
            >"$work/fleet-load-$i.log" 2>&1 &
    else
        "$bin/spectra-fleetsim" --gateways "$count" --first-gateway "$first" --days 0 --speed 1 --telemetry-interval 1 \
            --idle-telemetry-interval 1 --broker "mqtt://127.0.0.1:$broker_port" --data-dir "$work/fleet" --live \
            >"$work/fleetsim-$i.log" 2>&1 &
    fi
    pids+=($!)
    sim_pids+=($!)
    first=$(( first + count ))
done
# Wait until every gateway is online.
for _ in $(seq 600); do
    online=$(summary | json 'd["online"]' 2>/dev/null || echo 0)
    [ "$online" -ge "$gateways" ] && break
    sleep 1
done
echo "online: $online of $gateways"
# CPU time (user + system, clock ticks) of the given processes together.
ticks() { local total=0 pid; for pid in "$@"; do total=$(( total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat") )); done; echo "$total"; }
start_count=$(( $(metric_sum 'spectra_aggregator_ingested_total{kind="telemetry"}' | cut -d. -f1) + 0 ))
start_ticks="$(ticks "${sim_pids[@]}") $(ticks "${aggregator_pids[@]}") $(ticks "$broker_pid") $(database_ticks)"
start_time=$(date +%s.%N)
sleep "$seconds"
end_count=$(( $(metric_sum 'spectra_aggregator_ingested_total{kind="telemetry"}' | cut -d. -f1) + 0 ))
end_ticks="$(ticks "${sim_pids[@]}") $(ticks "${aggregator_pids[@]}") $(ticks "$broker_pid") $(database_ticks)"
end_time=$(date +%s.%N)
rate=$(awk -v a="$start_count" -v b="$end_count" -v s="$start_time" -v e="$end_time" 'BEGIN { printf "%.0f", (b - a) / (e - s) }')
for port in "${http_ports[@]}"; do
    curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" > "$work/metrics-$port.txt"
done
python3 - "$gateways" "$rate" "$work"/metrics-*.txt <<'PY'
import sys, re
# Every instance's latency histogram, added up.
counts = {}
for name in sys.argv[3:]:
    for m in re.finditer(r'spectra_aggregator_commit_latency_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', open(name).read()):
        bound = float(m.group(1)) if m.group(1) != "+Inf" else float("inf")
        counts[bound] = counts.get(bound, 0) + float(m.group(2))
text = "".join(open(name).read() for name in sys.argv[3:])
buckets = sorted(counts.items())
total = buckets[-1][1] if buckets else 0
def quantile(q):
    for bound, count in buckets:
        if total and count >= q * total: return bound
    return float("nan")
pending = re.search(r'spectra_aggregator_pending_messages ([0-9.e+]+)', text)
print(f"steady state: {sys.argv[1]} gateways x 1 msg/s -> aggregator ingest {sys.argv[2]} msg/s; "
      f"latency gateway->commit p50 <= {quantile(0.5)} s, p99 <= {quantile(0.99)} s; aggregator pending {pending.group(1) if pending else '?'}")
PY
read -r sim0 agg0 broker0 db0 <<<"$start_ticks"
read -r sim1 agg1 broker1 db1 <<<"$end_ticks"
awk -v g="$generator" -v n="$(( end_count - start_count ))" -v hz="$(getconf CLK_TCK)" -v s="$(( sim1 - sim0 ))" -v a="$(( agg1 - agg0 ))" \
    -v b="$(( broker1 - broker0 ))" -v d="$(( db1 - db0 ))" -v k="$aggregators" -v pg="${DATABASE:-sqlite}" -v t0="$start_time" -v t1="$end_time" 'BEGIN {
    if (n <= 0) exit
    printf "CPU per message ingested: %s %.3f ms, aggregator%s %.3f ms, mosquitto %.3f ms", g, s * 1000 / hz / n, (k > 1 ? "s (" k ")" : ""),
        a * 1000 / hz / n, b * 1000 / hz / n
    if (pg == "postgres") printf ", PostgreSQL %.3f ms", d * 1000 / hz / n
    printf " (cores busy: %.2f, %.2f, %.2f", s / hz / (t1 - t0), a / hz / (t1 - t0), b / hz / (t1 - t0)
    if (pg == "postgres") printf ", %.2f", d / hz / (t1 - t0)
    printf ")\n" }'
# Nothing lost in the steady state: every message the gateways sent, counted once.
sleep 5
read -r received expected < <(summary | json '"%d %d" % (d["completeness"]["received"], d["completeness"]["expected"])')
echo "completeness: $received of $expected expected messages received"

# Messages the gateways have made so far, from the generators' latest progress lines
# ("messages N"): a few seconds behind, so a lower bound.
made() {
    local total=0 log n
    for log in "$work"/fleetsim-*.log "$work"/fleet-load-*.log; do
        [ -f "$log" ] || continue
        n=$(grep -o 'messages [0-9]*' "$log" | tail -1 | awk '{ print $2 }')
        total=$(( total + ${n:-0} ))
    done
    echo "$total"
}
[ "$outage" -eq 0 ] && exit 0
echo "reconnect storm: the broker goes away for $outage s ..."
kill -TERM "$broker_pid"; wait "$broker_pid" 2>/dev/null || true
sleep "$outage"
start_broker
storm_start=$(date +%s.%N)
# Cleared only once the aggregator holds at least every message made before the broker came
# back: its own view (gateways online, no seq gaps, no backlog reported) looks the same just
# before the storm's backlog arrives as just after it is delivered.
sleep 6
must_receive=$(made)
# A machine that cannot keep up never empties every gateway's queue: give up after
# STORM_LIMIT seconds (default 1800) and say how far it got.
deadline=$(( $(date +%s) + ${STORM_LIMIT:-1800} ))
cleared=false
while [ "$(date +%s)" -lt "$deadline" ]; do
    read -r received expected backlog online < <(summary | json '"%d %d %d %d" % (d["completeness"]["received"], d["completeness"]["expected"], d["backlog"]["messages"], d["online"])' 2>/dev/null || echo "0 1 1 0")
    if [ "$online" -ge "$gateways" ] && [ "$received" -ge "$expected" ] && [ "$received" -ge "$must_receive" ] && [ "$backlog" -eq 0 ]; then
        cleared=true
        break
    fi
    sleep 1
done
storm_end=$(date +%s.%N)
took=$(awk -v s="$storm_start" -v e="$storm_end" 'BEGIN { print e - s }')
if $cleared; then
    printf 'reconnect storm: all %d gateways back and every backlog delivered in %.0f s; completeness %d/%d (at least %d made before the broker was back)\n' \
        "$online" "$took" "$received" "$expected" "$must_receive"
else
    printf 'reconnect storm: NOT cleared after %.0f s: %d of %d gateways online, %d messages still queued on gateways; completeness so far %d/%d\n' \
        "$took" "$online" "$gateways" "$backlog" "$received" "$expected"
    exit 1
fi
