#!/usr/bin/env bash
# The one-command demo: installs what is missing, builds, then starts a local mosquitto, the
# aggregator and a simulated fleet (200 gateways, the last 30 days played in about 5 minutes),
# prints the dashboard URL and keeps everything running until Ctrl-C, stopping what it started.
#   Deploy/demo.sh [--gateways N] [--days D] [--speed X] [--seed S] [--http-port P]
set -euo pipefail
cd "$(dirname "$0")/.."

gateways=200 days=30 speed=8640 seed=7 http_port=8080
while [ $# -gt 0 ]; do
    case "$1" in
        --gateways) gateways="$2"; shift 2 ;;
        --days) days="$2"; shift 2 ;;
        --speed) speed="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --http-port) http_port="$2"; shift 2 ;;
        *) echo "demo: unknown option $1 (use --gateways, --days, --speed, --seed, --http-port)" >&2; exit 2 ;;
    esac
done

bash Deploy/bootstrap.sh
echo "demo: building (release; the first build takes several minutes)..."
swift build -c release --product spectra-aggregator >/dev/null
swift build -c release --product spectra-fleetsim >/dev/null
bin=".build/release"

work="var/demo"
rm -rf "$work" && mkdir -p "$work"
pids=()
stop_all() {
    trap - INT TERM EXIT
    echo
    echo "demo: stopping"
    for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all INT TERM EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
broker_port=1883
until port_free "$broker_port"; do broker_port=$((broker_port + 1)); done
until port_free "$http_port"; do http_port=$((http_port + 1)); done

{ cat Deploy/mosquitto/dev.conf; echo "listener $broker_port 127.0.0.1"; [ "$(id -u)" -eq 0 ] && echo "user root"; } > "$work/mosquitto.conf"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do port_free "$broker_port" || break; sleep 0.1; done

# A demo account: everything but /healthz needs one. The password is new at every run.
demo_password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$demo_password" | "$bin/spectra-aggregator" users add demo --role operator --password-stdin \
    --config Config/aggregator.yaml --set "database=$work/aggregator.sqlite" >/dev/null
"$bin/spectra-aggregator" run --config Config/aggregator.yaml \
    --set "mqtt.url=mqtt://127.0.0.1:$broker_port" --set "http.port=$http_port" \
    --set "database=$work/aggregator.sqlite" --set "stats.publishIntervalS=5" >"$work/aggregator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do port_free "$http_port" || break; sleep 0.1; done

echo
echo "  Dashboard:  http://127.0.0.1:$http_port/   sign in as demo, password $demo_password"
echo "  API:        http://127.0.0.1:$http_port/api/v1/fleet/summary   metrics: /metrics"
echo "              (a token for scripts: $bin/spectra-aggregator tokens create NAME --role viewer --set database=$work/aggregator.sqlite)"
echo "  Broker:     mqtt://127.0.0.1:$broker_port  (spectra-ctl watch --broker mqtt://127.0.0.1:$broker_port --fleet demo)"
echo "  Logs:       $work/"
echo "  Ctrl-C stops everything."
echo

"$bin/spectra-fleetsim" --gateways "$gateways" --speed "$speed" --days "$days" --seed "$seed" \
    --broker "mqtt://127.0.0.1:$broker_port" --data-dir "$work/fleet" --live &
pids+=($!)
wait "${pids[-1]}" || true
