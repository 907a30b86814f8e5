# shellcheck shell=bash
# Our own LocalStack on 127.0.0.1: its SQS only (localstack_start), or its
# CloudFormation and what the template needs, for the `sam deploy` rehearsal.
LOCALSTACK_PID=""
# _localstack_launch WHAT PYTHON STATEDIR PORT LOGFILE [NAME=VALUE...]: sets
# LOCALSTACK_PID and waits for "Ready." in the log. GATEWAY_LISTEN binds loopback
# only (hypercorn honours its host); LOCALSTACK_HOST gives queue URLs an address
# without DNS; FILESYSTEM_ROOT and OVERRIDE_IN_DOCKER keep it out of
# /var/lib/localstack in a container; no internet for its TLS test certificate.
_localstack_launch() {
    local what=$1 python=$2 dir=$3 port=$4 logfile=$5 t0=$EPOCHREALTIME
    shift 5
    mkdir -p "$dir"
    : >"$logfile"
    env GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" \
        DNS_ADDRESS=0 SQS_ENDPOINT_STRATEGY=path EAGER_SERVICE_LOADING=1 DISABLE_EVENTS=1 \
        OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$dir" SKIP_SSL_CERT_DOWNLOAD=1 "$@" \
        setsid "$python" -m localstack.runtime.main >"$logfile" 2>&1 </dev/null &
    LOCALSTACK_PID=$!
    if ! wait_for "$LOCALSTACK_PID" "${LOCALSTACK_START_TIMEOUT:-60}" "$logfile" grep -q '^Ready\.' "$logfile"; then
        localstack_stop
        return 1
    fi
    info "LocalStack ($what) ready on 127.0.0.1:$port in $(elapsed_since "$t0") s (pid $LOCALSTACK_PID, log: $logfile)"
}
# localstack_start STATEDIR PORT LOGFILE
localstack_start() { _localstack_launch SQS "$VENV_DIR/bin/python" "$@" SERVICES=sqs; }
# localstack_cfn_start STATEDIR PORT LOGFILE: what the template creates or reads
# and what sam deploy calls. The default engine (v2) refuses the template's change
# set ("Unresolved resource dependencies [ConsumerFunctionOrders]"); the legacy one
# creates what it can.
localstack_cfn_start() {
    _localstack_launch CloudFormation "$LOCALSTACK_CFN_VENV/bin/python" "$@" PROVIDER_OVERRIDE_CLOUDFORMATION=engine-legacy \
        SERVICES=cloudformation,s3,iam,sts,lambda,logs,secretsmanager,ssm,ec2,sqs,sns,events,cloudwatch
}
# After a long poll LocalStack ignores SIGTERM: a short grace, then SIGKILL.
localstack_stop() {
    [[ -n $LOCALSTACK_PID ]] || return 0
    stop_pid "$LOCALSTACK_PID" "${LOCALSTACK_STOP_GRACE:-3}" LocalStack
    info "LocalStack stopped (pid $LOCALSTACK_PID)"
    LOCALSTACK_PID=""
}
# sqs_create_queue ENDPOINT NAME: prints the new queue's URL.
sqs_create_queue() {
    "$VENV_DIR/bin/python" -c 'import boto3, sys
sqs = boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
print(sqs.create_queue(QueueName=sys.argv[2])["QueueUrl"])' "$1" "$2"
}
