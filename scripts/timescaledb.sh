#!/usr/bin/env bash
# Build and install TimescaleDB into the installed PostgreSQL server, for the tests of the hub's
# TimescaleDB layout. Debian's package lists have no TimescaleDB; its source release sits in
# ../shared/timescaledb/ (SENTINEL_TIMESCALEDB_SRC to point elsewhere). Nothing to do when the
# extension is installed already; when the source is absent, say so and leave it (the tests then
# skip the TimescaleDB layout and say why). The build is cached in ~/.cache/smartgrid-sentinel, so
# a second run costs nothing. Needs root for apt-get and the install; otherwise prints what to run.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
SRC_DIR="${SENTINEL_TIMESCALEDB_SRC:-$REPO/../shared/timescaledb}"
CACHE="${SENTINEL_CACHE_DIR:-$HOME/.cache/smartgrid-sentinel}"

pg_bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$pg_bindir" ]; then
    echo "timescaledb: no PostgreSQL server installed; nothing to build against" >&2
    exit 0
fi
major=$(basename "$(dirname "$pg_bindir")")
libdir="/usr/lib/postgresql/$major/lib"
if ls "$libdir"/timescaledb*.so >/dev/null 2>&1; then
    exit 0  # installed
fi
archive=$(ls "$SRC_DIR"/timescaledb-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$archive" ]; then
    echo "timescaledb: no source release in $SRC_DIR; the TimescaleDB layout's tests will be skipped" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "timescaledb: not installed; as root, run: bash scripts/timescaledb.sh" >&2
    exit 0
fi

version=$(basename "$archive" .tar.gz)
echo "timescaledb: building $version for PostgreSQL $major (a minute or two, once)"
server_version=$(dpkg-query -W -f='${Version}' "postgresql-$major" 2>/dev/null || true)
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 && command -v gcc >/dev/null 2>&1 || need+=(build-essential)
[ -f "/usr/include/postgresql/$major/server/postgres.h" ] || need+=("postgresql-server-dev-$major${server_version:+=$server_version}")
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # the headers must be the server's own version (the security suite offers a newer one)
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

build="$CACHE/$version-pg$major"
if [ ! -f "$build/build/src/timescaledb.so" ]; then
    rm -rf "$build"
    mkdir -p "$build"
    tar -xzf "$archive" -C "$build" --strip-components=1
    if ! (cd "$build" && ./bootstrap -DREGRESS_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DTAP_CHECKS=OFF \
            -DPG_CONFIG="$pg_bindir/pg_config" && make -C build -j"$(nproc)") >"$build.log" 2>&1; then
        tail -n 40 "$build.log" >&2
        echo "timescaledb: the build failed (log: $build.log)" >&2
        exit 1
    fi
fi
if ! make -C "$build/build" install >"$build.install.log" 2>&1; then
    tail -n 40 "$build.install.log" >&2
    echo "timescaledb: the install failed (log: $build.install.log)" >&2
    exit 1
fi
echo "timescaledb: installed into $libdir"
