#!/usr/bin/env bash
# The whole test suite, as CI runs it: what it needs (Deploy/bootstrap.sh), then `swift test`
# with any arguments given here (`bash Deploy/test.sh --filter AgentTests`).
#
# At most one test case per core runs at a time (Swift Testing's default is two). The
# end-to-end tests each start brokers, agents and aggregators as processes, and the test
# process drives them from its own task threads; with two cases per core those threads fell
# tens of seconds behind (a control-socket request answered in 17-41 s instead of 2 ms), and
# three full runs in five on one day failed a time limit somewhere. Measured on 2 cores:
# 107-125 s with the default, 259 s with one per core and no delay.
# SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH set in the environment wins.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Deploy/bootstrap.sh
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH="${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-$(nproc)}"
exec swift test "$@"
