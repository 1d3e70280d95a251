# A private PostgreSQL cluster for tests and benchmarks: trust authentication on loopback,
# data under the temporary directory, never the system's cluster. Source this file,
# then call start_private_postgres (exports HESTIA_TEST_POSTGRES_URL) and
# stop_private_postgres.

pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
    return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres_installed() {
  if [ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ]; then
    return
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/postgres.sh: installing PostgreSQL from apt" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
    return
  fi
  echo "scripts/postgres.sh: PostgreSQL is not installed. Install it (apt-get install postgresql)" >&2
  echo "or set HESTIA_TEST_POSTGRES_URL to a server where the user may CREATE DATABASE." >&2
  exit 1
}

# Runs a command as the unprivileged postgres user when we are root (PostgreSQL refuses root).
as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start_private_postgres() {
  ensure_postgres_installed
  local bindir
  bindir=$(pg_bindir)
  # Under the temporary directory, not the target directory: when we are root, the cluster
  # runs as the postgres user, who cannot traverse a home such as /root (mode 700).
  PG_PRIVATE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/hestia-pg.XXXXXX")
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    chown postgres "$PG_PRIVATE_DIR"
  fi
  PG_PRIVATE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_pg_user "$bindir/initdb" -D "$PG_PRIVATE_DIR/data" -U hestia --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  as_pg_user "$bindir/pg_ctl" -D "$PG_PRIVATE_DIR/data" -l "$PG_PRIVATE_DIR/server.log" -w \
    -o "-p $PG_PRIVATE_PORT -k $PG_PRIVATE_DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null
  export PG_PRIVATE_DIR PG_PRIVATE_BINDIR=$bindir
  export HESTIA_TEST_POSTGRES_URL="postgres://hestia@127.0.0.1:$PG_PRIVATE_PORT/postgres"
  echo "scripts/postgres.sh: private PostgreSQL at $HESTIA_TEST_POSTGRES_URL" >&2
}

stop_private_postgres() {
  if [ -n "${PG_PRIVATE_DIR:-}" ] && [ -d "$PG_PRIVATE_DIR/data" ]; then
    as_pg_user "$PG_PRIVATE_BINDIR/pg_ctl" -D "$PG_PRIVATE_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_PRIVATE_DIR"
  fi
}
