# shellcheck shell=bash
# The Lambda and AWS side, sourced after common.sh; each tool in a pinned venv under
# .dev/: cargo-lambda and zig; sam, cfn-lint and the AWS CLI v1; checkov.
CARGO_LAMBDA_VENV="$STATE_DIR/venv-cargo-lambda"
CARGO_LAMBDA_REQUIREMENTS="$LIB_DIR/cargo-lambda-requirements.txt"
SAM_VENV="$STATE_DIR/venv-sam"
SAM_REQUIREMENTS="$LIB_DIR/sam-requirements.txt"
CHECKOV_VENV="$STATE_DIR/venv-checkov"
CHECKOV_REQUIREMENTS="$LIB_DIR/checkov-requirements.txt"
# sam looks for samconfig.toml beside --template-file and resolves a relative
# --config-file from there too: every sam command gets this absolute path.
SAM_CONFIG_FILE="$REPO_ROOT/samconfig.toml"
# sam build's and the cross-build's output: under .dev/, apart from target/ so host
# and Lambda builds never invalidate each other.
SAM_WORK_DIR="$STATE_DIR/sam"
DEPLOY_DIR="$STATE_DIR/deploy"
# CaBundleLayer's ContentUri in infra/template.yaml; mounted at /opt (DB_CA_BUNDLE).
CA_BUNDLE_IN_LAYER="$DEPLOY_DIR/ca-layer/rds-ca/ca-bundle.pem"
# ensure_tool_venv DIR REQUIREMENTS PROGRAM: the venv, its bin/ first on PATH.
ensure_tool_venv() {
    ensure_pinned_venv "$@"
    export PATH="$1/bin:$PATH"
}
ensure_cargo_lambda() {
    ensure_tool_venv "$CARGO_LAMBDA_VENV" "$CARGO_LAMBDA_REQUIREMENTS" cargo-lambda
    info "cargo-lambda: $(cargo lambda --version 2>&1)"
}
ensure_checkov() { ensure_tool_venv "$CHECKOV_VENV" "$CHECKOV_REQUIREMENTS" checkov; }
# No telemetry, and no instance-metadata lookups: never reach AWS by accident.
ensure_sam_cli() {
    ensure_tool_venv "$SAM_VENV" "$SAM_REQUIREMENTS" sam
    export SAM_CLI_TELEMETRY=0 AWS_EC2_METADATA_DISABLED=true
}
# sam_deploy_stack PACKAGED STACK [sam deploy options...], as scripts/deploy runs it;
# samconfig.toml's deploy section applies, and --guided saves its answers there.
sam_deploy_stack() {
    sam deploy --config-file "$SAM_CONFIG_FILE" --template-file "$1" --stack-name "$2" \
        --resolve-s3 --s3-prefix "$2" --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset "${@:3}"
}
# The machine an ELF file is built for (aarch64, x86-64), from its header's e_machine.
elf_machine() {
    local m
    [[ $(od -An -tx1 -N4 "$1" | tr -d ' \n') == 7f454c46 ]] || { echo not-elf && return; }
    m="$(od -An -tu2 -j18 -N2 --endian=little "$1" | tr -d ' ')"
    case $m in 183) echo aarch64 ;; 62) echo x86-64 ;; *) echo "machine-$m" ;; esac
}
