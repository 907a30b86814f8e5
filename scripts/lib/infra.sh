# shellcheck shell=bash
# Tools for the Lambda side, sourced after common.sh: cargo-lambda and zig in a
# virtualenv of their own under .dev/, pinned in cargo-lambda-requirements.txt.

CARGO_LAMBDA_VENV="$STATE_DIR/venv-cargo-lambda"
CARGO_LAMBDA_REQUIREMENTS="$REPO_ROOT/scripts/lib/cargo-lambda-requirements.txt"

_build_cargo_lambda_venv() {
    local want=$1 stamp="$CARGO_LAMBDA_VENV/.requirements.sha256"
    if [[ -x $CARGO_LAMBDA_VENV/bin/cargo-lambda && -f $stamp && $(<"$stamp") == "$want" ]]; then
        return
    fi
    local py t0=$EPOCHREALTIME
    py="$(find_python313)" || die "cargo-lambda is installed from PyPI with Python 3.13, and none was found (see the LocalStack message above for how to install it)"
    info "building the cargo-lambda virtualenv in ${CARGO_LAMBDA_VENV#"$REPO_ROOT"/} (pins: ${CARGO_LAMBDA_REQUIREMENTS#"$REPO_ROOT"/})"
    rm -rf "$CARGO_LAMBDA_VENV"
    "$py" -m venv "$CARGO_LAMBDA_VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$CARGO_LAMBDA_VENV/bin/python" -m pip install \
        --quiet --progress-bar off -r "$CARGO_LAMBDA_REQUIREMENTS"
    printf '%s\n' "$want" >"$stamp"
    info "cargo-lambda virtualenv ready in $(elapsed_since "$t0") s"
}

# Installs cargo-lambda and zig if missing and puts them on PATH (`cargo lambda …`).
ensure_cargo_lambda() {
    local want
    want="$(sha256sum "$CARGO_LAMBDA_REQUIREMENTS" | cut -d' ' -f1)"
    if ! [[ -x $CARGO_LAMBDA_VENV/bin/cargo-lambda && -f $CARGO_LAMBDA_VENV/.requirements.sha256 &&
        $(<"$CARGO_LAMBDA_VENV/.requirements.sha256") == "$want" ]]; then
        with_install_lock _build_cargo_lambda_venv "$want"
    fi
    export PATH="$CARGO_LAMBDA_VENV/bin:$PATH"
    info "cargo-lambda: $(cargo lambda --version 2>/dev/null || echo 'not working')"
}
