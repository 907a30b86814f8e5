//! `sam deploy` of the real template, rehearsed against LocalStack's CloudFormation
//! (issue 18): the pinned `sam` 1.170.0 and `aws` 1.46.3 (`.dev/venv-sam`) against
//! LocalStack 2026.3.0 with the legacy engine (`.dev/venv-localstack-cfn`,
//! `localstack_cfn_start` in scripts/lib/localstack.sh), then `sam delete`.
//!
//! The test pins what happens: which resources LocalStack created, which it
//! skipped (free LocalStack has no provider for their types and records them as
//! created with the physical id `unknown`, docs.localstack.cloud/aws/services/cloudformation),
//! which a false condition leaves out, where the create stopped and why, and
//! which resources it never reached. A change in the template or the emulator
//! shows up as a failure of one of these lists, with a readable diff.
//!
//! What the emulator cannot play, and so what this does not show: RDS, RDS Proxy,
//! the load balancer, Auto Scaling (skipped, or never reached); the custom
//! resource `DatabaseSchema` (free LocalStack has no provider for
//! `AWS::CloudFormation::CustomResource` either; and its Lambda runs code only in
//! Docker, which is not here, so the functions' code is a placeholder).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[allow(dead_code)] // each test binary uses its own part
mod common;

use common::{REPO, Run, TempDir, sandboxed};

const STACK: &str = "rehearsal";
const REGION: &str = "eu-west-1";

/// The deploy took about 35 s here; the limits only bound a hang.
const DEPLOY_LIMIT: Duration = Duration::from_secs(300);
const DELETE_LIMIT: Duration = Duration::from_secs(120);
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// Our LocalStack, stopped by its PID (its own process group: `setsid` in
/// `_localstack_launch`) when dropped, so a failing assertion stops it too. Its
/// state directory goes after it.
struct LocalStack {
    pid: u32,
    url: String,
    log: PathBuf,
    /// `.dev/venv-sam/bin`, where the pinned `sam` and `aws` are.
    cli_bin: String,
    _state: TempDir,
}

impl LocalStack {
    /// Installs both venvs if needed (idempotent; PyPI on first use), then starts
    /// LocalStack's CloudFormation on a free port with a state directory of its own.
    fn start() -> Self {
        let state = TempDir::new("rehearsal-localstack");
        let log = state.0.join("localstack.log");
        let output = std::process::Command::new("bash")
            .args([
                "-c",
                r#"source "$1/scripts/lib/common.sh" && source "$1/scripts/lib/infra.sh" &&
                ensure_sam_cli >&2 && ensure_localstack_cfn >&2 && port="$(free_port)" &&
                LOCALSTACK_START_TIMEOUT=120 localstack_cfn_start "$2/state" "$port" "$3" >&2 &&
                printf '%s %s %s' "$LOCALSTACK_PID" "$port" "$SAM_VENV/bin""#,
                "bash",
                REPO,
            ])
            .arg(&state.0)
            .arg(&log)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("bash runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "LocalStack (CloudFormation) did not start:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut words = stdout.split_whitespace();
        let (Some(pid), Some(port), Some(cli_bin)) = (words.next(), words.next(), words.next())
        else {
            panic!("no PID, port and path from the launcher: {stdout:?}");
        };
        Self {
            pid: pid.parse().expect("a PID"),
            url: format!("http://127.0.0.1:{port}"),
            log,
            cli_bin: cli_bin.to_owned(),
            _state: state,
        }
    }

    fn alive(&self) -> bool {
        // Reparented to init when the launcher's bash exited, which reaps it; a
        // zombie has exited all the same.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            })
            .unwrap_or(false)
    }

    /// The end of its log, for a failure message.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `program` with the pinned CLIs first on PATH, none of this machine's AWS
    /// profiles, static credentials, and every AWS call to this LocalStack.
    fn command(&self, program: &str, home: &TempDir) -> std::process::Command {
        // LocalStack's own test credentials: its default account, 000000000000.
        let mut command = sandboxed(program, &self.cli_bin, home, ("test", "test"), &self.url);
        command
            .env("AWS_REGION", REGION)
            .env("AWS_DEFAULT_REGION", REGION);
        command
    }

    /// The pinned `aws ARGS --output json`, which must succeed.
    fn aws(&self, home: &TempDir, args: &[&str]) -> serde_json::Value {
        let mut command = self.command("aws", home);
        command.args(args).args(["--output", "json"]);
        let run = run_bounded(command, CLI_LIMIT, self);
        assert!(run.ok, "aws {args:?} failed:\n{}", run.output);
        // Nothing at all when a list is empty (`sqs list-queues`).
        if run.stdout.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&run.stdout).expect("aws printed JSON")
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        let group = format!("-{}", self.pid);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &group])
            .status();
        // LocalStack may ignore SIGTERM (scripts/lib/localstack.sh): a short grace.
        let until = Instant::now() + Duration::from_secs(3);
        while self.alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.alive() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &group])
                .status();
        }
    }
}

/// Runs `command` to its end, or kills its process group after `limit`.
fn run_bounded(command: std::process::Command, limit: Duration, ls: &LocalStack) -> Run {
    common::run_bounded(command, &[], limit, || {
        format!("LocalStack's log ends:\n{}", ls.log_tail())
    })
}

/// The real template with only what the legacy engine cannot evaluate swapped:
/// it has no `Fn::Cidr` (localstack-core 2026.3.0,
/// services/cloudformation/engine/template_deployer.py resolves `Fn::GetAZs`
/// but not `Fn::Cidr`), so the four subnets' `!Cidr` blocks become the literal
/// /24s they evaluate to with the default `VpcCidr` 10.40.0.0/16.
fn template_for_localstack(template: &str) -> String {
    let document = infra::Document::parse(template).expect("the template parses");
    assert_eq!(
        document
            .get(&["Parameters", "VpcCidr", "Default"])
            .expect("VpcCidr has a default")
            .as_str(),
        Some("10.40.0.0/16"),
        "the literal subnets below assume VpcCidr's default"
    );
    let mut swapped = template.to_owned();
    for block in 0..4 {
        let cidr = format!("!Select [{block}, !Cidr [!Ref VpcCidr, 4, 8]]");
        assert_eq!(
            swapped.matches(&cidr).count(),
            1,
            "the template no longer has `{cidr}` once"
        );
        swapped = swapped.replace(&cidr, &format!("10.40.{block}.0/24"));
    }
    assert!(
        !swapped.contains("!Cidr") && !swapped.contains("Fn::Cidr"),
        "another Fn::Cidr, which LocalStack's legacy engine cannot evaluate"
    );
    swapped
}

/// Lays out the copy as in the repository (`infra/template.yaml`), with a
/// placeholder file in every `CodeUri` and `ContentUri` directory it names: sam
/// deploy zips and uploads them, and LocalStack runs no function code without
/// Docker. The real builds are scripts/check-infra's (sam build, arm64).
fn lay_out_copy(dir: &Path, template: &str) -> PathBuf {
    let infra = dir.join("infra");
    std::fs::create_dir_all(&infra).expect("infra/");
    let copy = infra.join("template.yaml");
    std::fs::write(&copy, template_for_localstack(template)).expect("the copy");
    let document = infra::Document::parse(template).expect("the template parses");
    let resources = document
        .get(&["Resources"])
        .expect("Resources")
        .as_mapping()
        .expect("a mapping");
    for resource in resources.values() {
        for key in ["CodeUri", "ContentUri"] {
            if let Some(uri) = resource
                .get("Properties")
                .and_then(|p| p.get(key))
                .and_then(|u| u.as_str())
            {
                let artefact = infra.join(uri);
                std::fs::create_dir_all(&artefact).expect("an artefact directory");
                std::fs::write(artefact.join("placeholder"), "not run: no Docker\n")
                    .expect("a placeholder");
            }
        }
    }
    copy
}

/// `LogicalId (Type)`, with the hash SAM appends to a layer's logical id (it
/// changes with the uploaded zip) replaced by `<hash>`.
fn named(logical_id: &str, resource_type: &str, template_names: &BTreeSet<String>) -> String {
    let id = match logical_id.len().checked_sub(10) {
        Some(cut)
            // A layer's, or the version AutoPublishAlias makes (`<Function>Version<hash>`).
            if (template_names.contains(&logical_id[..cut])
                || logical_id[..cut]
                    .strip_suffix("Version")
                    .is_some_and(|function| template_names.contains(function)))
                && logical_id[cut..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            format!("{}<hash>", &logical_id[..cut])
        }
        _ => logical_id.to_owned(),
    };
    format!("{id} ({resource_type})")
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    names.sort();
    names
}

#[test]
fn rehearsal_sam_deploy_of_the_real_template_goes_as_far_as_localstack_can_and_sam_delete_removes_it()
 {
    let started = Instant::now();
    let template =
        std::fs::read_to_string(format!("{REPO}/infra/template.yaml")).expect("the template");
    let template_names: BTreeSet<String> = infra::Document::parse(&template)
        .expect("the template parses")
        .get(&["Resources"])
        .expect("Resources")
        .as_mapping()
        .expect("a mapping")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    let work = TempDir::new("rehearsal-work");
    let copy = lay_out_copy(&work.0, &template);
    let home = TempDir::new("rehearsal-home");
    let ls = LocalStack::start();
    let start_took = started.elapsed();

    // sam deploy as scripts/deploy runs it (sam_deploy_stack: the repository's
    // samconfig.toml, --resolve-s3, CAPABILITY_IAM), on the unpackaged copy as a
    // plain `sam deploy` would: sam packages and uploads it itself. Without the
    // question: there is no one to answer.
    let mut deploy = ls.command("bash", &home);
    deploy
        .args([
            "-c",
            r#"source "$1/scripts/lib/common.sh" && source "$1/scripts/lib/infra.sh" &&
            sam_deploy_stack "$2" "$3" --region "$4" --no-confirm-changeset --parameter-overrides \
                ProducerArtifactBucket=rehearsal-artifacts \
                "ProducerArtifactKey=producer/$(printf '0%.0s' {1..64})/producer""#,
            "bash",
            REPO,
        ])
        .arg(&copy)
        .args([STACK, REGION])
        .current_dir(&work.0);
    let deployed = run_bounded(deploy, DEPLOY_LIMIT, &ls);

    let stacks = ls.aws(
        &home,
        &["cloudformation", "describe-stacks", "--stack-name", STACK],
    );
    let status = stacks["Stacks"][0]["StackStatus"].as_str().unwrap_or("");
    let resources = ls.aws(
        &home,
        &[
            "cloudformation",
            "describe-stack-resources",
            "--stack-name",
            STACK,
        ],
    );
    let processed = ls.aws(
        &home,
        &[
            "cloudformation",
            "get-template",
            "--stack-name",
            STACK,
            "--template-stage",
            "Processed",
        ],
    );
    let events = ls.aws(
        &home,
        &[
            "cloudformation",
            "describe-stack-events",
            "--stack-name",
            STACK,
        ],
    );

    // The legacy engine records every resource it handled as CREATE_COMPLETE:
    // with a physical id when its provider created it, with `unknown` (its
    // MOCK_REFERENCE) when it has no provider for the type and skipped it, and
    // with none when the resource's condition is false and nothing was made.
    let (mut created, mut skipped, mut not_made, mut other) = (vec![], vec![], vec![], vec![]);
    let mut listed = BTreeSet::new();
    for resource in resources["StackResources"].as_array().expect("a list") {
        let id = resource["LogicalResourceId"].as_str().expect("an id");
        let kind = resource["ResourceType"].as_str().expect("a type");
        let name = named(id, kind, &template_names);
        listed.insert(id.to_owned());
        match (
            resource["ResourceStatus"].as_str().expect("a status"),
            resource["PhysicalResourceId"].as_str(),
        ) {
            ("CREATE_COMPLETE", Some("unknown")) => skipped.push(name),
            ("CREATE_COMPLETE", None | Some("None" | "")) => not_made.push(name),
            ("CREATE_COMPLETE", Some(_)) => created.push(name),
            (status, _) => other.push(format!("{name}: {status}")),
        }
    }
    // A resource that failed is not among the stack's resources: its
    // CREATE_FAILED event names it, with the reason.
    let failed: BTreeMap<String, String> = events["StackEvents"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["ResourceStatus"] == "CREATE_FAILED" && e["LogicalResourceId"] != STACK)
        .map(|e| {
            (
                e["LogicalResourceId"].as_str().unwrap_or("").to_owned(),
                e["ResourceStatusReason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    // Get-template gives the body as a JSON string here; the resources after
    // the SAM transform, as the engine saw them.
    let body: serde_json::Value = match &processed["TemplateBody"] {
        serde_json::Value::String(text) => serde_json::from_str(text).expect("a JSON template"),
        other => other.clone(),
    };
    let mut not_reached: Vec<String> = body["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(id, _)| !listed.contains(*id) && !failed.contains_key(*id))
        .map(|(id, r)| named(id, r["Type"].as_str().unwrap_or("?"), &template_names))
        .collect();
    for list in [&mut created, &mut skipped, &mut not_made, &mut not_reached] {
        list.sort();
    }

    println!(
        "rehearsal: LocalStack ready in {:.1} s; sam deploy took {:.1} s and ended in {status}",
        start_took.as_secs_f64(),
        deployed.took.as_secs_f64()
    );
    println!("created ({}):\n  {}", created.len(), created.join("\n  "));
    println!(
        "skipped, no provider in LocalStack ({}):\n  {}",
        skipped.len(),
        skipped.join("\n  ")
    );
    println!(
        "left out, condition false ({}):\n  {}",
        not_made.len(),
        not_made.join("\n  ")
    );
    println!("failed: {failed:?}");
    println!(
        "never reached ({}):\n  {}",
        not_reached.len(),
        not_reached.join("\n  ")
    );

    // The end of sam deploy's output: its events, then its error.
    let lines: Vec<&str> = deployed.output.lines().collect();
    let context = format!(
        "sam deploy's output ends:\n{}",
        lines[lines.len().saturating_sub(60)..].join("\n")
    );
    assert!(!deployed.ok, "sam deploy passed, unexpectedly: {context}");
    assert!(
        deployed
            .output
            .contains(r#"we matched expected path: "CREATE_FAILED""#),
        "{context}"
    );
    assert_eq!(status, "CREATE_FAILED", "{context}");

    assert_eq!(
        created,
        sorted(&[
            "AlarmTopic (AWS::SNS::Topic)",
            "BreakerLogGroup (AWS::Logs::LogGroup)",
            "CaBundleLayer<hash> (AWS::Lambda::LayerVersion)",
            "CatalogueInvalidAlarm (AWS::CloudWatch::Alarm)",
            "CodeDeployServiceRole (AWS::IAM::Role)",
            "ConsumerLogGroup (AWS::Logs::LogGroup)",
            "ConsumerSecurityGroup (AWS::EC2::SecurityGroup)",
            "DatabaseLogGroup (AWS::Logs::LogGroup)",
            "DatabaseReaderSecret (AWS::SecretsManager::Secret)",
            "DatabaseSecurityGroup (AWS::EC2::SecurityGroup)",
            "DatabaseWriterSecret (AWS::SecretsManager::Secret)",
            "DeadLetterQueueNotEmptyAlarm (AWS::CloudWatch::Alarm)",
            "EndpointSecurityGroup (AWS::EC2::SecurityGroup)",
            "InternetGateway (AWS::EC2::InternetGateway)",
            "InternetGatewayAttachment (AWS::EC2::VPCGatewayAttachment)",
            "LoadBalancerSecurityGroup (AWS::EC2::SecurityGroup)",
            "MigrateLogGroup (AWS::Logs::LogGroup)",
            "OldestMessageAgeAlarm (AWS::CloudWatch::Alarm)",
            "OrdersDeadLetterQueue (AWS::SQS::Queue)",
            "OrdersQueue (AWS::SQS::Queue)",
            "PrivateRouteTable (AWS::EC2::RouteTable)",
            "PrivateSubnetA (AWS::EC2::Subnet)",
            "PrivateSubnetARouteTable (AWS::EC2::SubnetRouteTableAssociation)",
            "PrivateSubnetB (AWS::EC2::Subnet)",
            "PrivateSubnetBRouteTable (AWS::EC2::SubnetRouteTableAssociation)",
            "ProducerInstanceProfile (AWS::IAM::InstanceProfile)",
            "ProducerLogGroup (AWS::Logs::LogGroup)",
            "ProducerMetricsLogGroup (AWS::Logs::LogGroup)",
            "ProducerRole (AWS::IAM::Role)",
            "ProducerSecurityGroup (AWS::EC2::SecurityGroup)",
            "ProducerUnhealthyAlarm (AWS::CloudWatch::Alarm)",
            "ProvisionLogGroup (AWS::Logs::LogGroup)",
            "ProxySecurityGroup (AWS::EC2::SecurityGroup)",
            "PublicDefaultRoute (AWS::EC2::Route)",
            "PublicRouteTable (AWS::EC2::RouteTable)",
            "PublicSubnetA (AWS::EC2::Subnet)",
            "PublicSubnetARouteTable (AWS::EC2::SubnetRouteTableAssociation)",
            "PublicSubnetB (AWS::EC2::Subnet)",
            "PublicSubnetBRouteTable (AWS::EC2::SubnetRouteTableAssociation)",
            "QueuesTlsOnlyPolicy (AWS::SQS::QueuePolicy)",
            "ReleaseHookLogGroup (AWS::Logs::LogGroup)",
            "StatusLogGroup (AWS::Logs::LogGroup)",
            "StatusSecurityGroup (AWS::EC2::SecurityGroup)",
            "Vpc (AWS::EC2::VPC)",
        ]),
        "what LocalStack created; {context}"
    );
    // Free LocalStack has no provider for these types ("No resource provider
    // found" in its log): the security group rules, RDS, the load balancer,
    // the saved Logs Insights queries and CodeDeploy's application.
    assert_eq!(
        skipped,
        sorted(&[
            "ConflictsQuery (AWS::Logs::QueryDefinition)",
            "ConsumerToEndpoints (AWS::EC2::SecurityGroupEgress)",
            "ConsumerToProxy (AWS::EC2::SecurityGroupEgress)",
            "Database (AWS::RDS::DBInstance)",
            "DatabaseFromProxy (AWS::EC2::SecurityGroupIngress)",
            "DatabaseSubnetGroup (AWS::RDS::DBSubnetGroup)",
            "EndpointFromConsumer (AWS::EC2::SecurityGroupIngress)",
            "EndpointFromProducer (AWS::EC2::SecurityGroupIngress)",
            "HttpListener (AWS::ElasticLoadBalancingV2::Listener)",
            "LoadBalancer (AWS::ElasticLoadBalancingV2::LoadBalancer)",
            "LoadBalancerToProducer (AWS::EC2::SecurityGroupEgress)",
            "OneOrderQuery (AWS::Logs::QueryDefinition)",
            "ProducerFromLoadBalancer (AWS::EC2::SecurityGroupIngress)",
            "ProducerTargetGroup (AWS::ElasticLoadBalancingV2::TargetGroup)",
            "ProxyFromConsumer (AWS::EC2::SecurityGroupIngress)",
            "ProxyFromStatus (AWS::EC2::SecurityGroupIngress)",
            "ProxyToDatabase (AWS::EC2::SecurityGroupEgress)",
            "RefusedRecordsQuery (AWS::Logs::QueryDefinition)",
            "ServerlessDeploymentApplication (AWS::CodeDeploy::Application)",
            "StatusToProxy (AWS::EC2::SecurityGroupEgress)",
        ]),
        "what LocalStack skipped; {context}"
    );
    // The defaults: no certificate (HasCertificate, so no sign-in), no alarm e-mail
    // (HasAlarmEmail), no Secrets Manager endpoint (HasProxySecretsEndpoint).
    assert_eq!(
        not_made,
        sorted(&[
            "AlarmTopicEmail (AWS::SNS::Subscription)",
            "CustomerPool (AWS::Cognito::UserPool)",
            "CustomerPoolClient (AWS::Cognito::UserPoolClient)",
            "CustomerPoolDomain (AWS::Cognito::UserPoolDomain)",
            "HttpsListener (AWS::ElasticLoadBalancingV2::Listener)",
            "LoadBalancerHttps (AWS::EC2::SecurityGroupIngress)",
            "LoadBalancerToIdentityProvider (AWS::EC2::SecurityGroupEgress)",
            "ProxyToSecretsEndpoint (AWS::EC2::SecurityGroupEgress)",
            "SecretsEndpointFromProxy (AWS::EC2::SecurityGroupIngress)",
            "SecretsEndpointSecurityGroup (AWS::EC2::SecurityGroup)",
        ]),
        "what a false condition left out; {context}"
    );
    assert_eq!(other, Vec::<String>::new(), "{context}");
    // Where it stops: the proxy's role reads the database's master secret,
    // `!GetAtt Database.MasterUserSecret.SecretArn`; the skipped database has no
    // attributes, so the engine puts `unknown` in the policy, which IAM refuses.
    assert_eq!(
        failed.keys().collect::<Vec<_>>(),
        ["DatabaseProxyRole"],
        "{context}"
    );
    assert!(
        failed["DatabaseProxyRole"].contains(
            "MalformedPolicyDocument) when calling the PutRolePolicy operation: Resource unknown must be in ARN format"
        ),
        "{failed:?}"
    );
    // The legacy engine deploys one resource at a time in one topological order
    // (Kahn's, from the template's order; engine/resource_ordering.py) and stops
    // at the first failure. Some of these wait on the proxy's role: the proxy, its
    // target group, the roles whose policies name the proxy, the functions and so
    // the custom resource, the SQS endpoint whose policy names the roles. The
    // others (the launch template, the Auto Scaling group, alarms) only come later
    // in that order. Skipped types among them would be skipped too.
    assert_eq!(
        not_reached,
        sorted(&[
            "BreakerErrorsAlarm (AWS::CloudWatch::Alarm)",
            "BreakerFunction (AWS::Lambda::Function)",
            "BreakerFunctionEventInvokeConfig (AWS::Lambda::EventInvokeConfig)",
            "BreakerFunctionEveryMinute (AWS::Scheduler::Schedule)",
            "BreakerFunctionEveryMinuteRole (AWS::IAM::Role)",
            "BreakerRole (AWS::IAM::Role)",
            "ConsumerConflictsAlarm (AWS::CloudWatch::Alarm)",
            "ConsumerErrorsAlarm (AWS::CloudWatch::Alarm)",
            "ConsumerFunction (AWS::Lambda::Function)",
            "ConsumerFunctionAliaslive (AWS::Lambda::Alias)",
            "ConsumerFunctionDeploymentGroup (AWS::CodeDeploy::DeploymentGroup)",
            "ConsumerFunctionOrders (AWS::Lambda::EventSourceMapping)",
            "ConsumerFunctionVersion<hash> (AWS::Lambda::Version)",
            "ConsumerPausedAlarm (AWS::CloudWatch::Alarm)",
            "ConsumerPostponingAlarm (AWS::CloudWatch::Alarm)",
            "ConsumerRole (AWS::IAM::Role)",
            "ConsumerSkewAlarm (AWS::CloudWatch::Alarm)",
            "DatabaseProxy (AWS::RDS::DBProxy)",
            "DatabaseProxyTargetGroup (AWS::RDS::DBProxyTargetGroup)",
            "DatabaseSchema (Custom::DatabaseSchema)",
            "MigrateFunction (AWS::Lambda::Function)",
            "MigrateRole (AWS::IAM::Role)",
            "OldestOrderAgeAlarm (AWS::CloudWatch::Alarm)",
            "OrdersDashboard (AWS::CloudWatch::Dashboard)",
            "ProducerCpuScaling (AWS::AutoScaling::ScalingPolicy)",
            "ProducerGroup (AWS::AutoScaling::AutoScalingGroup)",
            "ProducerLaunchTemplate (AWS::EC2::LaunchTemplate)",
            "ProvisionFunction (AWS::Lambda::Function)",
            "ProvisionFunctionEventInvokeConfig (AWS::Lambda::EventInvokeConfig)",
            "ProvisionRole (AWS::IAM::Role)",
            "PublicCatalogueRule (AWS::ElasticLoadBalancingV2::ListenerRule)",
            "PublicIconRule (AWS::ElasticLoadBalancingV2::ListenerRule)",
            "PublicProbesRule (AWS::ElasticLoadBalancingV2::ListenerRule)",
            "ReleaseHookFunction (AWS::Lambda::Function)",
            "ReleaseHookRole (AWS::IAM::Role)",
            "SecretsManagerEndpoint (AWS::EC2::VPCEndpoint)",
            "SignedInApiRule (AWS::ElasticLoadBalancingV2::ListenerRule)",
            "SqsEndpoint (AWS::EC2::VPCEndpoint)",
            "StatusErrorsAlarm (AWS::CloudWatch::Alarm)",
            "StatusFunction (AWS::Lambda::Function)",
            "StatusInvokePermission (AWS::Lambda::Permission)",
            "StatusRole (AWS::IAM::Role)",
            "StatusRule (AWS::ElasticLoadBalancingV2::ListenerRule)",
            "StatusTargetGroup (AWS::ElasticLoadBalancingV2::TargetGroup)",
        ]),
        "what the create never reached; {context}"
    );

    // What was created holds the template's settings: the orders queue, through
    // the real CLI (v1's sqs commands ignore AWS_ENDPOINT_URL, so --endpoint-url).
    let queue_url = resources["StackResources"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["LogicalResourceId"] == "OrdersQueue")
        .and_then(|r| r["PhysicalResourceId"].as_str())
        .expect("the orders queue's URL")
        .to_owned();
    let attributes = ls.aws(
        &home,
        &[
            "sqs",
            "get-queue-attributes",
            "--endpoint-url",
            &ls.url,
            "--queue-url",
            &queue_url,
            "--attribute-names",
            "VisibilityTimeout",
            "RedrivePolicy",
        ],
    );
    assert_eq!(attributes["Attributes"]["VisibilityTimeout"], "200");
    let redrive: serde_json::Value = serde_json::from_str(
        attributes["Attributes"]["RedrivePolicy"]
            .as_str()
            .expect("a redrive policy"),
    )
    .expect("JSON");
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "6"
    );

    // sam delete: the stack, and what it created, are gone.
    let mut delete = ls.command("sam", &home);
    delete
        .args([
            "delete",
            "--stack-name",
            STACK,
            "--region",
            REGION,
            "--no-prompts",
        ])
        .arg("--config-file")
        .arg(format!("{REPO}/samconfig.toml"))
        .current_dir(&work.0);
    let deleted = run_bounded(delete, DELETE_LIMIT, &ls);
    println!("sam delete took {:.1} s", deleted.took.as_secs_f64());
    assert!(
        deleted.ok && deleted.output.contains("Deleted successfully"),
        "sam delete failed:\n{}",
        deleted.output
    );
    let mut describe = ls.command("aws", &home);
    describe.args(["cloudformation", "describe-stacks", "--stack-name", STACK]);
    let gone = run_bounded(describe, CLI_LIMIT, &ls);
    assert!(
        !gone.ok
            && gone
                .output
                .contains(&format!("Stack with id {STACK} does not exist")),
        "the stack is still there:\n{}",
        gone.output
    );
    let vpcs = ls.aws(
        &home,
        &[
            "ec2",
            "describe-vpcs",
            "--filters",
            "Name=cidr,Values=10.40.0.0/16",
        ],
    );
    assert_eq!(vpcs["Vpcs"], serde_json::json!([]), "the VPC stays");
    let queues = ls.aws(&home, &["sqs", "list-queues", "--endpoint-url", &ls.url]);
    assert!(queues["QueueUrls"].is_null(), "queues stay: {queues}");
    let groups = ls.aws(
        &home,
        &[
            "logs",
            "describe-log-groups",
            "--log-group-name-prefix",
            "/aws/lambda/",
        ],
    );
    assert_eq!(
        groups["logGroups"],
        serde_json::json!([]),
        "log groups stay"
    );
    let secrets = ls.aws(&home, &["secretsmanager", "list-secrets"]);
    assert_eq!(secrets["SecretList"], serde_json::json!([]), "secrets stay");
    // One role stays, an emulator leak: LocalStack's IAM created the proxy's role,
    // then refused its policy, and the stack never recorded the role to delete it.
    let roles: Vec<String> = ls.aws(&home, &["iam", "list-roles"])["Roles"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|r| r["RoleName"].as_str())
        .filter(|name| name.starts_with(&format!("{STACK}-")))
        .map(|name| {
            name.rsplit_once('-')
                .map_or(name, |(head, _)| head)
                .to_owned()
        })
        .collect();
    assert_eq!(roles, [format!("{STACK}-DatabaseProxyRole")], "roles left");
    println!(
        "rehearsal: {:.1} s in all (LocalStack stops next)",
        started.elapsed().as_secs_f64()
    );
}
