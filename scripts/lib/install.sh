# shellcheck shell=bash
# Installing what the scripts need, idempotently: Debian packages with apt-get,
# Rust with rustup, Python tools in venvs pinned by requirements files.
# Sourced by common.sh.

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

# with_install_lock NAME COMMAND...: runs COMMAND holding the lock NAME, so that
# two runs (scripts/dev and scripts/test at once, or a background build and the
# step waiting for it) never build the same thing on top of each other, while
# different things build side by side. Says so when it has to wait.
with_install_lock() {
    local name=$1
    shift
    mkdir -p "$STATE_DIR"
    if command -v flock >/dev/null 2>&1; then
        (
            if ! flock -n 9; then
                local t0=$EPOCHREALTIME log="$INSTALL_LOG_DIR/$name.log" where=""
                [[ -f $log ]] && where=" (its log: ${log#"$REPO_ROOT"/})"
                info "$name: another install of it is under way; waiting$where"
                flock 9
                info "$name: waited $(elapsed_since "$t0") s"
            fi
            "$@"
        ) 9>"$STATE_DIR/.install-$name.lock"
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
# is run, not just looked up. An interpreter inside a virtualenv (one of ours
# comes first on PATH once a script has put it there) does not count: a venv
# made from it would break when that venv is rebuilt.
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
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13) or sys.prefix != sys.base_prefix)' >/dev/null 2>&1; then
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

# The Python 3.13 every virtualenv is made from, found (and given ensurepip) once:
# exported, so that builds in the background use it and never run apt-get.
venv_python() {
    if [[ -z ${VENV_PYTHON:-} ]]; then
        VENV_PYTHON="$(find_python313)" || die "the Python tools are installed with Python 3.13, and none was found.
  Looked for: \$LOCALSTACK_PYTHON, python3.13 on PATH, ${PYENV_ROOT:-\$HOME/.pyenv}/versions/3.13*/bin, /usr/bin/python3.13.
  Install one, e.g.:  pyenv install 3.13      (any distribution)
                 or:  apt-get install python3.13 python3.13-venv   (Debian 13 / Ubuntu 24.10+)
  or point LOCALSTACK_PYTHON at a python3.13 binary."
        # Debian's python3.13 ships venv's ensurepip in a separate package.
        if ! "$VENV_PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
            [[ $VENV_PYTHON == /usr/bin/python3.13 ]] || die "$VENV_PYTHON cannot create virtualenvs (no ensurepip module)"
            apt_install python3.13-venv
        fi
        export VENV_PYTHON
    fi
    printf '%s\n' "$VENV_PYTHON"
}

# _build_pinned_venv DIR REQUIREMENTS WANT PROGRAM: a Python 3.13 virtualenv holding
# exactly the pinned set, stamped with the hash of the pin file. Runs under the
# install lock; re-checks first, since another run may have just built it.
_build_pinned_venv() {
    local dir=$1 requirements=$2 want=$3 program=$4
    _pinned_venv_current "$dir" "$want" "$program" && return
    local py
    py="$(venv_python)" || exit 1
    local t0=$EPOCHREALTIME
    info "building ${dir#"$REPO_ROOT"/} with $py (pins: ${requirements#"$REPO_ROOT"/}); takes a minute or two"
    # From scratch, so the venv holds exactly the pinned set and nothing left over.
    # --no-compile: byte-compiling every module of botocore and moto took CPU
    # from the build it runs beside; Python compiles what it imports, once.
    rm -rf "$dir"
    "$py" -m venv "$dir"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/bin/python" -m pip install \
        --quiet --progress-bar off --no-compile -r "$requirements"
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
    with_install_lock "${dir##*/}" _build_pinned_venv "$dir" "$requirements" "$want" "$program"
}

# Where the builds started by start_venv_installs write.
INSTALL_LOG_DIR="$STATE_DIR/install-logs"
_BACKGROUND_INSTALLS=()

# start_venv_installs DIR REQUIREMENTS PROGRAM [DIR REQUIREMENTS PROGRAM ...]: starts
# a build of each virtualenv that is not current, in the background, each in a
# session of its own with its output in $INSTALL_LOG_DIR, and returns at once:
# their downloads then overlap each other and whatever runs next. The step that
# needs one calls ensure_pinned_venv as always, which waits on that venv's lock and
# finds it built (or, when the background build failed, builds it again where its
# error shows).
start_venv_installs() {
    venv_python >/dev/null
    mkdir -p "$INSTALL_LOG_DIR"
    while (($# >= 3)); do
        local dir=$1 requirements=$2 program=$3 want
        shift 3
        want="$(sha256sum "$requirements" | cut -d' ' -f1)"
        _pinned_venv_current "$dir" "$want" "$program" && continue
        # shellcheck disable=SC2016 # the inner bash expands its own arguments
        setsid bash -c 'set -euo pipefail; source "$1/common.sh"; shift; ensure_pinned_venv "$@"' _ \
            "$LIB_DIR" "$dir" "$requirements" "$program" >"$INSTALL_LOG_DIR/${dir##*/}.log" 2>&1 </dev/null &
        _BACKGROUND_INSTALLS+=("$!")
        info "building ${dir#"$REPO_ROOT"/} in the background (log: ${INSTALL_LOG_DIR#"$REPO_ROOT"/}/${dir##*/}.log)"
    done
}

# Ends the background builds still running (their sessions, pip with them); an
# unfinished venv has no stamp, so the next run builds it again.
stop_venv_installs() {
    local pid
    for pid in "${_BACKGROUND_INSTALLS[@]}"; do
        if pid_alive "$pid"; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
        wait "$pid" 2>/dev/null || true
    done
    _BACKGROUND_INSTALLS=()
}

# LocalStack runs as `$VENV_DIR/bin/python -m localstack.runtime.main`; its venv
# stays off PATH so that its python3 shadows nothing.
ensure_localstack() {
    ensure_pinned_venv "$VENV_DIR" "$LOCALSTACK_REQUIREMENTS" localstack-supervisor
}

# The same LocalStack with the packages its CloudFormation needs (moto-ext, the SAM
# translator), in a venv of its own: only infra-checks' tests/rehearsal.rs runs it.
ensure_localstack_cfn() {
    ensure_pinned_venv "$LOCALSTACK_CFN_VENV" "$LOCALSTACK_CFN_REQUIREMENTS" localstack-supervisor
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

# The system's side of what every script needs: Debian packages and Rust.
ensure_system() {
    section "Checking and installing prerequisites"
    ensure_tools
    ensure_rust
    ensure_postgres
}

# Everything both scripts need. Each step is idempotent and cheap when done already.
ensure_all() {
    ensure_system
    ensure_localstack
}
