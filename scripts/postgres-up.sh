#!/usr/bin/env bash
# Make a local PostgreSQL answer on loopback for the storage tests (and for a
# team's shared recorder database): install Debian's packages if missing, start
# the cluster, create the role and database. Idempotent; fails, never skips.
#   role/database/password: $VIRTWATCH_PG_USER / $VIRTWATCH_PG_DB / $VIRTWATCH_PG_PASSWORD
set -euo pipefail
PG_USER="${VIRTWATCH_PG_USER:-virtwatch}"
PG_DB="${VIRTWATCH_PG_DB:-virtwatch}"
PG_PASSWORD="${VIRTWATCH_PG_PASSWORD:-virtwatch}"
PG_PORT="${VIRTWATCH_PG_PORT:-5432}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to set up PostgreSQL" >&2; exit 1; }
    SUDO=sudo
fi

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -q --no-install-recommends postgresql >/tmp/virtwatch-apt-pg.log 2>&1; then
        $SUDO apt-get update -q >>/tmp/virtwatch-apt-pg.log 2>&1
        $SUDO apt-get install -y -q --no-install-recommends postgresql >>/tmp/virtwatch-apt-pg.log 2>&1 || {
            echo "apt-get install postgresql failed; see /tmp/virtwatch-apt-pg.log" >&2; exit 1; }
    fi
fi

# the newest installed major version, and its cluster "main" (created if missing)
VERSION="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VERSION main"; then
    $SUDO pg_createcluster "$VERSION" main --port "$PG_PORT" >/dev/null
fi
CONF="/etc/postgresql/$VERSION/main/conf.d/virtwatch.conf"
if [ ! -f "$CONF" ]; then
    # loopback only; enough connections for parallel test databases
    printf "listen_addresses = '127.0.0.1'\nmax_connections = 200\n" | $SUDO tee "$CONF" >/dev/null
    if pg_lsclusters -h | awk -v v="$VERSION" '$1==v && $2=="main" {print $4}' | grep -q online; then
        $SUDO pg_ctlcluster "$VERSION" main restart
    fi
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1==v && $2=="main" {print $4}' | grep -q online; then
    $SUDO pg_ctlcluster "$VERSION" main start
fi
for _ in $(seq 1 60); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { echo "PostgreSQL did not answer on 127.0.0.1:$PG_PORT" >&2; exit 1; }

psql_admin() { $SUDO su postgres -c "psql -v ON_ERROR_STOP=1 -q -p $PG_PORT $*"; }
# CREATEDB: the test suite makes a throw-away database per test
if ! psql_admin "-tAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1; then
    psql_admin "-c \"CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'\""
fi
if ! psql_admin "-tAc \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1; then
    psql_admin "-c \"CREATE DATABASE $PG_DB OWNER $PG_USER\""
fi
echo "PostgreSQL $VERSION on 127.0.0.1:$PG_PORT: postgresql://$PG_USER:***@127.0.0.1:$PG_PORT/$PG_DB"
