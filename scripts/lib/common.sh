# shellcheck shell=bash
# Shared by scripts/dev and scripts/test: installing what is missing, and starting
# and stopping our own PostgreSQL and LocalStack. Source it; it defines functions and
# a few variables and starts nothing by itself.
#
# Everything here runs the real servers as plain processes (no Docker, no systemd),
# bound to 127.0.0.1, and stops only the processes it started, by PID.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="$REPO_ROOT/.dev"          # git-ignored; everything we create lives here
VENV_DIR="$STATE_DIR/venv"
LOCALSTACK_REQUIREMENTS="$REPO_ROOT/scripts/lib/localstack-requirements.txt"

# --- output ------------------------------------------------------------------

# Section headers make the failing phase obvious in a CI log.
section() { printf '\n==== %s ====\n' "$*"; }
info() { printf '  %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Seconds since $1 (an $EPOCHREALTIME value), for "ready in 2.1 s" messages.
elapsed_since() {
    local start=$1 now=$EPOCHREALTIME
    awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }'
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# --- installing --------------------------------------------------------------

_APT_UPDATED=0

# apt-get install, with one `apt-get update` per run first (a fresh machine has no
# package lists yet). sudo only when we are not root already.
apt_install() {
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 ||
            die "need root to install $*; run: apt-get update && apt-get install -y $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install these packages with your system's package manager: $*"
    if [[ $_APT_UPDATED -eq 0 ]]; then
        info "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    info "apt-get install -y $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# Serialises installs between concurrent runs (scripts/dev and scripts/test at once
# would otherwise build the same venv on top of each other).
with_install_lock() {
    mkdir -p "$STATE_DIR"
    if command -v flock >/dev/null 2>&1; then
        (
            flock 9
            "$@"
        ) 9>"$STATE_DIR/.install.lock"
    else
        "$@"
    fi
}

ensure_rust() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
    if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
        info "rustfmt and clippy: present"
        return
    fi
    command -v rustup >/dev/null 2>&1 ||
        die "cargo fmt / cargo clippy missing and rustup not found: install rustfmt and clippy for your toolchain"
    info "rustup component add rustfmt clippy"
    rustup component add rustfmt clippy
}

ensure_postgres() {
    if ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
        info "PostgreSQL server not found under /usr/lib/postgresql: installing it"
        apt_install postgresql
    fi
    # The highest installed major version; the Debian layout keeps one bin dir per major.
    PG_BINDIR="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    [[ -x $PG_BINDIR/postgres && -x $PG_BINDIR/initdb && -x $PG_BINDIR/pg_ctl ]] ||
        die "incomplete PostgreSQL install in $PG_BINDIR (need postgres, initdb, pg_ctl)"
    export PG_BINDIR
    if is_root && ! id -u postgres >/dev/null 2>&1; then
        die "running as root but there is no 'postgres' user to run the server as (Debian's postgresql package creates it)"
    fi
    info "PostgreSQL: $PG_BINDIR ($("$PG_BINDIR/postgres" --version))"
}

ensure_tools() {
    # curl polls the producer's health endpoint; ss (iproute2) names who holds a port.
    local missing=()
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v ss >/dev/null 2>&1 || missing+=(iproute2)
    # openssl makes the throw-away CAs of scripts/check-infra.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
}

# Prints the path of a working Python 3.13, or nothing. A pyenv shim named
# python3.13 can exist and still fail (version not selected), so every candidate
# is run, not just looked up.
find_python313() {
    local candidates=() c
    [[ -n ${LOCALSTACK_PYTHON:-} ]] && candidates+=("$LOCALSTACK_PYTHON")
    c="$(command -v python3.13 2>/dev/null || true)"
    [[ -n $c ]] && candidates+=("$c")
    # Highest 3.13.x first; skip free-threaded builds (3.13.0t), which lack wheels.
    while IFS= read -r c; do
        [[ -n $c ]] && candidates+=("$c")
    done < <(printf '%s\n' "${PYENV_ROOT:-${HOME:-/root}/.pyenv}"/versions/3.13*/bin/python3.13 |
        grep -v 't/bin/' | sort -rV)
    candidates+=(/usr/bin/python3.13 /usr/local/bin/python3.13)
    for c in "${candidates[@]}"; do
        [[ -x $c ]] || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

# Whether DIR is a working virtualenv with PROGRAM in it, built from the pins whose
# hash is WANT. Running its python catches an interpreter removed under it.
_pinned_venv_current() {
    local dir=$1 want=$2 program=$3 stamp="$1/.requirements.sha256"
    [[ -x $dir/bin/$program && -f $stamp && $(<"$stamp") == "$want" ]] &&
        "$dir/bin/python" -c '' >/dev/null 2>&1
}

# _build_pinned_venv DIR REQUIREMENTS WANT PROGRAM: a Python 3.13 virtualenv holding
# exactly the pinned set, stamped with the hash of the pin file. Runs under the
# install lock; re-checks first, since another run may have just built it.
_build_pinned_venv() {
    local dir=$1 requirements=$2 want=$3 program=$4
    _pinned_venv_current "$dir" "$want" "$program" && return
    local py
    py="$(find_python313)" || die "${requirements#"$REPO_ROOT"/} is installed with Python 3.13, and none was found.
  Looked for: \$LOCALSTACK_PYTHON, python3.13 on PATH, ${PYENV_ROOT:-\$HOME/.pyenv}/versions/3.13*/bin, /usr/bin/python3.13.
  Install one, e.g.:  pyenv install 3.13      (any distribution)
                 or:  apt-get install python3.13 python3.13-venv   (Debian 13 / Ubuntu 24.10+)
  or point LOCALSTACK_PYTHON at a python3.13 binary."
    # Debian's python3.13 ships venv's ensurepip in a separate package.
    if ! "$py" -c 'import ensurepip' >/dev/null 2>&1; then
        if [[ $py == /usr/bin/python3.13 ]]; then
            apt_install python3.13-venv
        else
            die "$py cannot create virtualenvs (no ensurepip module)"
        fi
    fi
    local t0=$EPOCHREALTIME
    info "building ${dir#"$REPO_ROOT"/} with $py (pins: ${requirements#"$REPO_ROOT"/}); takes a minute or two"
    # From scratch, so the venv holds exactly the pinned set and nothing left over.
    rm -rf "$dir"
    "$py" -m venv "$dir"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install \
        --quiet --progress-bar off -r "$requirements"
    printf '%s\n' "$want" >"$dir/.requirements.sha256"
    info "${dir#"$REPO_ROOT"/} ready in $(elapsed_since "$t0") s"
}

# ensure_pinned_venv DIR REQUIREMENTS PROGRAM: builds the virtualenv if it is
# missing, broken, or its pins changed (editing the pin file rebuilds it, nothing
# else does). Every Python tool of the project lives in one of these under .dev/.
ensure_pinned_venv() {
    local dir=$1 requirements=$2 program=$3 want
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if _pinned_venv_current "$dir" "$want" "$program"; then
        info "${dir#"$REPO_ROOT"/}: up to date"
        return
    fi
    with_install_lock _build_pinned_venv "$dir" "$requirements" "$want" "$program"
}

# LocalStack runs as `$VENV_DIR/bin/python -m localstack.runtime.main`; its venv
# stays off PATH so that its python3 shadows nothing.
ensure_localstack() {
    ensure_pinned_venv "$VENV_DIR" "$LOCALSTACK_REQUIREMENTS" localstack-supervisor
}

# The browser tests (e2e/tests/browser.rs) drive Debian's chromium through
# chromedriver; fonts-liberation gives the screenshots the same fonts everywhere.
ensure_chromium() {
    local missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
    [[ -d /usr/share/fonts/truetype/liberation ]] || missing+=(fonts-liberation)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    info "chromium: $(command -v chromium), chromedriver: $(command -v chromedriver)"
}

# Everything both scripts need. Each step is idempotent and cheap when done already.
ensure_all() {
    section "Checking and installing prerequisites"
    ensure_tools
    ensure_rust
    ensure_postgres
    ensure_localstack
}

# --- processes and ports -------------------------------------------------------

# True while $1 runs (a zombie does not count: it has exited, just not been reaped).
pid_alive() {
    local pid=$1 state
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    state="$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ $state != Z ]]
}

# SIGTERM, up to $2 seconds' grace, then SIGKILL. Reaps it when it is our child.
stop_pid() {
    local pid=$1 grace=$2 name=$3 i
    pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        info "$name (pid $pid) still running after ${grace}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Any Python will do for the port checks: LocalStack's when it is installed, else
# the system's (scripts/bench needs no LocalStack).
port_python() {
    if [[ -x $VENV_DIR/bin/python ]]; then
        printf '%s\n' "$VENV_DIR/bin/python"
    else
        command -v python3 2>/dev/null || die "python3 not found: install it (apt-get install python3)"
    fi
}

# A port the kernel considers free on 127.0.0.1 right now.
free_port() {
    "$(port_python)" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Whether we could bind 127.0.0.1:$1 (what the servers will do).
port_is_free() {
    "$(port_python)" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

# Exits with a message naming the holder (when ss can tell) and the way out.
require_free_port() {
    local port=$1 var=$2 what=$3 holder=""
    port_is_free "$port" && return 0
    if command -v ss >/dev/null 2>&1; then
        # e.g. users:(("python",pid=20010,fd=3)) -> python (pid 20010); empty when
        # the holder belongs to another user and we are not root.
        holder="$(ss -Hltnp "sport = :$port" 2>/dev/null |
            sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 (pid \2)/p' | head -n 1 || true)"
    fi
    {
        printf 'error: port %s (for %s) on 127.0.0.1 is already in use' "$port" "$what"
        [[ -n $holder ]] && printf ' by %s' "$holder"
        printf '.\n'
        printf '  Stop that process, or pick another port: %s=<port> %s\n' "$var" "$0"
    } >&2
    exit 1
}

# --- PostgreSQL ----------------------------------------------------------------

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

# --- LocalStack (SQS) ------------------------------------------------------------

LOCALSTACK_PID=""

# localstack_start STATEDIR PORT LOGFILE: starts LocalStack's SQS provider bound to
# 127.0.0.1:PORT, sets LOCALSTACK_PID and waits for "Ready." in the log.
localstack_start() {
    local dir=$1 port=$2 logfile=$3 timeout=${LOCALSTACK_START_TIMEOUT:-60}
    mkdir -p "$dir"
    : >"$logfile"
    local t0=$EPOCHREALTIME
    # Why each setting (DESIGN.md): hypercorn honours the host in GATEWAY_LISTEN (the
    # default server binds every interface); LOCALSTACK_HOST makes queue URLs name an
    # address that needs no DNS; FILESYSTEM_ROOT and OVERRIDE_IN_DOCKER keep it out of
    # /var/lib/localstack when we happen to run inside a container; and it need not
    # try to download its TLS test certificate (no internet here; it falls back to a
    # self-signed one anyway).
    # setsid: its own process group, so a Ctrl-C at the terminal reaches only our
    # script, which then stops everything in order.
    env GATEWAY_SERVER=hypercorn \
        GATEWAY_LISTEN="127.0.0.1:$port" \
        LOCALSTACK_HOST="127.0.0.1:$port" \
        DNS_ADDRESS=0 \
        SQS_ENDPOINT_STRATEGY=path \
        SERVICES=sqs \
        EAGER_SERVICE_LOADING=1 \
        DISABLE_EVENTS=1 \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$dir" \
        SKIP_SSL_CERT_DOWNLOAD=1 \
        setsid "$VENV_DIR/bin/python" -m localstack.runtime.main >"$logfile" 2>&1 </dev/null &
    LOCALSTACK_PID=$!
    local i
    for ((i = 0; i < timeout * 10; i++)); do
        if grep -q '^Ready\.' "$logfile"; then
            info "LocalStack (SQS) ready on 127.0.0.1:$port in $(elapsed_since "$t0") s (pid $LOCALSTACK_PID, log: $logfile)"
            return 0
        fi
        if ! pid_alive "$LOCALSTACK_PID"; then
            warn "LocalStack exited during start-up; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 || true
            wait "$LOCALSTACK_PID" 2>/dev/null || true
            LOCALSTACK_PID=""
            return 1
        fi
        sleep 0.1
    done
    warn "LocalStack did not print 'Ready.' within ${timeout} s; last lines of $logfile:"
    tail -n 30 "$logfile" >&2 || true
    localstack_stop
    return 1
}

# After serving a long poll LocalStack ignores SIGTERM and SIGINT, so the grace
# period is short and SIGKILL follows. Its queues live in memory only.
localstack_stop() {
    [[ -n $LOCALSTACK_PID ]] || return 0
    stop_pid "$LOCALSTACK_PID" "${LOCALSTACK_STOP_GRACE:-3}" LocalStack
    info "LocalStack stopped (pid $LOCALSTACK_PID)"
    LOCALSTACK_PID=""
}
