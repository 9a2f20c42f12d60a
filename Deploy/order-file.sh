#!/usr/bin/env bash
# Remakes Deploy/spectra-agent.order, the order Deploy/build-static.sh lays out code in, from a
# profile of the installed build of the agent: started against a broker of its own, idle, a
# session, the broker gone for 15 s and back, `status`, then SIGTERM.
#   Deploy/order-file.sh
# Needs valgrind and python3. Run it after a toolchain or dependency update, or a change to what
# the agent runs at start and in a session, and commit the file. Symbols the file names that no
# longer exist are skipped by the linker; code missing from it still works, it only stays
# resident once touched.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null && command -v python3 >/dev/null \
    || { echo "order-file: needs valgrind and python3 (apt-get install valgrind python3)" >&2; exit 1; }
work=$(mktemp -d)
broker_pid="" agent_pid=""
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

bin=$(bash Deploy/build-static.sh spectra-agent -- -Xlinker --no-demangle -Xlinker "-Map=$work/agent.map")
# valgrind cannot read the toolchain's debug information; the symbol table is all it needs.
strip --strip-debug -o "$work/spectra-agent" "$bin/spectra-agent"

port=$(( 20000 + RANDOM % 20000 ))
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
start_broker() {
    "$mosquitto" -c "$work/mosquitto.conf" >/dev/null 2>&1 &
    broker_pid=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
stop_broker() { kill "$broker_pid"; wait "$broker_pid" 2>/dev/null || true; broker_pid=""; }
start_broker

options=(--config Config/agent.yaml --set "mqtt.url=mqtt://127.0.0.1:$port" --set "dataDir=$work/agent")
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" --demangle=no \
    --compress-strings=no --compress-pos=no "$work/spectra-agent" run "${options[@]}" >"$work/agent.log" 2>&1 &
agent_pid=$!
echo "order-file: profiling the agent for about two minutes (valgrind runs it 50 times slower)" >&2
sleep 40
"$work/spectra-agent" session start --level 1 "${options[@]}" >/dev/null
sleep 25
stop_broker
sleep 15
start_broker
sleep 25
"$work/spectra-agent" status "${options[@]}" >/dev/null
kill -TERM "$agent_pid"
wait "$agent_pid" || { echo "order-file: the agent failed under valgrind:" >&2; tail -20 "$work/agent.log" >&2; exit 1; }
agent_pid=""

python3 Deploy/order-file.py "$work/agent.map" "$work/spectra-agent" "$work/callgrind.out" > Deploy/spectra-agent.order
echo "order-file: wrote Deploy/spectra-agent.order ($(wc -l < Deploy/spectra-agent.order) symbols)" >&2
