//! Releases of the consumer: the alias, CodeDeploy's deployment preference, the
//! pre-traffic hook and its permissions, and the alarms that roll a release
//! back; read from the template as SAM expands it (`samtranslator`, in
//! `.dev/venv-sam`), since the alias, the deployment group and CodeDeploy's
//! role exist only there.

use std::collections::BTreeSet;
use std::time::Duration;

use breaker::hook::REPORT_MARGIN;
use serde_json::{Value, json};

use crate::helpers::{REPO, TEMPLATE, function_timeout, granted, template};

/// SAM's transform, offline: local code paths stand in as S3 URIs (what `sam
/// build` uploads), and no managed policy needs looking up.
const EXPAND: &str = r#"
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for resource in template.get("Resources", {}).values():
    props = resource.get("Properties") or {}
    for key in ("CodeUri", "ContentUri"):
        if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
            props[key] = "s3://bucket/" + props[key].lstrip("./")
json.dump(transform(template, {}, NoManagedPolicies()), sys.stdout)
"#;

/// The template after SAM's transform, as CloudFormation deploys it
/// (transformed once for all these tests: it takes seconds).
fn expanded() -> &'static Value {
    static EXPANDED: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    EXPANDED.get_or_init(transformed)
}

fn transformed() -> Value {
    let output = std::process::Command::new("bash")
        .args([
            "-c",
            r#"source "$1/scripts/lib/common.sh" && source "$1/scripts/lib/infra.sh" &&
            ensure_sam_cli >&2 && "$SAM_VENV/bin/python" -c "$2" "$3""#,
            "bash",
            REPO,
            EXPAND,
            TEMPLATE,
        ])
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "SAM's transform failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the expanded template is JSON")
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    let found = &t["Resources"][id];
    assert!(
        !found.is_null(),
        "no resource {id} in the expanded template"
    );
    found
}

/// The one resource of `kind` whose id starts with `prefix` (SAM adds a hash
/// to a version's id).
fn only<'a>(t: &'a Value, kind: &str, prefix: &str) -> (&'a str, &'a Value) {
    let found: Vec<(&str, &Value)> = t["Resources"]
        .as_object()
        .expect("resources")
        .iter()
        .filter(|(id, r)| id.starts_with(prefix) && r["Type"] == kind)
        .map(|(id, r)| (id.as_str(), r))
        .collect();
    assert_eq!(found.len(), 1, "one {kind} named {prefix}*: {found:?}");
    found[0]
}

#[test]
fn the_mapping_invokes_the_alias_whose_updates_codedeploy_runs_after_the_hook() {
    let t = expanded();
    let (alias_id, alias) = only(t, "AWS::Lambda::Alias", "ConsumerFunctionAlias");
    assert_eq!(alias["Properties"]["Name"], "live");
    let (version_id, _) = only(t, "AWS::Lambda::Version", "ConsumerFunctionVersion");
    assert_eq!(
        alias["Properties"]["FunctionVersion"],
        json!({"Fn::GetAtt": [version_id, "Version"]})
    );
    assert_eq!(
        alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"],
        json!({
            "ApplicationName": {"Ref": "ServerlessDeploymentApplication"},
            "DeploymentGroupName": {"Ref": "ConsumerFunctionDeploymentGroup"},
            "BeforeAllowTrafficHook": {"Ref": "ReleaseHookFunction"},
        })
    );
    // Batches follow the alias's weights only if the mapping invokes the alias.
    assert_eq!(
        resource(t, "ConsumerFunctionOrders")["Properties"]["FunctionName"],
        json!({"Ref": alias_id})
    );
}

/// CodeDeploy's predefined configurations for Lambda
/// (https://docs.aws.amazon.com/codedeploy/latest/userguide/deployment-configurations.html).
const LAMBDA_CONFIGS: &[&str] = &[
    "Canary10Percent5Minutes",
    "Canary10Percent10Minutes",
    "Canary10Percent15Minutes",
    "Canary10Percent30Minutes",
    "Linear10PercentEvery1Minute",
    "Linear10PercentEvery2Minutes",
    "Linear10PercentEvery3Minutes",
    "Linear10PercentEvery10Minutes",
    "AllAtOnce",
];

#[test]
fn the_shift_is_a_canary_by_default_and_all_at_once_is_allowed_for_a_trial_stack() {
    let t = template();
    let default = t
        .get(&["Parameters", "ConsumerDeploymentType", "Default"])
        .expect("the parameter");
    assert!(
        default.as_str().is_some_and(|d| d.starts_with("Canary")),
        "{default:?}"
    );
    let allowed: Vec<String> = t
        .get(&["Parameters", "ConsumerDeploymentType", "AllowedValues"])
        .expect("its allowed values")
        .as_sequence()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(allowed.iter().any(|a| a == "AllAtOnce"), "{allowed:?}");
    for value in &allowed {
        assert!(
            LAMBDA_CONFIGS.contains(&value.as_str()),
            "{value} is no CodeDeploy config"
        );
    }

    let group = &resource(expanded(), "ConsumerFunctionDeploymentGroup")["Properties"];
    assert_eq!(
        group["DeploymentConfigName"]["Fn::Sub"][0],
        "CodeDeployDefault.Lambda${ConfigName}"
    );
    let rollback: BTreeSet<&str> = group["AutoRollbackConfiguration"]["Events"]
        .as_array()
        .expect("rollback events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(group["AutoRollbackConfiguration"]["Enabled"] == true);
    for event in ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"] {
        assert!(rollback.contains(event), "{rollback:?}");
    }
}

#[test]
fn consumer_errors_postponements_skew_and_dead_letters_roll_a_release_back() {
    let t = expanded();
    let alarms =
        &resource(t, "ConsumerFunctionDeploymentGroup")["Properties"]["AlarmConfiguration"];
    assert_eq!(alarms["Enabled"], true);
    let named: BTreeSet<String> = alarms["Alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|a| {
            a["Name"]["Ref"]
                .as_str()
                .expect("a Ref to an alarm")
                .to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = [
        "ConsumerErrorsAlarm",
        "ConsumerPostponingAlarm",
        "ConsumerSkewAlarm",
        "DeadLetterQueueNotEmptyAlarm",
    ]
    .map(String::from)
    .into();
    assert_eq!(named, expected);
    // Each watches the consumer function (all its versions) or the DLQ.
    for name in &named {
        let dimension = &resource(t, name)["Properties"]["Dimensions"][0];
        let watched = (dimension["Name"].as_str(), &dimension["Value"]);
        assert!(
            watched == (Some("FunctionName"), &json!({"Ref": "ConsumerFunction"}))
                || watched
                    == (
                        Some("QueueName"),
                        &json!({"Fn::GetAtt": ["OrdersDeadLetterQueue", "QueueName"]})
                    ),
            "{name} watches {watched:?}"
        );
    }
}

#[test]
fn the_hook_is_the_breakers_binary_named_so_codedeploy_may_invoke_it() {
    let t = expanded();
    let hook = resource(t, "ReleaseHookFunction");
    // SAM gives CodeDeploy AWSCodeDeployRoleForLambda, which invokes only
    // functions named CodeDeployHook_*.
    let name = hook["Properties"]["FunctionName"]["Fn::Sub"]
        .as_str()
        .expect("a !Sub name");
    assert!(name.starts_with("CodeDeployHook_"), "{name}");
    assert_eq!(
        resource(t, "CodeDeployServiceRole")["Properties"]["ManagedPolicyArns"],
        json!(["arn:aws:iam::aws:policy/service-role/AWSCodeDeployRoleForLambda"])
    );
    let (version_id, _) = only(t, "AWS::Lambda::Version", "ConsumerFunctionVersion");
    assert_eq!(
        hook["Properties"]["Environment"]["Variables"],
        json!({"TASK": "hook", "CONSUMER_VERSION": {"Ref": version_id}})
    );
    assert_eq!(hook["Metadata"]["BuildProperties"]["Binary"], "breaker");
    // Not a release of its own: no alias, no deployment group.
    let releases: Vec<&String> = t["Resources"]
        .as_object()
        .expect("resources")
        .keys()
        .filter(|id| id.starts_with("ReleaseHookFunction") && *id != "ReleaseHookFunction")
        .collect();
    assert!(releases.is_empty(), "{releases:?}");
}

#[test]
fn the_hook_may_invoke_the_new_version_only_and_report_on_the_consumers_group_only() {
    let t = template();
    let group = "arn:${AWS::Partition}:codedeploy:${AWS::Region}:${AWS::AccountId}:deploymentgroup:${ServerlessDeploymentApplication}/${ConsumerFunctionDeploymentGroup}";
    let expected: BTreeSet<(String, String)> = [
        ("logs:CreateLogStream", "${ReleaseHookLogGroup.Arn}"),
        ("logs:PutLogEvents", "${ReleaseHookLogGroup.Arn}"),
        ("lambda:InvokeFunction", "Ref:ConsumerFunction.Version"),
        ("codedeploy:PutLifecycleEventHookExecutionStatus", group),
    ]
    .into_iter()
    .map(|(a, r)| (a.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(granted(&t, "ReleaseHookRole"), expected);
}

#[test]
fn the_hook_outlasts_the_consumers_invocation_and_still_reports() {
    let t = template();
    let hook = t
        .number(&["Resources", "ReleaseHookFunction", "Properties", "Timeout"])
        .expect("the hook's Timeout");
    // A cold start in the VPC, on top of the consumer's own timeout, before
    // the invoke gives up and the hook reports.
    let cold_start = Duration::from_secs(30);
    assert!(
        Duration::from_secs(hook)
            >= Duration::from_secs(function_timeout(&t)) + cold_start + REPORT_MARGIN,
        "hook Timeout {hook} s"
    );
}

#[test]
fn the_producers_instances_are_replaced_only_after_the_consumers_release() {
    // A producer that writes a newer message shape must not run before a
    // consumer that reads it (issue 33's catalogue version came that way):
    // CloudFormation updates a resource after those it depends on.
    let t = expanded();
    let alias = resource(t, "ConsumerFunctionAliaslive");
    assert_eq!(alias["Type"], "AWS::Lambda::Alias");
    let depends_on: Vec<&str> = resource(t, "ProducerGroup")["DependsOn"]
        .as_array()
        .expect("ProducerGroup's DependsOn is a list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        depends_on.contains(&"ConsumerFunctionAliaslive"),
        "{depends_on:?}"
    );
}
