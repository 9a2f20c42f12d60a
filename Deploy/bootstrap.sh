#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Spectra Fleet:
# libmosquitto-dev, libsqlite3-dev, libcurl4-openssl-dev (the agent's firmware downloads load
# libcurl when they run; the build needs its header), mosquitto, mosquitto-clients, pkg-config, chromium
# (the dashboard test loads the page in a real headless browser), and binutils (readelf and
# strip, for the installable package).
# Idempotent: prints nothing and changes nothing when everything is present.
set -euo pipefail

packages=(pkg-config binutils libmosquitto-dev libsqlite3-dev libcurl4-openssl-dev mosquitto mosquitto-clients chromium)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} > 0)); then
    echo "bootstrap: installing ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
    echo "bootstrap: the Swift toolchain (6.2 or later) is not on PATH; install it from swift.org" >&2
    exit 1
fi
