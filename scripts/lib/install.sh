# shellcheck shell=bash
# Installs what the scripts need, idempotently: Debian packages, Rust components,
# Python tools in virtualenvs pinned by requirements files.
_APT_UPDATED=0
apt_install() {
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 || die "need root to install $*; run: apt-get update && apt-get install -y $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these packages with your system's package manager: $*"
    if ((!_APT_UPDATED)); then # a fresh machine has no package lists yet
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _APT_UPDATED=1
    fi
    info "apt-get install -y $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
# need_packages COMMAND_OR_PATH:PACKAGE...: installs the packages whose command (or path) is missing.
need_packages() {
    local pair missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -e ${pair%%:*} ]] || missing+=("${pair#*:}")
    done
    ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}
# with_install_lock NAME COMMAND...: two runs (scripts/dev and scripts/test, or a
# background build and the step that needs it) never build the same thing at once.
with_install_lock() {
    local name=$1
    shift
    mkdir -p "$STATE_DIR"
    (
        if ! flock -n 9; then
            info "$name: another install of it is under way (log: ${INSTALL_LOG_DIR#"$REPO_ROOT"/}/$name.log); waiting"
            flock 9
        fi
        "$@"
    ) 9>"$STATE_DIR/.install-$name.lock"
}
ensure_rust() {
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 && return
    command -v rustup >/dev/null 2>&1 || die "cargo fmt / cargo clippy missing and rustup not found: install rustfmt and clippy"
    rustup component add rustfmt clippy
}
ensure_postgres() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || apt_install postgresql
    # The highest installed major version (Debian keeps one bin dir per major).
    PG_BINDIR="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    export PG_BINDIR
    [[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/pg_ctl ]] || die "incomplete PostgreSQL install in $PG_BINDIR (need initdb, pg_ctl)"
    ! is_root || id -u postgres >/dev/null 2>&1 ||
        die "running as root but there is no 'postgres' user to run the server as (Debian's postgresql package creates it)"
    info "PostgreSQL: $("$PG_BINDIR/postgres" --version)"
}
# curl polls health endpoints, ss names who holds a port, openssl makes test CAs.
ensure_tools() { need_packages curl:curl ss:iproute2 openssl:openssl; }
# A working Python 3.13 that is not inside a virtualenv (a venv made from one
# breaks when that one is rebuilt). Candidates are run, not looked up: a pyenv
# shim can exist and fail. Free-threaded builds (3.13.0t) lack wheels.
find_python313() {
    local c
    for c in ${LOCALSTACK_PYTHON:-} "$(command -v python3.13 2>/dev/null)" \
        $(printf '%s\n' "${PYENV_ROOT:-${HOME:-/root}/.pyenv}"/versions/3.13*/bin/python3.13 | grep -v 't/bin/' | sort -rV) \
        /usr/bin/python3.13 /usr/local/bin/python3.13; do
        [[ -x $c ]] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13) or sys.prefix != sys.base_prefix)' 2>/dev/null &&
            printf '%s\n' "$c" && return 0
    done
    return 1
}
# The Python every venv is made from, found once and exported for background builds.
venv_python() {
    if [[ -z ${VENV_PYTHON:-} ]]; then
        VENV_PYTHON="$(find_python313)" || die "the Python tools need Python 3.13, and none was found (looked at \$LOCALSTACK_PYTHON, python3.13 on PATH, pyenv's versions, /usr/bin).
  Install one (pyenv install 3.13, or apt-get install python3.13 python3.13-venv), or point LOCALSTACK_PYTHON at it."
        if ! "$VENV_PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then # Debian ships it apart
            [[ $VENV_PYTHON == /usr/bin/python3.13 ]] || die "$VENV_PYTHON cannot create virtualenvs (no ensurepip module)"
            apt_install python3.13-venv
        fi
        export VENV_PYTHON
    fi
    printf '%s\n' "$VENV_PYTHON"
}
# Whether DIR is a working venv with PROGRAM, built from the pins whose hash is WANT.
_pinned_venv_current() {
    [[ -x $1/bin/$3 && -f $1/.requirements.sha256 && $(<"$1/.requirements.sha256") == "$2" ]] &&
        "$1/bin/python" -c '' >/dev/null 2>&1
}
# Under the install lock; re-checks first, as another run may have just built it.
# From scratch, so it holds exactly the pins; --no-compile leaves the CPU to the
# build beside it.
_build_pinned_venv() {
    local dir=$1 requirements=$2 want=$3 py t0=$EPOCHREALTIME
    _pinned_venv_current "$dir" "$want" "$4" && return
    py="$(venv_python)" || exit 1
    info "building ${dir#"$REPO_ROOT"/} (pins: ${requirements#"$REPO_ROOT"/}); takes a minute or two"
    rm -rf "$dir"
    "$py" -m venv "$dir"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install --quiet --progress-bar off --no-compile -r "$requirements"
    printf '%s\n' "$want" >"$dir/.requirements.sha256"
    info "${dir#"$REPO_ROOT"/} ready in $(elapsed_since "$t0") s"
}
# ensure_pinned_venv DIR REQUIREMENTS PROGRAM: (re)builds the venv when it is
# missing, broken, or its pin file changed.
ensure_pinned_venv() {
    local want
    want="$(sha256sum "$2" | cut -d' ' -f1)"
    _pinned_venv_current "$1" "$want" "$3" && return
    with_install_lock "${1##*/}" _build_pinned_venv "$1" "$2" "$want" "$3"
}
INSTALL_LOG_DIR="$STATE_DIR/install-logs"
_BACKGROUND_INSTALLS=()
# start_venv_installs (DIR REQUIREMENTS PROGRAM)...: builds the venvs that are not
# current in the background, each in a session of its own, so their downloads
# overlap; the step that needs one calls ensure_pinned_venv, which waits on its
# lock (and, should the background build have failed, builds it where it shows).
start_venv_installs() {
    venv_python >/dev/null
    mkdir -p "$INSTALL_LOG_DIR"
    while (($# >= 3)); do
        # shellcheck disable=SC2016 # the inner bash expands its own arguments
        setsid bash -c 'set -euo pipefail; source "$1/common.sh"; shift; ensure_pinned_venv "$@"' _ \
            "$LIB_DIR" "$1" "$2" "$3" >"$INSTALL_LOG_DIR/${1##*/}.log" 2>&1 </dev/null &
        _BACKGROUND_INSTALLS+=("$!")
        shift 3
    done
}
# An unfinished venv has no stamp: the next run builds it again.
stop_venv_installs() {
    local pid
    for pid in "${_BACKGROUND_INSTALLS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    _BACKGROUND_INSTALLS=()
}
# LocalStack runs as `$VENV_DIR/bin/python -m localstack.runtime.main`, off PATH.
ensure_localstack() { ensure_pinned_venv "$VENV_DIR" "$LOCALSTACK_REQUIREMENTS" localstack-supervisor; }
ensure_localstack_cfn() { ensure_pinned_venv "$LOCALSTACK_CFN_VENV" "$LOCALSTACK_CFN_REQUIREMENTS" localstack-supervisor; }
# The browser tests drive Debian's chromium; fonts-liberation keeps screenshots alike.
ensure_chromium() {
    need_packages chromium:chromium chromedriver:chromium-driver /usr/share/fonts/truetype/liberation:fonts-liberation
}
ensure_system() {
    section "Checking and installing prerequisites"
    ensure_tools
    ensure_rust
    ensure_postgres
}
