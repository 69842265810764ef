#!/usr/bin/env bash
# Install the system packages the tests need, when missing: PostgreSQL server binaries, Mosquitto,
# socat, mbpoll, libmodbus-dev + gcc (a non-pymodbus Modbus server for interop tests) and poppler-utils
# (pdftotext: the incident report tests read the PDF's text). Uses apt-get when we are root (CI, a fresh box); otherwise lists what is missing.
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -f /usr/include/modbus/modbus.h ] || missing+=(libmodbus-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v mbpoll >/dev/null 2>&1 || missing+=(mbpoll)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # checks the deploy/systemd unit
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)  # validates docker-compose.yml (no daemon)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # browser tests (Playwright drives it; nothing downloads a browser)

# node-opcua: an OPC-UA server that is not asyncua, for the interoperability tests (npm registry).
NODE_OPCUA_DIR="${SENTINEL_NODE_OPCUA_DIR:-$HOME/.cache/smartgrid-sentinel/node-opcua}"
if command -v npm >/dev/null 2>&1 && [ ! -d "$NODE_OPCUA_DIR/node_modules/node-opcua-server" ]; then
    echo "system-deps: installing node-opcua-server into $NODE_OPCUA_DIR"
    npm install --prefix "$NODE_OPCUA_DIR" --no-audit --no-fund --loglevel=error node-opcua-server@2.160.0 >/dev/null \
        || echo "system-deps: node-opcua-server could not be installed; the OPC-UA interop tests will say so" >&2
fi

install_missing() {
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # Debian starts the packaged services; the tests start their own, so stop these.
        for svc in postgresql mosquitto; do
            if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
        done
    else
        echo "system-deps: missing ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
        echo "system-deps: tests that need them will be skipped outside CI" >&2
    fi
}
if [ ${#missing[@]} -gt 0 ]; then
    install_missing
fi

# TimescaleDB, built from its source release in ../shared/timescaledb/ (not in Debian's lists)
# (a failed build is reported, not fatal: the TimescaleDB cases then skip, saying why)
bash "$(dirname "$0")/timescaledb.sh" || echo "system-deps: TimescaleDB could not be built; its tests will be skipped" >&2
