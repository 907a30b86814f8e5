# shellcheck shell=bash
# Our own LocalStack (its SQS provider only), started as a plain process bound
# to 127.0.0.1. Sourced by common.sh.

LOCALSTACK_PID=""

# localstack_start STATEDIR PORT LOGFILE: starts LocalStack's SQS provider bound to
# 127.0.0.1:PORT, sets LOCALSTACK_PID and waits for "Ready." in the log.
localstack_start() {
    local dir=$1 port=$2 logfile=$3 timeout=${LOCALSTACK_START_TIMEOUT:-60}
    mkdir -p "$dir"
    : >"$logfile"
    local t0=$EPOCHREALTIME
    # Why each setting: hypercorn honours the host in GATEWAY_LISTEN (the
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
