# shellcheck shell=bash
# Tools for the Lambda and AWS side, sourced after common.sh, each in a pinned
# virtualenv of its own under .dev/: cargo-lambda and zig; sam and cfn-lint; checkov.

CARGO_LAMBDA_VENV="$STATE_DIR/venv-cargo-lambda"
CARGO_LAMBDA_REQUIREMENTS="$REPO_ROOT/scripts/lib/cargo-lambda-requirements.txt"

# Installs cargo-lambda and zig if missing and puts them on PATH (`cargo lambda …`).
ensure_cargo_lambda() {
    _ensure_pinned_venv "$CARGO_LAMBDA_VENV" "$CARGO_LAMBDA_REQUIREMENTS" cargo-lambda
    info "cargo-lambda: $(cargo lambda --version 2>/dev/null || echo 'not working')"
}

# --- pinned virtualenvs; SAM, cfn-lint, checkov (scripts/check-infra, scripts/deploy) ---

SAM_VENV="$STATE_DIR/venv-sam"
SAM_REQUIREMENTS="$REPO_ROOT/scripts/lib/sam-requirements.txt"
CHECKOV_VENV="$STATE_DIR/venv-checkov"
CHECKOV_REQUIREMENTS="$REPO_ROOT/scripts/lib/checkov-requirements.txt"

# _ensure_pinned_venv DIR REQUIREMENTS PROGRAM: ensure_pinned_venv (common.sh),
# then its bin/ on PATH.
_ensure_pinned_venv() {
    ensure_pinned_venv "$@"
    export PATH="$1/bin:$PATH"
}

# Never reach AWS by accident: no telemetry, and no instance-metadata lookups
# when the SDKs look for credentials or a region.
sam_offline_env() {
    export SAM_CLI_TELEMETRY=0
    export AWS_EC2_METADATA_DISABLED=true
}

# The repository's SAM configuration (docs/deploy.md, "Deploy to AWS"). sam looks for
# samconfig.toml beside --template-file, and resolves a relative --config-file
# from there too, so it is passed by its absolute path to every sam command run
# on a template elsewhere (infra/, .dev/sam/, .dev/deploy/).
SAM_CONFIG_FILE="$REPO_ROOT/samconfig.toml"

# sam deploy of a packaged template, as scripts/deploy runs it:
#   sam_deploy_stack PACKAGED STACK [sam deploy options: region, overrides, ...]
# samconfig.toml's deploy section applies (confirm_changeset among them), and
# --guided saves its answers there.
sam_deploy_stack() {
    local packaged=$1 stack=$2
    shift 2
    sam deploy --config-file "$SAM_CONFIG_FILE" --template-file "$packaged" --stack-name "$stack" \
        --resolve-s3 --s3-prefix "$stack" --capabilities CAPABILITY_IAM \
        --no-fail-on-empty-changeset "$@"
}

# sam, cfn-lint (+ serverless rules) and the AWS CLI v1, on PATH.
ensure_sam_cli() {
    _ensure_pinned_venv "$SAM_VENV" "$SAM_REQUIREMENTS" sam
    sam_offline_env
    info "sam: $(sam --version 2>/dev/null || echo 'not working'); cfn-lint: $(cfn-lint --version 2>/dev/null || echo 'not working')"
}

ensure_checkov() {
    _ensure_pinned_venv "$CHECKOV_VENV" "$CHECKOV_REQUIREMENTS" checkov
    info "checkov: $(checkov --version 2>/dev/null || echo 'not working')"
}

# The Rust target triple for a Lambda/EC2 architecture name (arm64 or x86_64).
rust_target_for() {
    case $1 in
    arm64) echo aarch64-unknown-linux-gnu ;;
    x86_64) echo x86_64-unknown-linux-gnu ;;
    *) die "unknown architecture '$1' (arm64 or x86_64)" ;;
    esac
}

# rustup target add, only when the standard library for that target is missing.
ensure_rust_target() {
    local target=$1
    if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        info "Rust target $target: present"
        return
    fi
    command -v rustup >/dev/null 2>&1 ||
        die "the Rust target $target is missing and rustup was not found: install the standard library for $target"
    info "rustup target add $target"
    with_install_lock rustup rustup target add "$target"
}

# The machine an ELF file is built for, as `file` would name it (aarch64, x86-64),
# read from the header so that no extra tool is needed.
elf_machine() {
    local magic machine
    magic="$(od -An -tx1 -N4 "$1" | tr -d ' \n')"
    [[ $magic == 7f454c46 ]] || {
        echo "not-elf"
        return
    }
    # e_machine: two little-endian bytes at offset 18.
    machine="$(od -An -tu2 -j18 -N2 --endian=little "$1" | tr -d ' ')"
    case $machine in
    183) echo aarch64 ;;
    62) echo x86-64 ;;
    *) echo "machine-$machine" ;;
    esac
}

# Where sam build and the producer's cross-build put their output: under .dev/,
# never in the crates (a build there would dirty the source tree),
# and apart from target/ so host and Lambda builds never invalidate each other.
# (These are used by scripts/deploy and scripts/check-infra, hence SC2034.)
# shellcheck disable=SC2034
SAM_WORK_DIR="$STATE_DIR/sam"
DEPLOY_DIR="$STATE_DIR/deploy"
# Must match CaBundleLayer's ContentUri in infra/template.yaml; the layer mounts it
# at /opt, and the consumer's DB_CA_BUNDLE is /opt/rds-ca/ca-bundle.pem.
CA_LAYER_DIR="$DEPLOY_DIR/ca-layer"
# shellcheck disable=SC2034
CA_BUNDLE_IN_LAYER="$CA_LAYER_DIR/rds-ca/ca-bundle.pem"
