#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time:  Deploy/fuzz.sh [SECONDS_PER_TARGET] (default 60)
# Targets (Fuzz/Sources): envelope decoding, signed documents, topic parsing, calibration
# profiles (YAML), control-socket requests, the aggregator's store and statistics under
# random accepted envelopes (invariants checked), and the headband link's frames from both ends. Seeds come from Fuzz/Corpus (copied, so the
# repository's corpus is not changed); a crash leaves its input as Fuzz/crash-* and fails.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
bash Deploy/bootstrap.sh
swift build --package-path Fuzz -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library >/dev/null
bin="Fuzz/.build/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for pair in Envelope:envelope SignedDocument:document Topic:topic Profile:profile ControlRequest:control StatsStore:store HeadbandFrame:headband; do
    target="Fuzz${pair%%:*}" corpus="${pair##*:}"
    mkdir -p "$work/$corpus" && cp -r "Fuzz/Corpus/$corpus/." "$work/$corpus/"
    if "$bin/$target" -print_final_stats=1 -max_total_time="$seconds" -max_len=65536 -artifact_prefix="Fuzz/crash-$target-" "$work/$corpus" \
        >"$work/$target.log" 2>&1; then
        echo "$target: $(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$work/$target.log" | awk '{print $2}') runs in ${seconds} s, no crash"
    else
        status=1
        echo "$target: FAILED; input saved as Fuzz/crash-$target-*" >&2
        tail -30 "$work/$target.log" >&2
    fi
done
exit $status
