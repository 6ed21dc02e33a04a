#!/usr/bin/env bash
# Make sure a local PostgreSQL server is up for the review-log tests, and print the URL they use:
#
#     eval "$(.ci/postgres.sh)"     # -> export BONEAGE_TEST_POSTGRES=postgresql://boneage:...@127.0.0.1:5432/postgres
#
# Assumes Debian's `postgresql` package is installed (apt-get install postgresql); installs nothing.
# Uses the Debian cluster (pg_ctlcluster; initdb refuses root), listening on 127.0.0.1. Creates (or updates)
# the role `boneage` with a password and CREATEDB: the tests create one database per test through the
# server's `postgres` database and drop it after. Idempotent; fails loudly. Only the export line goes to
# stdout; everything else to stderr.
set -euo pipefail

PORT="${BONEAGE_PG_PORT:-5432}"
ROLE="boneage"
PASSWORD="${BONEAGE_PG_PASSWORD:-boneage-ci}"

die() { echo "postgres.sh: $*" >&2; exit 1; }

command -v pg_lsclusters >/dev/null 2>&1 \
  || die "PostgreSQL is not installed (no pg_lsclusters): apt-get install postgresql"

read -r VERSION CLUSTER < <(pg_lsclusters --no-header | awk -v p="$PORT" '$3 == p {print $1, $2; exit}') || true
if [ -z "${VERSION:-}" ]; then
  read -r VERSION CLUSTER < <(pg_lsclusters --no-header | awk '{print $1, $2; exit}') || true
fi
[ -n "${VERSION:-}" ] || die "no PostgreSQL cluster found (pg_lsclusters lists none): pg_createcluster <version> main"

as_postgres() {
  if [ "$(id -un)" = "postgres" ]; then "$@"
  elif [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"
  else sudo -n -u postgres "$@" || die "need root or passwordless sudo to run '$*' as postgres"
  fi
}

STATUS="$(pg_lsclusters --no-header | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $4}')"
if [ "$STATUS" != "online" ]; then
  echo "postgres.sh: starting cluster $VERSION/$CLUSTER" >&2
  if [ "$(id -u)" -eq 0 ]; then
    pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 \
      || die "pg_ctlcluster $VERSION $CLUSTER start failed (see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)"
  else
    as_postgres pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 \
      || die "pg_ctlcluster $VERSION $CLUSTER start failed (see /var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)"
  fi
fi
ACTUAL_PORT="$(pg_lsclusters --no-header | awk -v v="$VERSION" -v c="$CLUSTER" '$1 == v && $2 == c {print $3}')"

for _ in $(seq 1 30); do
  if pg_isready -q -h 127.0.0.1 -p "$ACTUAL_PORT"; then break; fi
  sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$ACTUAL_PORT" \
  || die "the server of cluster $VERSION/$CLUSTER does not answer on 127.0.0.1:$ACTUAL_PORT (listen_addresses?)"

SQL="DO \$\$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
    ALTER ROLE $ROLE WITH LOGIN CREATEDB PASSWORD '$PASSWORD';
  ELSE
    CREATE ROLE $ROLE WITH LOGIN CREATEDB PASSWORD '$PASSWORD';
  END IF;
END \$\$;"
as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$ACTUAL_PORT" -d postgres -c "$SQL" >&2 \
  || die "could not create the role $ROLE (psql as postgres failed)"

URL="postgresql://$ROLE:$PASSWORD@127.0.0.1:$ACTUAL_PORT/postgres"
PGPASSWORD="$PASSWORD" psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$ACTUAL_PORT" -U "$ROLE" -d postgres \
  -c "SELECT 1" >/dev/null \
  || die "role $ROLE cannot log in over TCP at 127.0.0.1:$ACTUAL_PORT (pg_hba.conf must allow scram-sha-256/md5 for host connections)"
echo "export BONEAGE_TEST_POSTGRES=$URL"
