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
