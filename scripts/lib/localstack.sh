# shellcheck shell=bash
# Our own LocalStack, started as a plain process bound to 127.0.0.1: its SQS
# provider only (localstack_start), or its CloudFormation and the services the
# template needs, for the rehearsal of `sam deploy` (localstack_cfn_start).
# Sourced by common.sh.

LOCALSTACK_PID=""

# _localstack_launch WHAT PYTHON STATEDIR PORT LOGFILE [NAME=VALUE...]: starts
# LocalStack with PYTHON bound to 127.0.0.1:PORT, with the settings both kinds
# share and then the given ones; sets LOCALSTACK_PID and waits for "Ready." in
# the log. WHAT names it in messages.
_localstack_launch() {
    local what=$1 python=$2 dir=$3 port=$4 logfile=$5 timeout=${LOCALSTACK_START_TIMEOUT:-60}
    shift 5
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
        EAGER_SERVICE_LOADING=1 \
        DISABLE_EVENTS=1 \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$dir" \
        SKIP_SSL_CERT_DOWNLOAD=1 \
        "$@" \
        setsid "$python" -m localstack.runtime.main >"$logfile" 2>&1 </dev/null &
    LOCALSTACK_PID=$!
    local i
    for ((i = 0; i < timeout * 10; i++)); do
        if grep -q '^Ready\.' "$logfile"; then
            info "LocalStack ($what) ready on 127.0.0.1:$port in $(elapsed_since "$t0") s (pid $LOCALSTACK_PID, log: $logfile)"
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

# localstack_start STATEDIR PORT LOGFILE: starts LocalStack's SQS provider bound to
# 127.0.0.1:PORT, sets LOCALSTACK_PID and waits for "Ready." in the log.
localstack_start() {
    _localstack_launch SQS "$VENV_DIR/bin/python" "$1" "$2" "$3" SERVICES=sqs
}

# The services infra/template.yaml creates or reads during a deploy, and those sam
# deploy calls itself (S3 for the artefacts, STS, CloudFormation).
LOCALSTACK_CFN_SERVICES=cloudformation,s3,iam,sts,lambda,logs,secretsmanager,ssm,ec2,sqs,sns,events,cloudwatch

# localstack_cfn_start STATEDIR PORT LOGFILE: LocalStack (.dev/venv-localstack-cfn)
# with CloudFormation's legacy engine and LOCALSTACK_CFN_SERVICES, as
# localstack_start does. The default engine (v2) refuses the template's change set
# (now "Unresolved resource dependencies [ConsumerFunctionOrders]", the event
# source mapping SAM's transform adds; before, "Fn::Select requires a list
# argument"); the legacy one creates what it can and skips the types it lacks.
localstack_cfn_start() {
    _localstack_launch CloudFormation "$LOCALSTACK_CFN_VENV/bin/python" "$1" "$2" "$3" \
        SERVICES="$LOCALSTACK_CFN_SERVICES" \
        PROVIDER_OVERRIDE_CLOUDFORMATION=engine-legacy
}

# After serving a long poll LocalStack ignores SIGTERM and SIGINT, so the grace
# period is short and SIGKILL follows. Its queues live in memory only.
localstack_stop() {
    [[ -n $LOCALSTACK_PID ]] || return 0
    stop_pid "$LOCALSTACK_PID" "${LOCALSTACK_STOP_GRACE:-3}" LocalStack
    info "LocalStack stopped (pid $LOCALSTACK_PID)"
    LOCALSTACK_PID=""
}
