#!/usr/bin/env bash
# Builds what a gateway and the fleet's server install: release binaries with the Swift runtime
# and Foundation linked in (a gateway has no Swift toolchain), the configs with installed paths,
# the calibration profile and the systemd units, in one tarball laid out from / (usr/, etc/),
# beside DEPENDS.
# Usage: Deploy/package.sh [OUT]   (OUT defaults to ./dist)
# Checks that no binary needs a library from the toolchain, and writes the Debian packages the
# binaries do need to DEPENDS in the tarball (libmosquitto1, libsqlite3-0, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
products=(spectra-agent spectra-aggregator spectra-ctl)
bash Deploy/bootstrap.sh

# The gateway build (Deploy/build-static.sh), in a build directory of its own: the static link
# would otherwise relink the development build.
build_log=$(mktemp)
bin=$(bash Deploy/build-static.sh "${products[@]}" 2>"$build_log") \
    || { tail -40 "$build_log" >&2; echo "package: the build failed (above)" >&2; rm -f "$build_log"; exit 1; }
rm -f "$build_log"
version=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/SpectraProtocol/SpectraVersion.swift)
[ -n "$version" ] || { echo "package: no release version in Sources/SpectraProtocol/SpectraVersion.swift" >&2; exit 1; }
name="spectra-fleet-$version-linux-$(uname -m)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/usr/local/bin" "$root/etc/spectra/calibration" "$root/etc/systemd/system"

runtime_libs='^(libswift|libFoundation|lib_Foundation|libdispatch|libBlocksRuntime)'
needed=()
for product in "${products[@]}"; do
    install -m 0755 "$bin/$product" "$root/usr/local/bin/$product"
    strip --strip-debug "$root/usr/local/bin/$product"
    libs=$(readelf -d "$root/usr/local/bin/$product" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    if echo "$libs" | grep -Eq "$runtime_libs"; then
        echo "package: $product still needs the Swift runtime from the toolchain:" >&2
        echo "$libs" | grep -E "$runtime_libs" >&2
        exit 1
    fi
    needed+=($libs)
done

# The configs as installed: state under systemd's StateDirectory, the profile under /etc.
sed -e '/^dataDir:/d' \
    -e 's#^\(  profile:\) Config/calibration/default.yaml#\1 /etc/spectra/calibration/default.yaml#' \
    Config/agent.yaml > "$root/etc/spectra/agent.yaml"
sed -e 's#^database: var/aggregator.sqlite#database: /var/lib/spectra-aggregator/aggregator.sqlite#' \
    Config/aggregator.yaml > "$root/etc/spectra/aggregator.yaml"
grep -q '^dataDir:' "$root/etc/spectra/agent.yaml" && { echo "package: agent.yaml still names dataDir" >&2; exit 1; }
grep -q 'profile: /etc/spectra/calibration/default.yaml' "$root/etc/spectra/agent.yaml" \
    || { echo "package: agent.yaml's session.profile was not moved to /etc/spectra" >&2; exit 1; }
grep -q '^database: /var/lib/spectra-aggregator/' "$root/etc/spectra/aggregator.yaml" \
    || { echo "package: aggregator.yaml's database was not moved to /var/lib" >&2; exit 1; }
install -m 0644 Config/calibration/default.yaml "$root/etc/spectra/calibration/default.yaml"
install -m 0644 Deploy/systemd/*.service "$root/etc/systemd/system/"

# The Debian package that holds a shared library (by soname), as installed here.
package_of() {
    local path pkg candidate
    path=$(ldconfig -p | awk -v lib="$1" '$1 == lib { print $NF; exit }')
    [ -n "$path" ] || { echo "package: $1 is not installed on this machine" >&2; return 1; }
    # dpkg knows a file by the path its package installed it at (/lib or /usr/lib).
    for candidate in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
        pkg=$(dpkg -S "$candidate" 2>/dev/null | head -1 | cut -d: -f1) && [ -n "$pkg" ] && { echo "$pkg"; return; }
    done
    echo "package: no Debian package holds $path" >&2
    return 1
}
packages=()
for lib in $(printf '%s\n' "${needed[@]}" libcurl.so.4 | sort -u); do
    packages+=("$(package_of "$lib")")
done
{
    echo "# Debian packages the binaries need at run time (apt-get install ...)."
    echo "# libcurl is loaded only for a firmware download: without it, a download fails and is reported."
    echo "# libc6 2.36 or later (Debian 12): the binaries' relocations are packed (DT_RELR)."
    printf '%s\n' "${packages[@]}" | sort -u
} > "$root/DEPENDS"

mkdir -p "$out"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
echo "package: $out/$name.tar.gz"
echo "  binaries: ${products[*]} (Swift runtime linked in; $(du -sh "$root/usr/local/bin" | cut -f1) together)"
echo "  needs: $(grep -v '^#' "$root/DEPENDS" | paste -sd' ')"
# How much of the agent's code layout still applies: names the order file lists that the agent
# no longer has (renamed or removed code) are laid out by default and stay resident once touched.
listed=$(sort -u Deploy/spectra-agent.order | wc -l)
found=$(comm -12 <(sort -u Deploy/spectra-agent.order) <(nm --defined-only "$root/usr/local/bin/spectra-agent" | awk '{ print $3 }' | sort -u) | wc -l)
echo "  code layout: $found of the $listed functions in Deploy/spectra-agent.order found in the agent"
if [ $((found * 100)) -lt $((listed * 90)) ]; then
    echo "package: the agent's code layout is out of date; run Deploy/order-file.sh and commit the order file (docs/decisions/gateway-build.md)" >&2
fi
