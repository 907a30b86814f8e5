# shellcheck shell=bash
# Our own PostgreSQL clusters: initdb, start, stop and psql, as the unprivileged
# `postgres` user when we are root. Sourced by common.sh.

# initdb and postgres refuse to run as root: as root, run them as Debian's
# unprivileged `postgres` user, from / (our cwd may be unreadable to it).
pg_as_owner() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# mkdir -p, owned by whoever runs the server.
mkdir_for_pg() {
    mkdir -p "$@"
    if is_root; then chown postgres:postgres "$@"; fi
}

# Whether the server's user can reach $1 (as root the repo may sit under a
# directory `postgres` cannot traverse, e.g. /root).
pg_can_use_dir() {
    if is_root; then
        (cd / && runuser -u postgres -- test -x "$1")
    else
        test -x "$1"
    fi
}

# pg_init DATADIR [initdb args...]: a new cluster with superuser `postgres`, unless
# DATADIR holds one already (a second scripts/dev run keeps its data).
pg_init() {
    local datadir=$1
    shift
    if [[ -f $datadir/PG_VERSION ]]; then
        local have want
        have="$(<"$datadir/PG_VERSION")"
        want="$("$PG_BINDIR/postgres" --version | grep -oE '[0-9]+' | head -n 1)"
        [[ $have == "$want" ]] ||
            die "$datadir holds a PostgreSQL $have cluster but the server is $want; remove the directory to start afresh"
        return 0
    fi
    info "initdb $datadir"
    mkdir_for_pg "$datadir"
    pg_as_owner "$PG_BINDIR/initdb" -D "$datadir" -U postgres --encoding=UTF8 --locale=C \
        --auth=trust "$@" >/dev/null
    # Trust, but only for the local socket and loopback; the server listens on
    # 127.0.0.1 alone anyway.
    pg_as_owner tee "$datadir/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/lib/common.sh: a local development cluster, loopback only.
local   all          all                 trust
host    all          all   127.0.0.1/32  trust
host    all          all   ::1/128       trust
local   replication  all                 trust
host    replication  all   127.0.0.1/32  trust
EOF
}

# pg_start DATADIR SOCKETDIR PORT LOGFILE [setting=value...]: starts the cluster and
# waits until it accepts connections. Settings go to a file included from
# postgresql.conf, so ports and paths need no shell quoting on pg_ctl's -o.
pg_start() {
    local datadir=$1 sockdir=$2 port=$3 logfile=$4 kv
    shift 4
    mkdir_for_pg "$sockdir"
    touch "$logfile"
    if is_root; then chown postgres:postgres "$logfile"; fi
    {
        printf '# Written by scripts/lib/common.sh at every start.\n'
        printf "listen_addresses = '127.0.0.1'\n"
        printf 'port = %s\n' "$port"
        printf "unix_socket_directories = '%s'\n" "${sockdir//\'/\'\'}"
        for kv in "$@"; do printf '%s\n' "$kv"; done
    } | pg_as_owner tee "$datadir/local.conf" >/dev/null
    grep -q "^include_if_exists = 'local.conf'" "$datadir/postgresql.conf" ||
        printf "\ninclude_if_exists = 'local.conf'\n" | pg_as_owner tee -a "$datadir/postgresql.conf" >/dev/null

    local t0=$EPOCHREALTIME
    # -W: do not let pg_ctl wait; we poll pg_isready ourselves, with our own bound
    # and a log tail on failure.
    pg_as_owner "$PG_BINDIR/pg_ctl" start -W -D "$datadir" -l "$logfile" >/dev/null
    local i
    for ((i = 0; i < 300; i++)); do
        if "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
            info "PostgreSQL ready on 127.0.0.1:$port in $(elapsed_since "$t0") s (data: $datadir)"
            return 0
        fi
        sleep 0.1
    done
    warn "PostgreSQL did not accept connections on 127.0.0.1:$port within 30 s; last lines of $logfile:"
    tail -n 20 "$logfile" >&2 || true
    pg_stop "$datadir"
    return 1
}

pg_stop() {
    local datadir=$1
    [[ -f $datadir/postmaster.pid ]] || return 0
    if pg_as_owner "$PG_BINDIR/pg_ctl" stop -D "$datadir" -m fast -w -t 30 >/dev/null 2>&1; then
        info "PostgreSQL stopped ($datadir)"
    else
        warn "pg_ctl stop -D $datadir failed (not running any more?)"
    fi
}

# Runs psql against the cluster on 127.0.0.1:$1 as superuser `postgres`.
pg_psql() {
    local port=$1
    shift
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
}
