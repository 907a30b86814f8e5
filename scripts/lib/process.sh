# shellcheck shell=bash
# Processes and ports; a script's steps: the time each took, and those run in the background.

# True while $1 runs (a zombie has exited, just not been reaped).
pid_alive() {
    [[ -n $1 ]] && kill -0 "$1" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]
}
# stop_pid PID GRACE NAME: SIGTERM, GRACE seconds, then SIGKILL; reaps our child.
stop_pid() {
    local i
    pid_alive "$1" || return 0
    kill -TERM "$1" 2>/dev/null || true
    for ((i = 0; i < $2 * 10; i++)); do
        pid_alive "$1" || break
        sleep 0.1
    done
    if pid_alive "$1"; then
        info "$3 (pid $1) still running after $2 s: SIGKILL"
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}
# wait_for PID SECONDS LOG COMMAND...: until COMMAND succeeds; fails, with LOG's
# tail, when PID (if any) exits first or the time is over.
wait_for() {
    local pid=$1 seconds=$2 log=$3 i
    shift 3
    for ((i = 0; i < seconds * 10; i++)); do
        "$@" 2>/dev/null && return 0
        [[ -z $pid ]] || pid_alive "$pid" || break
        sleep 0.1
    done
    warn "$(((i < seconds * 10)) && echo "pid $pid exited during start-up" || echo "not ready within $seconds s"); last lines of $log:"
    tail -n 30 "$log" >&2 || true
    return 1
}
# Any Python will do here: LocalStack's, else the system's (scripts/bench has no LocalStack).
port_python() {
    [[ -x $VENV_DIR/bin/python ]] && echo "$VENV_DIR/bin/python" && return
    command -v python3 || die "python3 not found: install it (apt-get install python3)"
}
# free_ports N: N distinct free ports on 127.0.0.1 (two free_port calls may give the same one).
free_ports() { "$(port_python)" -c 'import socket, sys; s = [socket.socket() for _ in range(int(sys.argv[1]))]
[x.bind(("127.0.0.1", 0)) for x in s]; print(*(x.getsockname()[1] for x in s))' "$1"; }
free_port() { # free_port [PORT]: one, or whether PORT is free
    "$(port_python)" -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0))
except OSError:
    sys.exit(1)
print(s.getsockname()[1])' "$@"
}
# require_free_port PORT VAR WHAT: exits naming the holder (when ss can tell) and the way out.
require_free_port() {
    free_port "$1" >/dev/null && return 0
    local holder
    holder="$(ss -Hltnp "sport = :$1" 2>/dev/null | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/ by \1 (pid \2)/p' | head -n 1 || true)"
    die "port $1 (for $3) on 127.0.0.1 is already in use$holder.
  Stop that process, or pick another port: $2=<port> $0"
}
# step_took NAME START [STATUS [END]]: says how long a step took and keeps it for the table.
declare -ga STEP_TIMES=()
step_took() {
    local seconds
    seconds="$(elapsed_since "$2" "${4:-}")"
    info "$1 took $seconds s${3:+, exit status $3}"
    STEP_TIMES+=("$(printf '%-62s %7s s%s' "$1" "$seconds" "${3:+ (exit status $3)}")")
}
# step LABEL COMMAND...: runs it under a section header, and keeps its time.
step() {
    local t0=$EPOCHREALTIME status=0
    section "$1"
    "${@:2}" || status=$?
    step_took "$1" "$t0" "$status"
    return "$status"
}
print_step_times() {
    ((${#STEP_TIMES[@]})) || return 0
    section "Time of each step"
    printf '  %s\n' "${STEP_TIMES[@]}"
}
# start_background [--idle] NAME LABEL COMMAND...: in a session of its own (one
# signal ends all it started), output in $BACKGROUND_DIR/NAME.out. --idle: nice 19,
# and its session's autogroup too, since with autogroups (sched(7)) each session
# gets a fair share whatever its processes' nice.
declare -gA BACKGROUND_PID=() BACKGROUND_START=() BACKGROUND_LABEL=()
start_background() {
    local idle=()
    if [[ $1 == --idle ]]; then
        # shellcheck disable=SC2016 # the inner bash expands its own arguments
        idle=(bash -c '{ printf "19\n" >/proc/self/autogroup; } 2>/dev/null || true; exec nice -n 19 "$@"' _)
        shift
    fi
    BACKGROUND_START[$1]=$EPOCHREALTIME
    BACKGROUND_LABEL[$1]=$2
    setsid "${idle[@]}" "${@:3}" >"$BACKGROUND_DIR/$1.out" 2>&1 </dev/null &
    BACKGROUND_PID[$1]=$!
    info "$2 started in the background (pid $!, output: $BACKGROUND_DIR/$1.out)"
}
# finish_background NAME: waits, prints its output, returns its status.
finish_background() {
    local status=0
    wait "${BACKGROUND_PID[$1]}" || status=$?
    unset "BACKGROUND_PID[$1]"
    section "${BACKGROUND_LABEL[$1]} (ran in the background)"
    cat "$BACKGROUND_DIR/$1.out"
    # It ended with its last line of output, maybe a while ago.
    step_took "${BACKGROUND_LABEL[$1]} (in the background)" "${BACKGROUND_START[$1]}" "$status" \
        "$(stat -c %.1Y "$BACKGROUND_DIR/$1.out")"
    return "$status"
}
# Between steps: a failed background step stops the run now, not at the end.
finish_ended_backgrounds() {
    local name
    for name in "${!BACKGROUND_PID[@]}"; do
        pid_alive "${BACKGROUND_PID[$name]}" || finish_background "$name" || exit
    done
}
# From an EXIT trap: whatever still runs has outlived a failure or a signal.
stop_backgrounds() {
    local name
    for name in "${!BACKGROUND_PID[@]}"; do
        info "stopping ${BACKGROUND_LABEL[$name]} (session ${BACKGROUND_PID[$name]})"
        kill -TERM -- "-${BACKGROUND_PID[$name]}" 2>/dev/null || true
        wait "${BACKGROUND_PID[$name]}" 2>/dev/null || true
    done
}
