#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Spectra Fleet:
# libmosquitto-dev, libsqlite3-dev, libcurl4-openssl-dev (the agent's firmware downloads load
# libcurl when they run; the build needs its header), mosquitto, mosquitto-clients, pkg-config, chromium
# (the dashboard test loads the page in a real headless browser), and binutils (readelf and
# strip, for the installable package), and postgresql (the tests start their own servers from its
# binaries; the cluster the package may start itself is not used).
# For the tests, two more MQTT brokers from PyPI in .build-brokers/ (a virtual environment in the
# checkout, ignored by git): amqtt (MQTT 3.1.1) and mqttools (an MQTT 5 broker without wildcard or
# shared subscriptions and with QoS 0 only), beside mosquitto.
# Idempotent: prints nothing and changes nothing when everything is present.
set -euo pipefail

packages=(pkg-config binutils libmosquitto-dev libsqlite3-dev libcurl4-openssl-dev mosquitto mosquitto-clients chromium postgresql)
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

# The second and third broker implementations the tests run against, and the JSON Schema
# validator that checks the code against docs/contracts.
root="$(cd "$(dirname "$0")/.." && pwd)"
brokers="$root/.build-brokers"
if [ ! -x "$brokers/bin/amqtt" ] || [ ! -x "$brokers/bin/mqttools" ] \
    || ! "$brokers/bin/python" -c "import jsonschema, yaml, openapi_spec_validator" >/dev/null 2>&1; then
    echo "bootstrap: installing the test brokers amqtt and mqttools, and jsonschema, into .build-brokers" >&2
    if [ ! -x "$brokers/bin/pip" ] && ! python3 -m venv "$brokers" >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq >/dev/null
        $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        rm -rf "$brokers"
        python3 -m venv "$brokers"
    fi
    "$brokers/bin/pip" install -q --disable-pip-version-check amqtt==0.12.1 mqttools==0.50.0 jsonschema==4.23.0 PyYAML==6.0.2 \
        openapi-spec-validator==0.7.1
fi

# promtool (for the alerting rules' unit tests), taken from Debian's prometheus package without
# installing it: the package would also install and start a Prometheus server.
if [ ! -x "$brokers/bin/promtool" ]; then
    echo "bootstrap: extracting promtool from Debian's prometheus package into .build-brokers" >&2
    work="$(mktemp -d)"
    (
        cd "$work"
        if ! apt-get download prometheus >/dev/null 2>&1; then
            sudo=""
            if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
            $sudo apt-get update -qq >/dev/null
            apt-get download prometheus >/dev/null
        fi
        dpkg-deb -x prometheus_*.deb root
        cp root/usr/bin/promtool "$brokers/bin/promtool"
    )
    rm -rf "$work"
fi
