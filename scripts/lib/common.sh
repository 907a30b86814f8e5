# shellcheck shell=bash
# Shared by every script: paths, output, and (from the files beside it, one job
# each) installing what is missing, processes and ports, and starting and stopping
# our own PostgreSQL and LocalStack. Source it; it defines functions and a few
# variables and starts nothing by itself.
#
# Everything here runs the real servers as plain processes (no Docker, no systemd),
# bound to 127.0.0.1, and stops only the processes it started, by PID.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE_DIR="$REPO_ROOT/.dev"          # git-ignored; everything we create lives here
VENV_DIR="$STATE_DIR/venv"
LOCALSTACK_REQUIREMENTS="$REPO_ROOT/scripts/lib/localstack-requirements.txt"
# LocalStack with its CloudFormation, for the rehearsal of `sam deploy` only.
LOCALSTACK_CFN_VENV="$STATE_DIR/venv-localstack-cfn"
LOCALSTACK_CFN_REQUIREMENTS="$REPO_ROOT/scripts/lib/localstack-cfn-requirements.txt"

# --- output ------------------------------------------------------------------

# Section headers make the failing phase obvious in a CI log.
section() { printf '\n==== %s ====\n' "$*"; }
info() { printf '  %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
# The running script's header comment, every line of it (line 2 up to the
# first line that is not a comment), for -h/--help: the header is the manual.
usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Seconds since $1 (an $EPOCHREALTIME value), for "ready in 2.1 s" messages; until
# $2 instead of now when given.
elapsed_since() {
    local start=$1 end=${2:-$EPOCHREALTIME}
    awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }'
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# The pinned virtualenvs are installed without byte-code, for Python to compile
# what it imports once, into .dev/: a PYTHONDONTWRITEBYTECODE=1 from the
# environment (CI images set it) would have every start of aws, sam, cfn-lint or
# LocalStack compile botocore again.
unset PYTHONDONTWRITEBYTECODE

LIB_DIR="$REPO_ROOT/scripts/lib"
# shellcheck source=scripts/lib/install.sh
source "$LIB_DIR/install.sh"
# shellcheck source=scripts/lib/process.sh
source "$LIB_DIR/process.sh"
# shellcheck source=scripts/lib/postgres.sh
source "$LIB_DIR/postgres.sh"
# shellcheck source=scripts/lib/localstack.sh
source "$LIB_DIR/localstack.sh"
