# shellcheck shell=bash
# Our own PostgreSQL clusters. initdb and postgres refuse root: as root they run as
# Debian's `postgres` user, from / (our cwd may be unreadable to it).
pg_as_owner() {
    if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
# Whether the server's user can reach $1 (not under /root, say).
pg_can_use_dir() { pg_as_owner test -x "$1"; }
# pg_init DATADIR [initdb args...]: a cluster with superuser `postgres`, trusted on
# loopback only, unless DATADIR holds one already.
pg_init() {
    local datadir=$1 have want
    shift
    if [[ -f $datadir/PG_VERSION ]]; then
        have="$(<"$datadir/PG_VERSION")"
        want="$("$PG_BINDIR/postgres" --version | grep -oE '[0-9]+' | head -n 1)"
        [[ $have == "$want" ]] || die "$datadir holds a PostgreSQL $have cluster but the server is $want; remove the directory to start afresh"
        return 0
    fi
    info "initdb $datadir"
    mkdir -p "$datadir"
    ! is_root || chown postgres:postgres "$datadir"
    pg_as_owner "$PG_BINDIR/initdb" -D "$datadir" -U postgres --encoding=UTF8 --locale=C --auth=trust "$@" >/dev/null
    printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust' |
        pg_as_owner tee "$datadir/pg_hba.conf" >/dev/null
}
# pg_start DATADIR SOCKETDIR PORT LOGFILE [setting=value...]: starts it and waits
# until it accepts connections. Settings go to local.conf, included from
# postgresql.conf, so they need no quoting on pg_ctl's -o.
pg_start() {
    local datadir=$1 sockdir=$2 port=$3 logfile=$4 t0=$EPOCHREALTIME
    shift 4
    mkdir -p "$sockdir"
    touch "$logfile"
    ! is_root || chown postgres:postgres "$sockdir" "$logfile"
    printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $port" \
        "unix_socket_directories = '${sockdir//\'/\'\'}'" "$@" | pg_as_owner tee "$datadir/local.conf" >/dev/null
    grep -q "^include_if_exists = 'local.conf'" "$datadir/postgresql.conf" ||
        printf "\ninclude_if_exists = 'local.conf'\n" | pg_as_owner tee -a "$datadir/postgresql.conf" >/dev/null
    pg_as_owner "$PG_BINDIR/pg_ctl" start -W -D "$datadir" -l "$logfile" >/dev/null
    if ! wait_for "" 30 "$logfile" "$PG_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then
        pg_stop "$datadir"
        return 1
    fi
    info "PostgreSQL ready on 127.0.0.1:$port in $(elapsed_since "$t0") s (data: $datadir)"
}
pg_stop() {
    [[ -f $1/postmaster.pid ]] || return 0
    if pg_as_owner "$PG_BINDIR/pg_ctl" stop -D "$1" -m fast -w -t 30 >/dev/null 2>&1; then
        info "PostgreSQL stopped ($1)"
    else
        warn "pg_ctl stop -D $1 failed (not running any more?)"
    fi
}
# pg_psql PORT ARGS...: psql on 127.0.0.1:PORT as superuser `postgres`.
pg_psql() { "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres "${@:2}"; }
