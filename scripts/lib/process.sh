# shellcheck shell=bash
# Processes and ports: is a PID alive, stop one we started, find a free port.
# Sourced by common.sh.

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
