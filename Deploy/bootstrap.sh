#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Spectra Fleet:
# libmosquitto-dev, libsqlite3-dev, libcurl4-openssl-dev (the agent's firmware downloads load
# libcurl when they run; the build needs its header), mosquitto, mosquitto-clients, pkg-config, chromium
# (the dashboard test loads the page in a real headless browser), and binutils (readelf and
# strip, for the installable package).
# For the tests, two more MQTT brokers from PyPI in .build-brokers/ (a virtual environment in the
# checkout, ignored by git): amqtt (MQTT 3.1.1) and mqttools (an MQTT 5 broker without wildcard or
# shared subscriptions and with QoS 0 only), beside mosquitto.
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

# The second and third broker implementations the tests run against.
root="$(cd "$(dirname "$0")/.." && pwd)"
brokers="$root/.build-brokers"
if [ ! -x "$brokers/bin/amqtt" ] || [ ! -x "$brokers/bin/mqttools" ]; then
    echo "bootstrap: installing the test brokers amqtt and mqttools into .build-brokers" >&2
    if ! python3 -m venv "$brokers" >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq >/dev/null
        $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        rm -rf "$brokers"
        python3 -m venv "$brokers"
    fi
    "$brokers/bin/pip" install -q --disable-pip-version-check amqtt==0.12.1 mqttools==0.50.0
fi
