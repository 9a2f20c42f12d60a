#!/usr/bin/env bash
# Builds release binaries as a gateway and the fleet's server install them, in .build-static:
#   Deploy/build-static.sh PRODUCT... [-- EXTRA SWIFT BUILD OPTIONS]
# Prints the folder that holds the binaries. Used by Deploy/package.sh and Deploy/bench.sh.
#
# What the build does beyond `swift build -c release`, and why (docs/decisions/gateway-build.md):
# - the Swift runtime and Foundation linked in (a gateway has no Swift toolchain);
# - every function in a section of its own and the code the agent runs laid out first, in the
#   order of Deploy/spectra-agent.order (Deploy/order-file.sh makes it). The kernel maps code in
#   64 KiB windows around each first touch, so run-time code scattered among 23 MB of code a
#   process never runs keeps most of it resident; packed, a third as much stays;
# - relative relocations packed (-z pack-relative-relocs: 30 KB instead of 2.4 MB that the
#   dynamic loader reads at every start; needs glibc 2.36, Debian 12's);
# - no exported symbol table (the toolchain exports every symbol of the program, 1.7 MB that the
#   dynamic loader searches at start; nothing loads a plugin into these programs; the
#   symbol table, which backtracers read from the file, stays).
# - the C++ library linked in too (the Swift runtime and ICU use it): of the 1.3 MB its shared
#   library keeps resident, mostly symbol tables the dynamic loader reads, the program keeps the
#   few functions it calls. The toolchain names it as -lstdc++; a folder searched first that
#   holds only the static archive makes the linker take that.
# The linker is LLD (from the toolchain): the system's linker cannot order by symbol.
set -euo pipefail
cd "$(dirname "$0")/.."
cxx_archive=$(clang -print-file-name=libstdc++.a)
[ -f "$cxx_archive" ] || { echo "build-static: libstdc++.a not found; apt-get install libstdc++-12-dev" >&2; exit 1; }
mkdir -p .build-static/static-cxx
ln -sf "$cxx_archive" .build-static/static-cxx/libstdc++.a
products=()
while (($#)) && [ "$1" != "--" ]; do products+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
compile=(
    -c release --static-swift-stdlib --scratch-path .build-static
    -Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections
    -Xswiftc -use-ld=lld
)
link=(
    -Xlinker --symbol-ordering-file="$PWD/Deploy/spectra-agent.order" -Xlinker --no-warn-symbol-ordering
    -Xlinker -z -Xlinker pack-relative-relocs
    -Xlinker --no-export-dynamic
    -Xlinker -L"$PWD/.build-static/static-cxx"
)
# SwiftPM does not always recompile when only the compiler's flags change: a build made with
# others starts over (the dependencies' checkouts stay).
stamp=.build-static/build-flags
if [ "$(cat "$stamp" 2>/dev/null)" != "${compile[*]}" ]; then
    rm -rf .build-static/*-linux-gnu .build-static/release
    mkdir -p .build-static && echo "${compile[*]}" > "$stamp"
fi
flags=("${compile[@]}" "${link[@]}" "$@")
for product in "${products[@]}"; do
    # Nor does it relink when the order file changes.
    binary=".build-static/release/$product"
    [ -e "$binary" ] && [ Deploy/spectra-agent.order -nt "$binary" ] && rm -f "$binary"
    swift build "${flags[@]}" --product "$product" >&2
done
swift build "${flags[@]}" --show-bin-path
