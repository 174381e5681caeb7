#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the pgstore tests and prints, on
# stdout, the shell lines that point the tests at it:
#
#   export TASKS_PG_URL=postgres://postgres@127.0.0.1:PORT/tasks_test?sslmode=disable
#   export TASKS_PG_STOP=/tmp/tasks-pg/stop.sh
#
# Use it as:   eval "$(bash .ci/start-postgres.sh)"
# Stop it as:  eval "$TASKS_PG_STOP"      (or run the stop.sh it names)
#
# PostgreSQL is installed from Debian's packages when no server binaries are
# found. The cluster lives in $TASKS_PG_DIR (default /tmp/tasks-pg), is owned by
# the postgres user (the server refuses to run as root), listens on 127.0.0.1
# only (plus a Unix socket in that directory), trusts local connections and
# is tuned for speed, not durability (fsync off): it is for tests only.
#
# Running it again while the server is up prints the same lines and changes
# nothing; if the directory holds a cluster that is not running (a previous run
# was killed), it is wiped and created anew. Progress goes to stderr.
set -euo pipefail

base="${TASKS_PG_DIR:-/tmp/tasks-pg}"
db="${TASKS_PG_DB:-tasks_test}"
data="$base/data"
log() { echo "start-postgres: $*" >&2; }

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bin="$(find_bin)"
if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
  log "no PostgreSQL server found; installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  bin="$(find_bin)"
  if [ -z "$bin" ]; then log "postgresql installed but no server binaries under /usr/lib/postgresql"; exit 1; fi
fi

# The server must not run as root: run its tools as the postgres user then.
if [ "$(id -u)" = 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  owner=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  owner="$(id -un)"
  as_owner() { "$@"; }
fi

port_file="$base/port"
stop_script="$base/stop.sh"

print_env() {
  local port
  port="$(cat "$port_file")"
  # Single-quoted so that eval never globs the '?'. (Paths and names here hold no quotes.)
  printf "export TASKS_PG_URL='%s'\n" "postgres://postgres@127.0.0.1:${port}/${db}?sslmode=disable"
  printf "export TASKS_PG_STOP='%s'\n" "$stop_script"
}

# Already running from an earlier call: reuse it.
if [ -f "$port_file" ] && [ -f "$data/PG_VERSION" ] &&
  as_owner "$bin/pg_isready" -q -h 127.0.0.1 -p "$(cat "$port_file")" -t 5; then
  log "server already running in $data"
  print_env
  exit 0
fi
# Not answering: make sure no half-dead server still holds the directory.
if [ -f "$data/postmaster.pid" ]; then
  as_owner "$bin/pg_ctl" -D "$data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
fi

# A leftover cluster that is not running is thrown away: the data is scratch.
rm -rf "$base"
mkdir -p "$base"
chmod 0755 "$base"
chown "$owner" "$base"

log "initdb in $data ($("$bin/postgres" --version))"
as_owner "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$base/initdb.log" 2>&1 || {
  cat "$base/initdb.log" >&2; exit 1; }

cat >>"$data/postgresql.conf" <<EOF

# tasks tests: speed over durability, loopback only
listen_addresses = '127.0.0.1'
unix_socket_directories = '$base'
max_connections = 300
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 2GB
checkpoint_timeout = 30min
autovacuum_naptime = 10s
log_min_messages = warning
log_min_error_statement = panic
EOF

# Is a TCP port on loopback free? (A successful connect means it is taken.)
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=
for port in $(seq "${TASKS_PG_PORT:-55432}" "$(( ${TASKS_PG_PORT:-55432} + 40 ))"); do
  port_free "$port" || continue
  if as_owner "$bin/pg_ctl" -D "$data" -l "$base/server.log" -w -t 60 -o "-p $port" start >/dev/null 2>&1; then
    started=$port
    break
  fi
  log "could not start on port $port; trying the next one"
done
if [ -z "$started" ]; then
  log "PostgreSQL did not start; server log follows"
  cat "$base/server.log" >&2 || true
  exit 1
fi
echo "$started" >"$port_file"

cat >"$stop_script" <<EOF
#!/usr/bin/env bash
# Stops the test PostgreSQL server started by .ci/start-postgres.sh.
if [ "\$(id -u)" = 0 ]; then
  runuser -u $owner -- "$bin/pg_ctl" -D "$data" -m fast -w stop
else
  "$bin/pg_ctl" -D "$data" -m fast -w stop
fi
EOF
chmod 0755 "$stop_script"

if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$started" -U postgres -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$started" -U postgres "$db"
fi
log "PostgreSQL $(cat "$data/PG_VERSION") listening on 127.0.0.1:$started, database $db"
print_env
