#!/usr/bin/env bash
# Lists the C library functions that the given binaries define themselves, and exits 1 if
# there are any: a definition of `read`, `close` or any other libc function replaces the C
# library's for every library in the process (libmosquitto, OpenSSL, SQLite), which nothing
# at build time checks. (Not for the fuzz targets: the sanitizer runtime intercepts libc by design.)
#   Deploy/libc-overrides.sh BINARY...
set -euo pipefail
(($# > 0)) || { echo "usage: $0 BINARY..." >&2; exit 2; }
# (awk reads all of its input: leaving early would end ldconfig with SIGPIPE.)
libc=$(ldconfig -p | awk '$1 == "libc.so.6" && !found { print $NF; found = 1 }')
[ -n "$libc" ] || { echo "libc-overrides: libc.so.6 not found" >&2; exit 2; }
functions=$(mktemp)
trap 'rm -f "$functions"' EXIT
nm -D --defined-only "$libc" | awk '$2 ~ /^[TWi]$/ { sub(/@.*/, "", $3); print $3 }' | sort -u >"$functions"
found=0
for binary in "$@"; do
    overrides=$(nm --defined-only --extern-only "$binary" | awk '$2 ~ /^[TWi]$/ { print $3 }' | sort -u | comm -12 - "$functions" | tr '\n' ' ')
    if [ -n "$overrides" ]; then
        echo "$(basename "$binary") defines C library functions: $overrides"
        found=1
    fi
done
exit "$found"
