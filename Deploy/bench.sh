#!/usr/bin/env bash
# Release-built measurements behind docs/performance.md, each beside a reference measured in
# the same run on the same machine. Usage: Deploy/bench.sh [mqtt|waveform|encode|outbox|ingest|ingest-postgres|agent|headband|all]
# Starts its own mosquitto on a free loopback port and stops it when done.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
bash Deploy/bootstrap.sh
# SPECTRA_BIN=DIR measures the binaries in DIR (another build, beside this one) without building.
if [ -n "${SPECTRA_BIN:-}" ]; then
    bench="$SPECTRA_BIN/spectra-bench"
else
    swift build -c release --product spectra-bench >/dev/null
    bench=".build/release/spectra-bench"
fi
# A number field of the one-line JSON a bench command reports: field NAME "$result".
field() { echo "$2" | sed "s/.*\"$1\":\([0-9.]*\).*/\1/"; }

work=$(mktemp -d)
broker_pid=""
postgres_pid=""
cleanup() {
    [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null
    if [ -n "$postgres_pid" ]; then kill -INT "$postgres_pid" 2>/dev/null; wait "$postgres_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(( 20000 + RANDOM % 20000 ))
{
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    # The ingest benchmark queues a backlog for offline persistent sessions.
    echo "max_queued_messages 0"
    # $SYS counters every second: the mosquitto_pub reference is checked against them.
    echo "sys_interval 1"
    [ "$(id -u)" -eq 0 ] && echo "user root"
} > "$work/mosquitto.conf"
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
start_broker() {
    "$mosquitto" -c "$work/mosquitto.conf" >/dev/null 2>&1 &
    broker_pid=$!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
start_broker

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"

# How many PUBLISH packets the broker has received, from its $SYS counter (updated every second).
broker_received() {
    mosquitto_sub -h 127.0.0.1 -p "$port" -t '$SYS/broker/publish/messages/received' -C 1 -W 5
}

# The reference publisher: `mosquitto_pub -l` at QoS 1, every line of FILE a message; prints
# its rate (msg/s), the fastest of RUNS.
#
# mosquitto_pub -l stops when the PUBACK for the message id of its last line arrives. Message
# ids are 16 bits and wrap after 65,535, so from 65,536 lines on it stops at the first message
# with that id and drops the rest without an error (100,000 lines: 34,484 reach the broker).
# So the lines go in chunks of 60,000, one mosquitto_pub each, timed together, and the
# broker's own count must show every message, or the run is refused.
reference_publish() {
    local file=$1 runs=$2 lines best=0 before after start end
    lines=$(wc -l < "$file")
    rm -f "$work"/chunk.*
    split -l 60000 "$file" "$work/chunk."
    for _ in $(seq "$runs"); do
        before=$(broker_received)
        start=$(date +%s.%N)
        for chunk in "$work"/chunk.*; do
            mosquitto_pub -h 127.0.0.1 -p "$port" -q 1 -t bench/reference -l < "$chunk"
        done
        end=$(date +%s.%N)
        after=$before
        for _ in $(seq 30); do
            sleep 0.5
            after=$(broker_received)
            [ "$((after - before))" -ge "$lines" ] && break
        done
        if [ "$((after - before))" -ne "$lines" ]; then
            echo "mosquitto_pub reference: the broker received $((after - before)) of $lines messages" >&2
            exit 1
        fi
        best=$(awk -v n="$lines" -v s="$start" -v e="$end" -v best="$best" 'BEGIN { r = n / (e - s); printf "%.0f", (r > best ? r : best) }')
    done
    rm -f "$work"/chunk.*
    echo "$best"
}

if [ "$what" = mqtt ] || [ "$what" = all ]; then
    n=100000
    yes "$(head -c 466 /dev/zero | tr '\0' 'x')" | head -n $n > "$work/messages" || true
    ref=$(reference_publish "$work/messages" 2)
    printf 'mosquitto_pub -l, QoS 1, %d x 466 B, every one counted by the broker, fastest of 2: %.0f msg/s\n' "$n" "$ref"
    ours=$("$bench" mqtt-publish --port "$port" --messages $n --bytes 466)
    rate=$(field perSecond "$ours")
    printf 'MQTTClient, QoS 1, %d x 466 B: %.0f msg/s (%.2fx mosquitto_pub)\n' "$n" "$rate" "$(awk -v a="$rate" -v b="$ref" 'BEGIN { print a / b }')"
fi

if [ "$what" = waveform ] || [ "$what" = all ]; then
    result=$("$bench" waveform-render)
    seconds=$(field seconds "$result")
    ratio=$(field realTimeRatio "$result")
    printf 'Plan + render 900 s, 10 channels, 10 kHz (90M samples): %.3f s (%.0fx real time)\n' "$seconds" "$ratio"
fi

if [ "$what" = encode ] || [ "$what" = all ]; then
    for channels in 10 0; do
        result=$("$bench" envelope-encode --channels $channels)
        reference=$(field jsonEncoderPerSecond "$result")
        writer=$(field writerPerSecond "$result")
        printf 'Telemetry envelope, %d channels, encoded: %.0f/s (JSONEncoder on the same envelopes: %.0f/s, %.1fx)\n' "$channels" \
            "$writer" "$reference" "$(awk -v a="$writer" -v b="$reference" 'BEGIN { print a / b }')"
    done
fi

if [ "$what" = outbox ] || [ "$what" = all ]; then
    for producers in 64 256; do
        rm -f "$work"/enqueue.sqlite*
        result=$("$bench" outbox-enqueue --path "$work/enqueue.sqlite" --count 200000 --bytes 300 --producers $producers)
        printf 'Outbox enqueue, 300 B, durability normal, %d producers: %.0f msg/s\n' "$producers" \
            "$(field perSecond "$result")"
    done
    n=500000
    yes "$(head -c 466 /dev/zero | tr '\0' 'x')" | head -n $n > "$work/backlog" || true
    # The reference varies from run to run on a small VM: the fastest of three.
    ref=$(reference_publish "$work/backlog" 3)
    printf 'mosquitto_pub -l, QoS 1, %d x 466 B, every one counted by the broker, fastest of 3: %.1f s (%.0f msg/s)\n' "$n" "$(awk -v n=$n -v r="$ref" 'BEGIN { print n / r }')" "$ref"
    rm -f "$work"/drain.sqlite*
    result=$("$bench" outbox-drain --path "$work/drain.sqlite" --port "$port" --count $n --bytes 466)
    seconds=$(field seconds "$result")
    rate=$(field perSecond "$result")
    printf 'Outbox drain of a %d-message backlog, QoS 1: %.1f s (%.0f msg/s, %.2fx mosquitto_pub'"'"'s time)\n' "$n" "$seconds" "$rate" \
        "$(awk -v a="$seconds" -v r="$ref" -v n=$n 'BEGIN { print a / (n / r) }')"
fi

if [ "$what" = ingest ] || [ "$what" = all ]; then
    n=200000
    filter='spectra/v1/bench/gw/+/+'
    # Reference: mosquitto_sub draining the same backlog from its persistent session; the
    # fastest of two (it varies by up to 1.5x from run to run on a small VM).
    mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 -c -x 3600 -i ingest-reference -q 1 -t "$filter" -E
    # CPU seconds a process has used so far (user and system): cpu PID.
    cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
    # CPU per message of the fastest run, in microseconds: the consumer's and the broker's.
    ref=0 ref_cpu="" ref_broker_cpu=""
    for _ in 1 2; do
        "$bench" ingest-publish --port "$port" --count $n >/dev/null
        broker0=$(cpu "$broker_pid")
        start=$(date +%s.%N)
        TIMEFORMAT='%U %S'
        times=$( { time mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 -c -x 3600 -i ingest-reference -q 1 -t "$filter" -C $n >/dev/null; } 2>&1 )
        end=$(date +%s.%N)
        broker1=$(cpu "$broker_pid")
        this=$(awk -v n=$n -v s="$start" -v e="$end" 'BEGIN { printf "%.0f", n / (e - s) }')
        if [ "$this" -gt "$ref" ]; then
            ref=$this
            ref_cpu=$(echo "$times" | awk -v n=$n '{ printf "%.1f", ($1 + $2) / n * 1e6 }')
            ref_broker_cpu=$(awk -v n=$n -v a="$broker0" -v b="$broker1" 'BEGIN { printf "%.1f", (b - a) / n * 1e6 }')
        fi
    done
    printf 'mosquitto_sub draining a %d-envelope backlog, QoS 1, fastest of 2: %.1f s (%.0f msg/s); CPU per message: mosquitto_sub %s us, broker %s us\n' \
        "$n" "$(awk -v n=$n -v r="$ref" 'BEGIN { print n / r }')" "$ref" "$ref_cpu" "$ref_broker_cpu"
    # Same conditions for the aggregator: the fastest of two as well, each from a fresh broker
    # (no persistence, so a restart starts empty) and a new database, not a broker still
    # holding the heap of the runs before.
    rate=0 agg_cpu="" agg_broker_cpu=""
    for _ in 1 2; do
        kill "$broker_pid"
        wait "$broker_pid" 2>/dev/null || true
        start_broker
        rm -f "$work"/ingest.sqlite*
        result=$("$bench" ingest --port "$port" --count $n --database "$work/ingest.sqlite" --broker-pid "$broker_pid")
        this=$(awk -v r="$(field perSecond "$result")" 'BEGIN { printf "%.0f", r }')
        if [ "$this" -gt "$rate" ]; then
            rate=$this
            agg_cpu=$(awk -v c="$(field cpuMicrosecondsPerMessage "$result")" 'BEGIN { printf "%.1f", c }')
            agg_broker_cpu=$(awk -v c="$(field brokerCPUMicrosecondsPerMessage "$result")" 'BEGIN { printf "%.1f", c }')
        fi
    done
    printf 'Aggregator ingest of the same backlog (parse, dedupe, statistics, commit), fastest of 2: %.1f s (%.0f msg/s, %.2fx mosquitto_sub); CPU per message: aggregator %s us, broker %s us\n' \
        "$(awk -v n=$n -v r="$rate" 'BEGIN { print n / r }')" "$rate" "$(awk -v a="$rate" -v b="$ref" 'BEGIN { print a / b }')" "$agg_cpu" "$agg_broker_cpu"
fi

if [ "$what" = ingest-postgres ] || [ "$what" = all ]; then
    # The same backlog into SQLite, into PostgreSQL by one instance, and by two instances in a
    # share group on that database; each the fastest of two, from a fresh broker and a fresh
    # database. PostgreSQL runs here with its default durability (fsync, synchronous commit),
    # like SQLite's WAL with synchronous=NORMAL it survives a process crash; its CPU includes
    # its backends.
    n=200000
    source Deploy/postgres-server.sh
    start_postgres "$work/pg"
    pg_port=$postgres_port
    # ingest_runs DATABASE INSTANCES: the fastest of two, in $line as "rate aggregatorCPU
    # brokerCPU databaseCPU". (Not in a subshell: it restarts the broker this shell waits for.)
    ingest_runs() {
        local best=0 this result
        line=""
        for _ in 1 2; do
            kill "$broker_pid"
            wait "$broker_pid" 2>/dev/null || true
            start_broker
            rm -f "$work"/ingest.sqlite*
            PGOPTIONS="-c client_min_messages=warning" psql -q -h 127.0.0.1 -p "$pg_port" -U postgres \
                -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null
            result=$("$bench" ingest --port "$port" --count $n --database "$1" --instances "$2" --broker-pid "$broker_pid" \
                $( [[ "$1" == postgres* ]] && echo "--database-pid $postgres_pid" ))
            this=$(awk -v r="$(field perSecond "$result")" 'BEGIN { printf "%.0f", r }')
            if [ "$this" -gt "$best" ]; then
                best=$this
                line="$this $(field cpuMicrosecondsPerMessage "$result") $(field brokerCPUMicrosecondsPerMessage "$result")"
                if [[ "$1" == postgres* ]]; then line="$line $(field databaseCPUMicrosecondsPerMessage "$result")"; else line="$line -"; fi
            fi
        done
    }
    url="postgres://postgres@127.0.0.1:$pg_port/bench?sslmode=disable"
    ingest_runs "$work/ingest.sqlite" 1
    read -r sqlite_rate sqlite_cpu sqlite_broker _ <<<"$line"
    ingest_runs "$url" 1
    read -r pg_rate pg_cpu pg_broker pg_db <<<"$line"
    ingest_runs "$url" 2
    read -r pg2_rate pg2_cpu pg2_broker pg2_db <<<"$line"
    printf 'Ingest of a %d-envelope backlog, fastest of 2 each; CPU per message in us (aggregators, broker, PostgreSQL server):\n' "$n"
    printf '  SQLite, one instance:                %6.0f msg/s (1.00x)  %5.1f  %5.1f  -\n' "$sqlite_rate" "$sqlite_cpu" "$sqlite_broker"
    printf '  PostgreSQL, one instance:            %6.0f msg/s (%.2fx)  %5.1f  %5.1f  %5.1f\n' "$pg_rate" \
        "$(awk -v a="$pg_rate" -v b="$sqlite_rate" 'BEGIN { print a / b }')" "$pg_cpu" "$pg_broker" "$pg_db"
    printf '  PostgreSQL, two instances, one group: %6.0f msg/s (%.2fx)  %5.1f  %5.1f  %5.1f\n' "$pg2_rate" \
        "$(awk -v a="$pg2_rate" -v b="$sqlite_rate" 'BEGIN { print a / b }')" "$pg2_cpu" "$pg2_broker" "$pg2_db"
fi

if [ "$what" = agent ] || [ "$what" = all ]; then
    # The release-built agent against the same broker: memory and CPU idle, then in a session
    # (1 s telemetry). VmRSS counts every page mapped, including clean code pages touched once
    # at start (the kernel reclaims them under pressure); anonymous memory is what the agent
    # allocated; the working set is what it touched in the 30 s measured (/proc/PID/clear_refs).
    # Two builds: as installed on a gateway (the Swift runtime linked in, `Deploy/package.sh`)
    # and as run from the checkout (the toolchain's shared runtime).
    bash Deploy/build-static.sh spectra-agent >/dev/null
    swift build -c release --product spectra-agent >/dev/null
    measure() {
        sleep 5
        echo 1 > "/proc/$agent_pid/clear_refs"
        local ticks0 ticks1
        ticks0=$(awk '{ print $14 + $15 }' "/proc/$agent_pid/stat")
        sleep 30
        ticks1=$(awk '{ print $14 + $15 }' "/proc/$agent_pid/stat")
        printf 'spectra-agent (%s) %s: VmRSS %.1f MiB, anonymous %.1f MiB, working set (30 s) %.1f MiB, CPU %.2f %% of one core\n' "$2" "$1" \
            "$(awk '/^Rss:/ { print $2 / 1024 }' "/proc/$agent_pid/smaps_rollup")" \
            "$(awk '/^Anonymous:/ { print $2 / 1024 }' "/proc/$agent_pid/smaps_rollup")" \
            "$(awk '/^Referenced:/ { print $2 / 1024 }' "/proc/$agent_pid/smaps_rollup")" \
            "$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" 'BEGIN { print t / hz / 30 * 100 }')"
    }
    for build in installed checkout; do
        agent=".build-static/release/spectra-agent"
        [ "$build" = checkout ] && agent=".build/release/spectra-agent"
        rm -rf "$work/agent"
        mkdir -p "$work/agent"
        options=(--config Config/agent.yaml --set "mqtt.url=mqtt://127.0.0.1:$port" --set "dataDir=$work/agent")
        "$agent" run "${options[@]}" >"$work/agent.log" 2>&1 &
        agent_pid=$!
        sleep 5
        measure idle "$build"
        "$agent" session start --level 1 "${options[@]}" >/dev/null
        measure "in a session" "$build"
        kill -TERM "$agent_pid"
        wait "$agent_pid" || true
    done
fi

if [ "$what" = headband ] || [ "$what" = all ]; then
    # The release-built agent in a real-time session with its headband over the link (the
    # emulator on a pseudo-terminal), beside the same agent with the in-process headband: CPU
    # of one core over 30 s, the link's frames and bytes a second, segment round trips.
    swift build -c release --product spectra-agent --product spectra-headband-emu >/dev/null 2>&1 \
        || { swift build -c release --product spectra-agent >/dev/null; swift build -c release --product spectra-headband-emu >/dev/null; }
    status_field() { ".build/release/spectra-agent" status --json "${options[@]}" | python3 -c "import json,sys; print(json.load(sys.stdin)['headband']['$1'])"; }
    for headband in simulated link; do
        rm -rf "$work/agent"
        mkdir -p "$work/agent"
        options=(--config Config/agent.yaml --set "mqtt.url=mqtt://127.0.0.1:$port" --set "dataDir=$work/agent")
        emulator_pid=""
        if [ "$headband" = link ]; then
            .build/release/spectra-headband-emu --link "$work/headband" >"$work/emulator.log" 2>&1 &
            emulator_pid=$!
            sleep 1
            options+=(--set "headband.port=$work/headband")
        fi
        .build/release/spectra-agent run "${options[@]}" >"$work/agent.log" 2>&1 &
        agent_pid=$!
        sleep 5
        .build/release/spectra-agent session start --level 1 "${options[@]}" >/dev/null
        sleep 5
        ticks0=$(awk '{ print $14 + $15 }' "/proc/$agent_pid/stat")
        if [ "$headband" = link ]; then frames0=$(status_field framesSent); bytes0=$(( $(status_field bytesSent) + $(status_field bytesReceived) )); fi
        sleep 30
        ticks1=$(awk '{ print $14 + $15 }' "/proc/$agent_pid/stat")
        cpu=$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz / 30 * 100 }')
        if [ "$headband" = link ]; then
            frames1=$(status_field framesSent); bytes1=$(( $(status_field bytesSent) + $(status_field bytesReceived) ))
            printf 'spectra-agent in a session, headband over the link: CPU %s %% of one core; %s requests/s (each answered), %s bytes/s both ways; segment round trip p50 %s ms, p99 %s ms\n' \
                "$cpu" "$(( (frames1 - frames0) / 30 ))" "$(( (bytes1 - bytes0) / 30 ))" "$(status_field segmentLatencyMsP50)" "$(status_field segmentLatencyMsP99)"
        else
            printf 'spectra-agent in a session, in-process headband (reference): CPU %s %% of one core\n' "$cpu"
        fi
        kill -TERM "$agent_pid"; wait "$agent_pid" || true
        [ -n "$emulator_pid" ] && { kill -TERM "$emulator_pid"; wait "$emulator_pid" || true; }
    done
fi
