//! `scripts/deploy`'s checks of a deployed stack, against stand-ins. No AWS
//! account is reachable here, so `aws` and `curl` are stand-ins on PATH that
//! answer what AWS and the load balancer would; the checks' own logic (what they
//! ask, what they accept, what they name when it fails) runs for real.

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const STUB_AWS: &str = r#"#!/usr/bin/env bash
# Answers scripts/deploy's AWS CLI calls from STUB_* variables.
echo "aws $*" >>"$STUB_LOG"
case "$1 $2" in
"sts get-caller-identity") echo "123456789012 arn:aws:iam::123456789012:user/test" ;;
"configure get") echo eu-west-1 ;;
"cloudformation describe-stacks") echo "http://orders-alb.example" ;;
"cloudformation describe-stack-resource")
    case "$*" in
    *DatabaseProxy*) echo demo-proxy ;;
    *ConsumerLogGroup*) echo /aws/lambda/demo-consumer ;;
    esac
    ;;
"rds describe-db-proxy-targets") printf '%s\t%s\t%s\n' "$STUB_PROXY_STATE" "$STUB_PROXY_REASON" "$STUB_PROXY_DESCRIPTION" ;;
"logs filter-log-events")
    pattern=""
    while (($#)); do
        [[ $1 == --filter-pattern ]] && pattern=$2
        shift
    done
    id=${pattern//\"/}
    [[ -n $STUB_CONSUMER_SAYS ]] && echo "{\"level\":\"INFO\",\"fields\":{\"message\":\"$STUB_CONSUMER_SAYS\"},\"span\":{\"order_id\":\"$id\",\"name\":\"record\"}}"
    ;;
*) echo "stub aws: unexpected call: $*" >&2; exit 2 ;;
esac
"#;

const STUB_CURL: &str = r#"#!/usr/bin/env bash
# Answers scripts/deploy's curl calls: prints the status for -w, writes a body to -o.
echo "curl $*" >>"$STUB_LOG"
out=/dev/null url=""
while (($#)); do
    case $1 in
    -o) out=$2; shift ;;
    -w | --max-time | -X | -H | -d) shift ;;
    http*) url=$1 ;;
    esac
    shift
done
case $url in
*/readyz) printf '%s' "$STUB_READYZ" ;;
*/orders)
    echo '{"order_id":"x","message_id":"m-1"}' >"$out"
    printf '%s' "$STUB_ORDERS"
    ;;
esac
"#;

/// Runs `scripts/deploy --verify` with the stand-ins and these answers; its exit
/// status, its output (both streams) and the calls it made.
fn verify_with(answers: &[(&str, &str)]) -> (bool, String, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "deploy-verify-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, script) in [("aws", STUB_AWS), ("curl", STUB_CURL)] {
        let path = dir.join(name);
        std::fs::write(&path, script).expect("stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let log = dir.join("calls.log");
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = std::process::Command::new(format!("{REPO}/scripts/deploy"));
    command
        .args(["--verify", "--stack-name", "demo", "--region", "eu-west-1"])
        .env("PATH", path)
        .env("STUB_LOG", &log)
        // Nothing to wait for: a stand-in answers the same every time.
        .env("PROXY_TARGET_WAIT_S", "0")
        .env("READYZ_WAIT_S", "0")
        .env("CANARY_WAIT_S", "0");
    for (key, value) in answers {
        command.env(key, value);
    }
    let output = command.output().expect("scripts/deploy runs");
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text, calls)
}

const A_WORKING_STACK: &[(&str, &str)] = &[
    ("STUB_PROXY_STATE", "AVAILABLE"),
    ("STUB_PROXY_REASON", "None"),
    ("STUB_PROXY_DESCRIPTION", "None"),
    ("STUB_READYZ", "200"),
    ("STUB_ORDERS", "202"),
    ("STUB_CONSUMER_SAYS", "order stored"),
];

fn with(changes: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    A_WORKING_STACK
        .iter()
        .map(|(k, v)| {
            changes
                .iter()
                .find(|(ck, _)| ck == k)
                .map_or((*k, *v), |(ck, cv)| (*ck, *cv))
        })
        .collect()
}

#[test]
fn deploy_verify_passes_a_stack_whose_proxy_producer_and_consumer_work_and_says_what_it_checked() {
    let (ok, output, calls) = verify_with(A_WORKING_STACK);
    assert!(
        ok,
        "scripts/deploy --verify failed on a working stack:\n{output}"
    );
    for line in [
        "ok: RDS Proxy's target is AVAILABLE",
        "ok: /readyz answered 200 through the load balancer",
        "ok: the consumer stored canary order",
        "all 3 checks passed",
    ] {
        assert!(output.contains(line), "no `{line}` in:\n{output}");
    }
    for call in [
        "aws rds describe-db-proxy-targets --db-proxy-name demo-proxy",
        "curl -sS -o /dev/null -w %{http_code} --max-time 10 http://orders-alb.example/readyz",
        "http://orders-alb.example/orders",
        "aws logs filter-log-events --log-group-name /aws/lambda/demo-consumer",
    ] {
        assert!(calls.contains(call), "no call `{call}` in:\n{calls}");
    }
}

#[test]
fn deploy_verify_names_each_check_that_fails() {
    for (changes, named) in [
        (
            &[
                ("STUB_PROXY_STATE", "UNAVAILABLE"),
                ("STUB_PROXY_REASON", "AUTH_FAILURE"),
                ("STUB_PROXY_DESCRIPTION", "could not read the secret"),
            ][..],
            "FAILED: check 1: RDS Proxy's target is UNAVAILABLE (AUTH_FAILURE: could not read the secret)",
        ),
        (
            &[("STUB_READYZ", "503")][..],
            "FAILED: check 2: GET http://orders-alb.example/readyz answered 503",
        ),
        (
            &[("STUB_ORDERS", "503")][..],
            "FAILED: check 3: POST /orders answered 503, not 202",
        ),
        (
            &[("STUB_CONSUMER_SAYS", "not stored; will be retried")][..],
            "FAILED: check 3: no line of /aws/lambda/demo-consumer says canary order",
        ),
    ] {
        let (ok, output, _) = verify_with(&with(changes));
        assert!(
            !ok,
            "scripts/deploy --verify passed with {changes:?}:\n{output}"
        );
        assert!(
            output.contains(named),
            "with {changes:?}, no `{named}` in:\n{output}"
        );
        assert!(
            output.contains("Checks failed (1 of 3)"),
            "with {changes:?}, only that check fails:\n{output}"
        );
    }
}

#[test]
fn deploy_dry_run_lists_the_checks_without_aws() {
    let output = std::process::Command::new(format!("{REPO}/scripts/deploy"))
        .args(["--verify", "--dry-run", "--stack-name", "demo"])
        .output()
        .expect("scripts/deploy runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for check in [
        "check 1: RDS Proxy's target",
        "check 2: GET <producer URL>/readyz",
        "check 3: a canary order",
    ] {
        assert!(text.contains(check), "no `{check}` in:\n{text}");
    }
}

// --- the real pinned AWS CLI against an AWS-shaped endpoint ----------------------

#[path = "deploy/aws_stub.rs"]
mod aws_stub;

use aws_stub::{Answers, Stub};

/// `.dev/venv-sam/bin`, where `ensure_sam_cli` installs the pinned `aws` (v1) and
/// `sam` that `scripts/deploy` runs; installed on first use (PyPI), once per run.
fn pinned_cli_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let output = std::process::Command::new("bash")
            .args([
                "-c",
                r#"source "$1/scripts/lib/common.sh" && source "$1/scripts/lib/infra.sh" && ensure_sam_cli >&2 && printf '%s' "$SAM_VENV/bin""#,
                "bash",
                REPO,
            ])
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "ensure_sam_cli failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    })
}

/// What a run of `scripts/deploy` printed (both streams) and whether it succeeded.
struct Run {
    ok: bool,
    output: String,
}

/// A run of a script may not take longer than this: every wait in it is set to 0.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

/// Runs `scripts/deploy ARGS --stack-name demo --region eu-west-1` with the pinned
/// AWS CLI and the system's curl, every AWS call going to `stub`.
fn deploy_against(stub: &Stub, args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    let home = std::env::temp_dir().join(format!(
        "deploy-real-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    std::fs::create_dir_all(&home).expect("temp dir");
    let path = format!(
        "{}:{}",
        pinned_cli_bin(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = std::process::Command::new(format!("{REPO}/scripts/deploy"));
    command
        .args(args)
        .args([
            "--stack-name",
            aws_stub::STACK,
            "--region",
            aws_stub::REGION,
        ])
        .env("PATH", path)
        // No profile, configuration or credentials of this machine's user.
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // awscli 1.46.3's botocore reads it for every service ("environment_global").
        .env("AWS_ENDPOINT_URL", stub.url())
        // An unexpected error fails at once rather than after the CLI's retries.
        .env("AWS_RETRY_MODE", "standard")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("PROXY_TARGET_WAIT_S", "0")
        .env("READYZ_WAIT_S", "0")
        .env("CANARY_WAIT_S", "0")
        .env("MIGRATE_RETRY_S", "0")
        .stdin(std::process::Stdio::null())
        // Its own process group, so that a run past RUN_LIMIT ends with its children.
        .process_group(0);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("scripts/deploy starts");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(RUN_LIMIT) {
        Ok(output) => output.expect("scripts/deploy's output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!(
                "scripts/deploy {args:?} ran past {RUN_LIMIT:?}; its calls:\n{}",
                stub.log()
            );
        }
    };
    let _ = std::fs::remove_dir_all(&home);
    Run {
        ok: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// No call the stub did not know: each is one the script should not make, or one
/// the stub should learn.
fn assert_only_known_calls(stub: &Stub) {
    let unknown: Vec<_> = stub
        .calls()
        .into_iter()
        .filter(|c| c.action.starts_with("unknown"))
        .collect();
    assert!(
        unknown.is_empty(),
        "calls the stub does not know: {unknown:?}"
    );
}

#[test]
fn deploy_migrate_sends_the_writers_verifier_to_the_migrate_function_through_the_real_cli() {
    let stub = Stub::start(Answers::default());
    let run = deploy_against(&stub, &["--migrate"]);
    assert!(
        run.ok,
        "scripts/deploy --migrate failed:\n{}\ncalls:\n{}",
        run.output,
        stub.log()
    );
    assert!(
        run.output
            .contains(r#"migrated: {"applied":[1,2],"writer":"orders_writer"}"#),
        "the function's answer is not printed:\n{}",
        run.output
    );
    let secrets = stub.calls_of("secretsmanager", "GetSecretValue");
    assert_eq!(secrets.len(), 1, "{}", stub.log());
    assert_eq!(secrets[0].param("SecretId"), aws_stub::WRITER_SECRET);
    let invokes = stub.calls_of("lambda", "Invoke");
    assert_eq!(
        invokes.len(),
        1,
        "one invoke when it succeeds:\n{}",
        stub.log()
    );
    assert_eq!(invokes[0].param("FunctionName"), aws_stub::MIGRATE_FUNCTION);
    // fileb:// sends the file's bytes as they are: the JSON, not base64 of it.
    let payload: serde_json::Value =
        serde_json::from_str(invokes[0].param("Payload")).expect("the payload is JSON");
    let verifier = payload["writer_password_verifier"]
        .as_str()
        .expect("a writer_password_verifier string");
    assert!(
        verifier.starts_with("SCRAM-SHA-256$4096:"),
        "not a SCRAM verifier: {verifier}"
    );
    assert!(
        !invokes[0]
            .param("Payload")
            .contains(aws_stub::WRITER_PASSWORD),
        "the password itself travelled"
    );
    // The proxy's target is checked first: the migrations need it.
    let order: Vec<String> = stub.calls().into_iter().map(|c| c.action).collect();
    let proxy = order.iter().position(|a| a == "DescribeDBProxyTargets");
    let invoke = order.iter().position(|a| a == "Invoke");
    assert!(proxy < invoke && proxy.is_some(), "{order:?}");
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_migrate_tries_three_times_then_names_the_migrate_log_group() {
    let stub = Stub::start(Answers {
        migrate_function_error: "Unhandled".into(),
        ..Answers::default()
    });
    let run = deploy_against(&stub, &["--migrate"]);
    assert!(
        !run.ok,
        "a failing migrate function passed:\n{}",
        run.output
    );
    for line in [
        "the migrate function failed (Unhandled, attempt 3 of 3): {\"errorType\"",
        "the migrations did not run: see the log group /aws/lambda/demo-migrate",
    ] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    assert_eq!(stub.calls_of("lambda", "Invoke").len(), 3, "{}", stub.log());
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_migrate_does_not_invoke_while_the_proxy_cannot_reach_the_database() {
    let stub = Stub::start(Answers {
        proxy_target: [(
            "UNAVAILABLE".to_owned(),
            "AUTH_FAILURE".to_owned(),
            "could not read the secret".to_owned(),
        )]
        .into(),
        ..Answers::default()
    });
    let run = deploy_against(&stub, &["--migrate"]);
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output
            .contains("RDS Proxy cannot reach the database, so the migrations cannot run"),
        "{}",
        run.output
    );
    assert!(
        stub.calls_of("lambda", "Invoke").is_empty(),
        "{}",
        stub.log()
    );
}
