//! `scripts/deploy`'s checks of a deployed stack and its migrate step, run with the
//! real pinned AWS CLI (`.dev/venv-sam`, awscli 1.46.3) and the system's curl
//! against an AWS-shaped endpoint in the test (`deploy/aws_stub.rs`). No AWS
//! account is reachable here; the CLI still parses every argument the script
//! passes and every answer the endpoint gives, so an option it refuses, a
//! `--query` that selects nothing or a missing wait fails a test. The checks' own
//! logic (what they ask, what they accept, what they name when it fails) runs for
//! real.

#[path = "deploy/aws_stub.rs"]
mod aws_stub;
#[allow(dead_code)] // each test binary uses its own part
mod common;

use aws_stub::{Answers, Stub};
use common::{REPO, Run, TempDir, sandboxed};

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

/// A run of a script may not take longer than this: every wait in it is set to 0.
const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(240);

/// `program` with the pinned CLIs first on PATH, none of this machine's AWS
/// profiles or credentials, static ones instead, and every AWS call to `stub`.
fn against_stub(program: &str, stub: &Stub, home: &TempDir) -> std::process::Command {
    let credentials = (
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let mut command = sandboxed(program, pinned_cli_bin(), home, credentials, &stub.url());
    command
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        // An unexpected error fails at once rather than after the CLI's retries.
        .env("AWS_RETRY_MODE", "standard")
        .env("AWS_MAX_ATTEMPTS", "1");
    command
}

/// Runs `command` to its end, or kills its process group after RUN_LIMIT; `input`
/// is its standard input.
fn run_bounded(command: std::process::Command, stub: &Stub, input: &[u8]) -> Run {
    common::run_bounded(command, input, RUN_LIMIT, || {
        format!("its calls:\n{}", stub.log())
    })
}

/// Runs `scripts/deploy ARGS --stack-name demo --region eu-west-1` with the pinned
/// AWS CLI and the system's curl, every AWS call going to `stub`.
fn deploy_against(stub: &Stub, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = args.to_vec();
    all.extend([
        "--stack-name",
        aws_stub::STACK,
        "--region",
        aws_stub::REGION,
    ]);
    deploy_with(stub, &all, env)
}

/// Runs `scripts/deploy ARGS` (no stack or region added) as deploy_against does.
fn deploy_with(stub: &Stub, args: &[&str], env: &[(&str, &str)]) -> Run {
    let home = TempDir::new("deploy-real-cli");
    let mut command = against_stub(&format!("{REPO}/scripts/deploy"), stub, &home);
    command
        .args(args)
        .env("PROXY_TARGET_WAIT_S", "0")
        .env("READYZ_WAIT_S", "0")
        .env("CANARY_WAIT_S", "0")
        .env("POLL_S", "0");
    for (key, value) in env {
        command.env(key, value);
    }
    run_bounded(command, stub, b"")
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
fn deploy_migrate_asks_the_provision_function_to_run_the_migrations_through_the_real_cli() {
    let stub = Stub::start(Answers::default());
    let run = deploy_against(&stub, &["--migrate"], &[]);
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
    let invokes = stub.calls_of("lambda", "Invoke");
    assert_eq!(invokes.len(), 1, "{}", stub.log());
    assert_eq!(
        invokes[0].param("FunctionName"),
        aws_stub::PROVISION_FUNCTION
    );
    // fileb:// sends the file's bytes as they are: the JSON, not base64 of it.
    // An empty object is the provision task's direct call (not CloudFormation's).
    let payload: serde_json::Value =
        serde_json::from_str(invokes[0].param("Payload")).expect("the payload is JSON");
    assert_eq!(payload, serde_json::json!({}));
    // The script reads no secret: the provision function does, in AWS.
    assert!(stub.calls_of("secretsmanager", "GetSecretValue").is_empty());
    // The proxy's target is checked first: the migrations need it.
    let order: Vec<String> = stub.calls().into_iter().map(|c| c.action).collect();
    let proxy = order.iter().position(|a| a == "DescribeDBProxyTargets");
    let invoke = order.iter().position(|a| a == "Invoke");
    assert!(proxy < invoke && proxy.is_some(), "{order:?}");
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_migrate_invokes_once_then_names_both_log_groups_when_it_fails() {
    let stub = Stub::start(Answers {
        provision_function_error: "Unhandled".into(),
        ..Answers::default()
    });
    let run = deploy_against(&stub, &["--migrate"], &[]);
    assert!(
        !run.ok,
        "a failing provision function passed:\n{}",
        run.output
    );
    for line in [
        "the provision function failed (Unhandled): {\"errorType\"",
        "could not reach the database",
        "see the log groups /aws/lambda/demo-provision and /aws/lambda/demo-migrate",
    ] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    // The function retries itself; the script does not multiply its tries.
    assert_eq!(stub.calls_of("lambda", "Invoke").len(), 1, "{}", stub.log());
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
    let run = deploy_against(&stub, &["--migrate"], &[]);
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

fn verify(answers: Answers, env: &[(&str, &str)]) -> (Run, Stub) {
    let stub = Stub::start(answers);
    let run = deploy_against(&stub, &["--verify"], env);
    (run, stub)
}

#[test]
fn deploy_verify_passes_a_stack_whose_proxy_producer_and_consumer_work_and_says_what_it_checked() {
    let (run, stub) = verify(Answers::default(), &[]);
    assert!(
        run.ok,
        "scripts/deploy --verify failed on a working stack:\n{}\ncalls:\n{}",
        run.output,
        stub.log()
    );
    for line in [
        "123456789012 arn:aws:iam::123456789012:user/deployer",
        "ok: RDS Proxy's target is AVAILABLE",
        "ok: /readyz answered 200 through the load balancer",
        "ok: the consumer stored canary order",
        "all 3 checks passed",
    ] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    let log = stub.log();
    assert_eq!(stub.calls_of("sts", "GetCallerIdentity").len(), 1, "{log}");
    let resources: Vec<String> = stub
        .calls_of("cloudformation", "DescribeStackResource")
        .iter()
        .map(|c| format!("{} {}", c.param("StackName"), c.param("LogicalResourceId")))
        .collect();
    assert_eq!(resources, ["demo DatabaseProxy"], "{log}");
    let targets = stub.calls_of("rds", "DescribeDBProxyTargets");
    assert_eq!(targets.len(), 1, "{log}");
    assert_eq!(targets[0].param("DBProxyName"), aws_stub::PROXY);
    assert_eq!(stub.calls_of("producer", "GET /readyz").len(), 1, "{log}");
    // The canary: a valid order of the deploy's own customer, then its id in the log.
    let orders = stub.calls_of("producer", "POST /orders");
    assert_eq!(orders.len(), 1, "{log}");
    assert_eq!(orders[0].param("content-type"), "application/json");
    let canary: serde_json::Value =
        serde_json::from_str(orders[0].param("body")).expect("the canary is JSON");
    assert_eq!(canary["customer_id"], "deploy-canary");
    // Priced by the catalogue the producer serves (here, the repository's).
    assert_eq!(
        stub.calls_of("producer", "GET /catalogue").len(),
        1,
        "{log}"
    );
    assert_eq!(canary["items"][0]["sku"], "NOTEBOOK-A5");
    assert_eq!(canary["items"][0]["unit_price_cents"], 1299);
    let order_id = canary["order_id"].as_str().expect("an order_id");
    // Then the consumer function itself is asked about that order id.
    let lookups: Vec<serde_json::Value> = stub
        .calls_of("lambda", "Invoke")
        .iter()
        .filter(|c| c.param("FunctionName") == aws_stub::CONSUMER_FUNCTION)
        .map(|c| serde_json::from_str(c.param("Payload")).expect("a JSON payload"))
        .collect();
    assert_eq!(
        lookups,
        [serde_json::json!({ "lookup": { "order_id": order_id } })],
        "{log}"
    );
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_verify_with_sign_in_on_queues_the_canary_itself_once_the_load_balancer_refuses_an_unsigned_order()
 {
    let mut answers = Answers::default();
    answers.outputs.extend([
        (
            "ProducerMode".into(),
            "HTTPS with the ACM certificate for orders.example.com; point orders.example.com at lb; customers sign in at the load balancer".into(),
        ),
        ("OrdersQueueUrl".into(), aws_stub::QUEUE_URL.into()),
    ]);
    // The load balancer's own 401: no sign-in, no order.
    answers.orders_status = 401;
    let (run, stub) = verify(answers, &[]);
    assert!(run.ok, "{}\n{}", run.output, stub.log());
    let log = stub.log();
    assert!(
        run.output
            .contains("ok: POST /orders without a sign-in answered 401"),
        "{}",
        run.output
    );
    let sent = stub.calls_of("sqs", "SendMessage");
    assert_eq!(sent.len(), 1, "{log}");
    assert_eq!(sent[0].param("QueueUrl"), aws_stub::QUEUE_URL);
    // Read as the consumer reads a message: a valid order, priced by the catalogue.
    let canary = order_contract::message::OrderPlaced::from_json(sent[0].param("MessageBody"))
        .expect("the canary is an OrderPlaced the consumer reads");
    assert_eq!(canary.order.customer_id(), "deploy-canary");
    assert_eq!(canary.order.items()[0].sku, "NOTEBOOK-A5");
    assert_eq!(canary.order.items()[0].unit_price_cents, 1299);
    let lookups: Vec<serde_json::Value> = stub
        .calls_of("lambda", "Invoke")
        .iter()
        .filter(|c| c.param("FunctionName") == aws_stub::CONSUMER_FUNCTION)
        .map(|c| serde_json::from_str(c.param("Payload")).expect("a JSON payload"))
        .collect();
    assert_eq!(
        lookups,
        [serde_json::json!({ "lookup": { "order_id": canary.order.order_id() } })],
        "{log}"
    );
    assert_only_known_calls(&stub);

    // A load balancer that lets an unsigned order through fails the check.
    let mut answers = Answers::default();
    answers.outputs.push((
        "ProducerMode".into(),
        "HTTPS with the ACM certificate for orders.example.com; customers sign in at the load balancer".into(),
    ));
    answers.orders_status = 202;
    let (run, stub) = verify(answers, &[]);
    assert!(!run.ok, "{}\n{}", run.output, stub.log());
    assert!(
        run.output
            .contains("FAILED: check 3: POST /orders without a sign-in answered 202, not 401"),
        "{}",
        run.output
    );
}

/// `scripts/deploy --verify` on a stack with one thing broken: it fails, names
/// that check, and only that one.
fn assert_only_this_check_fails(answers: Answers, named: &str) {
    let (run, stub) = verify(answers, &[]);
    assert!(!run.ok, "scripts/deploy --verify passed:\n{}", run.output);
    assert!(
        run.output.contains(named),
        "no `{named}` in:\n{}",
        run.output
    );
    assert!(
        run.output.contains("Checks failed (1 of 3)"),
        "only that check fails:\n{}",
        run.output
    );
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_verify_names_a_proxy_target_that_cannot_reach_the_database() {
    assert_only_this_check_fails(
        Answers {
            proxy_target: [(
                "UNAVAILABLE".to_owned(),
                "AUTH_FAILURE".to_owned(),
                "could not read the secret".to_owned(),
            )]
            .into(),
            ..Answers::default()
        },
        "FAILED: check 1: RDS Proxy's target is UNAVAILABLE (AUTH_FAILURE: could not read the secret) after 0 s",
    );
}

#[test]
fn deploy_verify_names_a_proxy_target_still_registering_when_its_wait_is_over() {
    // RDS leaves Reason and Description out; the CLI's text output says None.
    assert_only_this_check_fails(
        Answers {
            proxy_target: [("REGISTERING".to_owned(), String::new(), String::new())].into(),
            ..Answers::default()
        },
        "FAILED: check 1: RDS Proxy's target is REGISTERING (no reason: no description) after 0 s",
    );
}

#[test]
fn deploy_verify_names_a_readyz_that_does_not_answer_200() {
    assert_only_this_check_fails(
        Answers {
            readyz_status: [503].into(),
            ..Answers::default()
        },
        "/readyz answered 503 for 0 s (503: the producer cannot reach SQS",
    );
}

#[test]
fn deploy_verify_names_a_canary_the_producer_refuses() {
    assert_only_this_check_fails(
        Answers {
            orders_status: 503,
            ..Answers::default()
        },
        "FAILED: check 3: POST /orders answered 503, not 202",
    );
}

#[test]
fn deploy_verify_names_a_canary_the_consumer_did_not_store() {
    assert_only_this_check_fails(
        Answers {
            consumer_stored: [false].into(),
            ..Answers::default()
        },
        "FAILED: check 3: the consumer has not stored canary order",
    );
}

#[test]
fn deploy_verify_waits_for_what_a_fresh_stack_is_still_bringing_up() {
    let (run, stub) = verify(
        Answers {
            proxy_target: [
                ("REGISTERING".to_owned(), String::new(), String::new()),
                (
                    "UNAVAILABLE".to_owned(),
                    "PENDING_PROXY_CAPACITY".to_owned(),
                    String::new(),
                ),
                ("AVAILABLE".to_owned(), String::new(), String::new()),
            ]
            .into(),
            readyz_status: [502, 503, 200].into(),
            consumer_stored: [false, true].into(),
            ..Answers::default()
        },
        &[
            ("PROXY_TARGET_WAIT_S", "120"),
            ("READYZ_WAIT_S", "120"),
            ("CANARY_WAIT_S", "120"),
        ],
    );
    assert!(
        run.ok,
        "a stack that comes up within the waits failed:\n{}",
        run.output
    );
    for line in [
        "  target REGISTERING; waiting",
        "  target UNAVAILABLE (PENDING_PROXY_CAPACITY); waiting",
        "  /readyz: 502; waiting",
        "  /readyz: 503; waiting",
        "all 3 checks passed",
    ] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    assert_eq!(stub.calls_of("rds", "DescribeDBProxyTargets").len(), 3);
    assert_eq!(stub.calls_of("producer", "GET /readyz").len(), 3);
    let lookups = stub
        .calls_of("lambda", "Invoke")
        .iter()
        .filter(|c| c.param("FunctionName") == aws_stub::CONSUMER_FUNCTION)
        .count();
    assert_eq!(lookups, 2, "asked again until the order is stored");
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

/// `sam deploy` as `scripts/deploy` runs it (`sam_deploy_stack`, scripts/lib/infra.sh),
/// on a packaged template in a directory of its own like `.dev/deploy/`: SAM must
/// read the repository's samconfig.toml, so it shows the change set and asks
/// (`confirm_changeset = true`) before it changes anything. The real sam 1.170.0
/// runs against the stub: its --debug says which file and which values it read.
#[test]
fn deploy_sam_deploy_reads_the_repositorys_samconfig_and_asks_before_it_changes_the_stack() {
    let stub = Stub::start(Answers::default());
    let dir = TempDir::new("sam-deploy");
    let packaged = dir.0.join("packaged-demo.yaml");
    std::fs::write(
        &packaged,
        "AWSTemplateFormatVersion: '2010-09-09'\nParameters:\n  Greeting:\n    Type: String\nResources:\n  Topic:\n    Type: AWS::SNS::Topic\n",
    )
    .expect("a packaged template");
    let mut command = against_stub("bash", &stub, &dir);
    command
        .args([
            "-c",
            r#"source "$1/scripts/lib/common.sh" && source "$1/scripts/lib/infra.sh" && sam_deploy_stack "$2" demo --region eu-west-1 --parameter-overrides Greeting=hello --debug"#,
            "bash",
            REPO,
        ])
        .arg(&packaged)
        .current_dir(&dir.0);
    // The answer to "Deploy this changeset?".
    let run = run_bounded(command, &stub, b"n\n");
    let repo = std::fs::canonicalize(REPO).expect("the repository");
    let config = format!("Config file location: {}/samconfig.toml", repo.display());
    assert!(
        run.output.contains(&config),
        "sam did not read the repository's samconfig.toml (no `{config}`):\n{}\ncalls:\n{}",
        run.output,
        stub.log()
    );
    for line in ["'confirm_changeset': True", "Deploy this changeset? [y/N]"] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    let created = stub.calls_of("cloudformation", "CreateChangeSet");
    assert_eq!(created.len(), 1, "{}", stub.log());
    for (key, value) in [
        ("StackName", "demo"),
        ("Capabilities.member.1", "CAPABILITY_IAM"),
        ("Parameters.member.1.ParameterKey", "Greeting"),
        ("Parameters.member.1.ParameterValue", "hello"),
    ] {
        assert_eq!(created[0].param(key), value, "{key} in {:?}", created[0]);
    }
    assert!(
        stub.calls_of("cloudformation", "ExecuteChangeSet")
            .is_empty(),
        "sam changed the stack without asking:\n{}",
        stub.log()
    );
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_without_a_region_says_so_rather_than_blaming_the_credentials() {
    let stub = Stub::start(Answers::default());
    let run = deploy_with(&stub, &["--verify", "--stack-name", aws_stub::STACK], &[]);
    assert!(!run.ok, "{}", run.output);
    assert!(
        run.output
            .contains("no AWS region: pass --region or set AWS_REGION"),
        "{}",
        run.output
    );
    assert!(
        !run.output.contains("no usable AWS credentials"),
        "the credentials are blamed for a missing region:\n{}",
        run.output
    );
}

#[test]
fn deploy_with_credentials_sts_refuses_says_what_to_do() {
    let stub = Stub::start(Answers {
        credentials_valid: false,
        ..Answers::default()
    });
    let run = deploy_against(&stub, &["--verify"], &[]);
    assert!(!run.ok, "{}", run.output);
    for line in [
        "InvalidClientTokenId",
        "no usable AWS credentials: configure them (aws configure, AWS_PROFILE, aws sso login)",
    ] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    assert!(stub.calls_of("rds", "DescribeDBProxyTargets").is_empty());
}

#[test]
fn deploy_preflight_prints_the_tools_and_the_accounts_concurrency_and_creates_nothing() {
    let stub = Stub::start(Answers::default());
    let run = deploy_against(&stub, &["--preflight"], &[]);
    assert!(run.ok, "{}\ncalls:\n{}", run.output, stub.log());
    for line in [
        "123456789012 arn:aws:iam::123456789012:user/deployer",
        "aws: aws-cli/1.46.3",
        "sam: SAM CLI, version 1.170.0",
        // MaximumConcurrency: the stack has none, so the template's default.
        "Lambda concurrency in eu-west-1: 1000 unreserved of 1000; the consumer takes up to MaximumConcurrency=5 at once",
        "preflight passed",
    ] {
        assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    }
    let asked: std::collections::BTreeSet<String> = stub
        .calls()
        .into_iter()
        .map(|c| format!("{} {}", c.service, c.action))
        .collect();
    assert_eq!(
        asked,
        [
            "cloudformation DescribeStacks",
            "ec2 DescribeAvailabilityZones",
            "lambda GetAccountSettings",
            "sts GetCallerIdentity",
        ]
        .map(String::from)
        .into(),
        "the preflight only reads"
    );
}

/// In this account, us-east-1a is the zone id RDS Proxy does not support.
fn us_east_1_zones() -> Answers {
    Answers {
        availability_zones: [("a", "3"), ("b", "6"), ("c", "1")]
            .map(|(zone, id)| (format!("us-east-1{zone}"), format!("use1-az{id}")))
            .into(),
        ..Answers::default()
    }
}

fn preflight_in_us_east_1(stub: &Stub, parameters: &[&str]) -> Run {
    let mut args = vec!["--preflight", "--stack-name", aws_stub::STACK];
    args.extend(["--region", "us-east-1"]);
    for parameter in parameters {
        args.extend(["--parameter", parameter]);
    }
    deploy_with(stub, &args, &[])
}

#[test]
fn deploy_preflight_refuses_a_zone_rds_proxy_does_not_support_and_names_the_parameter() {
    let stub = Stub::start(us_east_1_zones());
    let run = preflight_in_us_east_1(&stub, &[]);
    assert!(!run.ok, "{}", run.output);
    let advice = "us-east-1a is zone use1-az3 in this account, where RDS Proxy is not offered: deploy with --parameter AvailabilityZones=";
    assert!(
        run.output.contains(advice),
        "no `{advice}` in:\n{}",
        run.output
    );
    assert_only_known_calls(&stub);
}

#[test]
fn deploy_preflight_accepts_two_chosen_zones_and_says_their_ids() {
    let stub = Stub::start(us_east_1_zones());
    let run = preflight_in_us_east_1(&stub, &["AvailabilityZones=us-east-1b,us-east-1c"]);
    assert!(run.ok, "{}\ncalls:\n{}", run.output, stub.log());
    let line = "availability zones: us-east-1b (use1-az6), us-east-1c (use1-az1)";
    assert!(run.output.contains(line), "no `{line}` in:\n{}", run.output);
    let asked = stub.calls_of("ec2", "DescribeAvailabilityZones");
    assert_eq!(asked[0].param("ZoneName.1"), "us-east-1b", "{}", stub.log());
}

#[test]
fn deploy_preflight_stops_a_deploy_the_accounts_concurrency_cannot_carry_and_says_what_to_do() {
    // Beside the consumer's batches: the template's other functions, and the
    // breaker's probe and the release hook's check of the consumer.
    let template =
        infra::Document::from_file(&format!("{REPO}/infra/template.yaml")).expect("the template");
    let functions = template
        .resources_of_type("AWS::Serverless::Function")
        .count();
    assert_eq!(
        functions, 6,
        "the consumer, the breaker, the release hook, the migrate, the provision and the status functions"
    );
    let others = functions - 1 + 2;
    for (parameter, concurrency, advice) in [
        (
            "MaximumConcurrency=20",
            (10, 10),
            format!(
                "is 10, below MaximumConcurrency=20 plus {others} for the other functions and their probes, so batches would be throttled back to the queue: ask for more, or deploy with --parameter MaximumConcurrency={}",
                10 - others
            ),
        ),
        (
            "AlarmEmail=ops@example.com",
            (10, 2),
            format!(
                "is 2, below MaximumConcurrency=5 plus {others} for the other functions and their probes, so batches would be throttled back to the queue: ask for more (Service Quotas"
            ),
        ),
    ] {
        let stub = Stub::start(Answers {
            account_concurrency: concurrency,
            ..Answers::default()
        });
        // A whole deploy, not --preflight: it must stop before building anything.
        let run = deploy_against(&stub, &["--parameter", parameter], &[]);
        assert!(!run.ok, "{}", run.output);
        assert!(
            run.output.contains(&advice),
            "no `{advice}` in:\n{}",
            run.output
        );
        for later in [
            "Checking and installing the build tools",
            "Building the producer",
        ] {
            assert!(
                !run.output.contains(later),
                "`{later}` before the preflight stopped it:\n{}",
                run.output
            );
        }
        assert_eq!(stub.calls_of("lambda", "GetAccountSettings").len(), 1);
    }
}

#[test]
fn deploy_verify_of_a_stack_in_trial_mode_says_it_serves_plain_http() {
    let mut answers = Answers::default();
    answers.outputs.push((
        "ProducerMode".into(),
        "TRIAL: plain HTTP, so the order page, its script and its CSP travel unauthenticated; deploy with CertificateArn and ProducerDomain for HTTPS".into(),
    ));
    let (run, stub) = verify(answers, &[]);
    assert!(run.ok, "{}\n{}", run.output, stub.log());
    assert!(
        run.output.contains("TRIAL: plain HTTP") && run.output.contains("CertificateArn"),
        "{}",
        run.output
    );
    let (https, _) = verify(
        Answers {
            outputs: vec![
                (
                    "ProducerMode".into(),
                    "HTTPS with the ACM certificate for orders.example.com".into(),
                ),
                (
                    "ConsumerFunctionName".into(),
                    aws_stub::CONSUMER_FUNCTION.into(),
                ),
                ("OrdersQueueUrl".into(), aws_stub::QUEUE_URL.into()),
            ],
            // Signed in at the load balancer: its own 401 to the unsigned canary.
            orders_status: 401,
            ..Answers::default()
        },
        &[],
    );
    assert!(
        https.ok && !https.output.contains("TRIAL"),
        "{}",
        https.output
    );
}

#[test]
fn deploy_verify_ends_with_the_dashboards_address_once_the_checks_pass() {
    let url = "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#dashboards/dashboard/demo-orders";
    let mut answers = Answers::default();
    answers.outputs.push(("DashboardUrl".into(), url.into()));
    let (run, stub) = verify(answers, &[]);
    assert!(run.ok, "{}\n{}", run.output, stub.log());
    let passed = run
        .output
        .find("all 3 checks passed")
        .expect("the checks passed");
    assert!(
        run.output[passed..].contains(&format!("dashboard: {url}")),
        "the summary names the dashboard after the checks:\n{}",
        run.output
    );
    assert_only_known_calls(&stub);

    // A stack deployed before the dashboard existed has no such output.
    let (older, _) = verify(Answers::default(), &[]);
    assert!(older.ok, "{}", older.output);
    assert!(
        older.output.contains(
            "dashboard: none (the stack has no DashboardUrl output; deploy this template)"
        ),
        "{}",
        older.output
    );
}
