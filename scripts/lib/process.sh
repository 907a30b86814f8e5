# shellcheck shell=bash
# Processes and ports: is a PID alive, stop one we started, find a free port; and
# a script's steps: the time each took, and those that run in the background.
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

# --- steps: their time, and the background ones -----------------------------------

# "NAME  SECONDS s" per step, in the order they ended, for the table at the end.
declare -ga STEP_TIMES=()
# step_took NAME START [STATUS [END]]: says how long step NAME took from START to
# END (both $EPOCHREALTIME-like values; END is now by default), and keeps it for
# the table.
step_took() {
    local name=$1 seconds
    seconds="$(elapsed_since "$2" "${4:-}")"
    info "$name took $seconds s${3:+, exit status $3}"
    STEP_TIMES+=("$(printf '%-62s %7s s%s' "$name" "$seconds" "${3:+ (exit status $3)}")")
}

# Steps that mostly wait, or need only the CPU the others leave idle, run in the
# background: each in a session of its own (so that one signal ends all it started),
# its output in $BACKGROUND_DIR/NAME.out (the caller sets BACKGROUND_DIR), printed
# when it ends.
declare -gA BACKGROUND_PID=() BACKGROUND_START=() BACKGROUND_LABEL=()
# start_background [--idle] NAME LABEL COMMAND...
#   --idle  at nice 19, and its session's autogroup too: with autogroups on
#           (sched(7), /proc/sys/kernel/sched_autogroup_enabled), each session
#           gets a fair share of the CPU whatever its processes' nice, so only
#           the autogroup's own nice (/proc/self/autogroup) makes it yield.
start_background() {
    local idle=()
    if [[ $1 == --idle ]]; then
        # shellcheck disable=SC2016 # the inner bash expands its own arguments
        idle=(bash -c '{ printf "19\n" >/proc/self/autogroup; } 2>/dev/null || true; exec nice -n 19 "$@"' _)
        shift
    fi
    local name=$1 label=$2
    shift 2
    BACKGROUND_START[$name]=$EPOCHREALTIME
    BACKGROUND_LABEL[$name]=$label
    setsid "${idle[@]}" "$@" >"$BACKGROUND_DIR/$name.out" 2>&1 </dev/null &
    BACKGROUND_PID[$name]=$!
    info "$label started in the background (pid $!, output: $BACKGROUND_DIR/$name.out)"
}
# finish_background NAME: waits for it, prints its output, and returns its status.
finish_background() {
    local name=$1 status=0 ended
    wait "${BACKGROUND_PID[$name]}" || status=$?
    unset "BACKGROUND_PID[$name]"
    # It ended with its output's last line, which may be a while before this.
    ended="$(stat -c %.1Y "$BACKGROUND_DIR/$name.out")"
    section "${BACKGROUND_LABEL[$name]} (ran in the background)"
    cat "$BACKGROUND_DIR/$name.out"
    step_took "${BACKGROUND_LABEL[$name]} (in the background)" "${BACKGROUND_START[$name]}" "$status" "$ended"
    return "$status"
}
# Between steps: a background step that has ended is reported, and stops the run
# if it failed, rather than at the end.
finish_ended_backgrounds() {
    local name
    for name in "${!BACKGROUND_PID[@]}"; do
        pid_alive "${BACKGROUND_PID[$name]}" && continue
        finish_background "$name" || exit
    done
}
# From an EXIT trap: whatever still runs has outlived a failure or a signal.
stop_backgrounds() {
    local name pid
    for name in "${!BACKGROUND_PID[@]}"; do
        pid=${BACKGROUND_PID[$name]}
        info "stopping ${BACKGROUND_LABEL[$name]} (session $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

# The table of every step's time, for the end of a run.
print_step_times() {
    ((${#STEP_TIMES[@]})) || return 0
    section "Time of each step"
    printf '  %s\n' "${STEP_TIMES[@]}"
}
