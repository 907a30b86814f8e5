//! `sam deploy` alone applies the schema: a custom resource backed by the
//! provision function, which reads the writer's secret, invokes the migrate
//! function in the VPC and answers CloudFormation. Each figure is read from the
//! code's own constants.

use std::collections::BTreeSet;
use support::FromEnv;

use consumer_lambda::migrations::{LATEST_VERSION, STATEMENT_TIMEOUT_SECS};
use consumer_lambda::provision::{MIGRATE_RETRY_BUDGET, RESPONSE_MARGIN};
use infra::{as_u64, reference};

use crate::helpers::{at, get_att, granted, items, properties, template, text};

const SCHEMA: &str = "DatabaseSchema";

#[test]
fn plain_sam_deploy_applies_the_migrations_through_a_custom_resource() {
    let t = template();
    let schema = at(&t, &["Resources", SCHEMA]);
    assert_eq!(schema.get("Type").map(text), Some("Custom::DatabaseSchema"));
    let token = properties(&t, SCHEMA).get("ServiceToken").and_then(get_att);
    assert_eq!(token.as_deref(), Some("ProvisionFunction.Arn"));
    let task = at(
        &t,
        &[
            "Resources",
            "ProvisionFunction",
            "Properties",
            "Environment",
            "Variables",
            "TASK",
        ],
    );
    assert_eq!(text(task), "provision");
}

#[test]
fn a_new_migration_changes_the_custom_resource_so_the_next_deploy_applies_it() {
    // CloudFormation sends Update only when a property changed
    // (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-requesttypes-update.html).
    let t = template();
    let version = properties(&t, SCHEMA)
        .get("SchemaVersion")
        .and_then(as_u64)
        .expect("DatabaseSchema's SchemaVersion");
    assert_eq!(
        version,
        u64::try_from(LATEST_VERSION).expect("a positive version"),
        "set DatabaseSchema's SchemaVersion to the newest migration's version"
    );
    // So does a new writer name, and a new migrate function.
    let p = properties(&t, SCHEMA);
    assert_eq!(
        p.get("WriterUsername").and_then(reference),
        Some("DatabaseWriterUsername")
    );
    assert_eq!(
        p.get("MigrateFunction").and_then(reference),
        Some("MigrateFunction")
    );
}

#[test]
fn the_custom_resource_is_given_the_secrets_arn_never_its_value() {
    // Dynamic references to secrets are not supported in custom resource
    // properties (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/dynamic-references-secretsmanager.html).
    let t = template();
    let p = properties(&t, SCHEMA);
    let yaml = serde_yaml_ng::to_string(p).expect("properties serialise");
    assert!(!yaml.contains("{{resolve:"), "{yaml}");
    for (property, secret) in [
        ("WriterSecret", "DatabaseWriterSecret"),
        ("ReaderSecret", "DatabaseReaderSecret"),
    ] {
        assert_eq!(p.get(property).and_then(reference), Some(secret));
    }
    // The task reads the same secrets: a change of either re-runs it.
    let task = at(
        &t,
        &[
            "Resources",
            "ProvisionFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    let config = consumer_lambda::config::ProvisionConfig::from_lookup(|name| {
        task.get(name).and_then(reference).map(str::to_owned)
    })
    .unwrap_or_else(|err| panic!("the provision task refuses the template's environment: {err}"));
    assert_eq!(config.writer_secret_arn, "DatabaseWriterSecret");
    assert_eq!(
        config.reader_secret_arn.as_deref(),
        Some("DatabaseReaderSecret")
    );
}

#[test]
fn the_migrations_wait_for_the_proxys_target_and_every_rule_on_the_path_to_the_database() {
    let t = template();
    let depends: BTreeSet<&str> = items(at(&t, &["Resources", SCHEMA]).get("DependsOn"))
        .into_iter()
        .map(text)
        .collect();
    // The migrate function (in ConsumerSecurityGroup) → RDS Proxy → the database.
    for needed in [
        "DatabaseProxyTargetGroup",
        "ConsumerToProxy",
        "ProxyFromConsumer",
        "ProxyToDatabase",
        "DatabaseFromProxy",
    ] {
        assert!(
            depends.contains(needed),
            "DatabaseSchema must depend on {needed}"
        );
    }
}

#[test]
fn the_migrate_function_outlasts_a_migrations_statement_timeout_and_fits_one_try() {
    let t = template();
    let timeout = t
        .number(&["Resources", "MigrateFunction", "Properties", "Timeout"])
        .or_else(|_| t.number(&["Globals", "Function", "Timeout"]))
        .expect("MigrateFunction's Timeout");
    // A statement PostgreSQL cancels fails with its reason, which the
    // provision function reports; Lambda's timeout would only say "timed out".
    // The margin: connecting (5 s at most), the lock wait, the grants.
    assert!(
        u64::from(STATEMENT_TIMEOUT_SECS) + 30 <= timeout,
        "MigrateFunction's Timeout ({timeout} s) must outlast a migration's statement_timeout ({STATEMENT_TIMEOUT_SECS} s) by 30 s"
    );
    assert!(std::time::Duration::from_secs(timeout) <= MIGRATE_RETRY_BUDGET);
}

#[test]
fn cloudformation_hears_an_answer_before_its_service_timeout_even_when_the_function_times_out() {
    let t = template();
    let function = properties(&t, "ProvisionFunction");
    let timeout = function
        .get("Timeout")
        .and_then(as_u64)
        .expect("ProvisionFunction's Timeout");
    let service_timeout = properties(&t, SCHEMA)
        .get("ServiceTimeout")
        .and_then(as_u64)
        .expect("DatabaseSchema's ServiceTimeout");
    // The function answers RESPONSE_MARGIN before its own deadline, after at most
    // MIGRATE_RETRY_BUDGET of retries; CloudFormation waits at most ServiceTimeout
    // (1-3600 s, https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudformation-customresource.html).
    assert!(MIGRATE_RETRY_BUDGET + RESPONSE_MARGIN <= std::time::Duration::from_secs(timeout));
    assert!(timeout < service_timeout && service_timeout <= 3600);
    // Invoked asynchronously by CloudFormation
    // (https://docs.aws.amazon.com/lambda/latest/dg/services-cloudformation.html): a retry
    // after an answer would run the migrations again for nothing.
    let retries = function
        .get("EventInvokeConfig")
        .and_then(|c| c.get("MaximumRetryAttempts"))
        .and_then(as_u64);
    assert_eq!(retries, Some(0));
}

#[test]
fn the_provision_function_runs_outside_the_vpc_where_s3_secrets_manager_and_lambda_are_reachable() {
    // The private subnets have no route out and no endpoint for S3, Secrets Manager
    // or Lambda; the answer must reach CloudFormation's presigned S3 URL
    // (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/crpg-ref-responses.html).
    let t = template();
    assert!(
        properties(&t, "ProvisionFunction")
            .get("VpcConfig")
            .is_none()
    );
}

#[test]
fn the_provision_function_may_only_read_the_roles_secrets_and_invoke_the_migrate_function() {
    let t = template();
    let granted = granted(&t, "ProvisionRole");
    let expected: BTreeSet<(String, String)> = [
        ("logs:CreateLogStream", "${ProvisionLogGroup.Arn}"),
        ("logs:PutLogEvents", "${ProvisionLogGroup.Arn}"),
        ("secretsmanager:GetSecretValue", "Ref:DatabaseWriterSecret"),
        ("secretsmanager:GetSecretValue", "Ref:DatabaseReaderSecret"),
        ("lambda:InvokeFunction", "MigrateFunction.Arn"),
    ]
    .into_iter()
    .map(|(a, r)| (a.to_owned(), r.to_owned()))
    .collect();
    assert_eq!(granted, expected);
}
