# shellcheck shell=bash
# Sourced by every script: paths, output, and (from the files beside it) installs,
# processes, PostgreSQL and LocalStack. Starts nothing by itself; the servers run as
# plain processes on 127.0.0.1, and only what a script started is stopped, by PID.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="$REPO_ROOT/.dev" # git-ignored; everything we create lives here
LIB_DIR="$REPO_ROOT/scripts/lib"
VENV_DIR="$STATE_DIR/venv"
LOCALSTACK_REQUIREMENTS="$LIB_DIR/localstack-requirements.txt"
# LocalStack with its CloudFormation, for the rehearsal of `sam deploy` only.
LOCALSTACK_CFN_VENV="$STATE_DIR/venv-localstack-cfn"
LOCALSTACK_CFN_REQUIREMENTS="$LIB_DIR/localstack-cfn-requirements.txt"
section() { printf '\n==== %s ====\n' "$*"; }
info() { printf '  %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
# -h/--help: the running script's header comment is its manual.
usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
# Seconds from $1 to $2 (default now), both $EPOCHREALTIME values.
elapsed_since() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.1f", b - a }'; }
is_root() { [[ $(id -u) -eq 0 ]]; }
# at_exit FUNCTION: runs it once on exit, the status in EXIT_STATUS; INT and TERM exit too.
at_exit() {
    trap "EXIT_STATUS=\$?; trap - EXIT INT TERM; $1; exit \$EXIT_STATUS" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
# The venvs are installed without byte-code; a CI's PYTHONDONTWRITEBYTECODE=1 would
# have every start of aws, sam or LocalStack compile botocore again.
unset PYTHONDONTWRITEBYTECODE
# shellcheck source=scripts/lib/install.sh
source "$LIB_DIR/install.sh"
# shellcheck source=scripts/lib/process.sh
source "$LIB_DIR/process.sh"
# shellcheck source=scripts/lib/postgres.sh
source "$LIB_DIR/postgres.sh"
# shellcheck source=scripts/lib/localstack.sh
source "$LIB_DIR/localstack.sh"
