//! The database, RDS Proxy in front of it, and the connections the consumer may hold.

use std::collections::BTreeSet;
use support::FromEnv;

use infra::{Value, as_u64, intrinsic, reference};

use crate::helpers::{
    actions, at, default_of, function_timeout, get_att, is_private_subnet_list, items, properties,
    role_statements, template, text, truthy,
};

/// The least `ScalingConfig.MaximumConcurrency` Lambda accepts for an SQS event source
/// (https://docs.aws.amazon.com/lambda/latest/api/API_ScalingConfig.html).
const LAMBDA_MIN_MAXIMUM_CONCURRENCY: u64 = 2;

/// Memory of the DB instance classes, in MiB, from AWS's hardware specifications
/// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Concepts.DBInstanceClass.Summary.html;
/// the same sizes as the EC2 types at https://aws.amazon.com/ec2/instance-types/).
/// A class missing here fails the budget check: add it rather than guess.
const INSTANCE_CLASS_MEMORY_MIB: &[(&str, u64)] = &[
    ("db.t3.micro", 1024),
    ("db.t3.small", 2048),
    ("db.t3.medium", 4096),
    ("db.t3.large", 8192),
    ("db.t4g.micro", 1024),
    ("db.t4g.small", 2048),
    ("db.t4g.medium", 4096),
    ("db.t4g.large", 8192),
    ("db.m7g.large", 8192),
    ("db.r7g.large", 16384),
];

/// What RDS keeps of a class's memory for the OS and its own processes:
/// `DBInstanceClassMemory` is the rest, "always somewhat lower" than the class's
/// memory (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_ParamValuesRef.html).
/// AWS publishes no figure. 288 MiB is our assumption; it leaves a db.t4g.micro
/// the 80 connections the template's comments and docs/deploy.md plan with. Raise it
/// if a deployed instance shows fewer (`SHOW max_connections`).
const RDS_RESERVED_MIB: u64 = 288;

/// RDS for PostgreSQL's default `max_connections`:
/// `LEAST({DBInstanceClassMemory/9531392}, 5000)`
/// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/CHAP_Limits.html#RDS_Limits.MaxConnections).
fn max_connections(class: &str) -> u64 {
    let (_, memory_mib) = INSTANCE_CLASS_MEMORY_MIB
        .iter()
        .find(|(name, _)| *name == class)
        .unwrap_or_else(|| {
            panic!("{class} is not in INSTANCE_CLASS_MEMORY_MIB: add its memory from AWS's table")
        });
    let class_memory = (memory_mib - RDS_RESERVED_MIB) * 1024 * 1024;
    (class_memory / 9_531_392).min(5000)
}

#[test]
fn a_db_t4g_micro_allows_the_80_connections_the_deploy_doc_plans_with() {
    assert_eq!(max_connections("db.t4g.micro"), 80);
}

#[test]
fn the_consumer_and_the_reader_together_stay_within_the_proxys_connection_budget() {
    let t = template();
    let path = [
        "Resources",
        "ConsumerFunction",
        "Properties",
        "Events",
        "Orders",
        "Properties",
        "ScalingConfig",
        "MaximumConcurrency",
    ];
    let default: u64 = t
        .number(&path)
        .expect("ScalingConfig.MaximumConcurrency must be set");
    let largest: u64 = t.largest(&path).expect("MaximumConcurrency, bounded");
    let percent: u64 = t
        .number(&[
            "Resources",
            "DatabaseProxyTargetGroup",
            "Properties",
            "ConnectionPoolConfigurationInfo",
            "MaxConnectionsPercent",
        ])
        .expect("the proxy's MaxConnectionsPercent");
    let class = default_of(
        &t,
        properties(&t, "Database")
            .get("DBInstanceClass")
            .expect("the database's DBInstanceClass"),
    )
    .map(text)
    .expect("DBInstanceClass is a !Ref to a parameter with a default");
    let connections = max_connections(class);
    let budget = connections * percent / 100;
    // The reader's role is capped in the database, so reads can never take
    // the connections the consumer's writes need.
    let reader = u64::from(consumer_lambda::migrations::READER_CONNECTION_LIMIT);
    assert!(
        default >= LAMBDA_MIN_MAXIMUM_CONCURRENCY && largest + reader <= budget,
        "MaximumConcurrency (default {default}, at most {largest}) must be at least \
         {LAMBDA_MIN_MAXIMUM_CONCURRENCY}, and with the reader's {reader} connections stay \
         within the proxy's {percent} % of a {class}'s {connections} connections ({budget}): \
         one connection per concurrent invocation"
    );
    for place in [
        &["Resources", "ConsumerFunction", "Properties"][..],
        &["Globals", "Function"][..],
    ] {
        let node = at(&t, place);
        assert!(
            node.get("ReservedConcurrentExecutions").is_none(),
            "{}: no reserved concurrency; it throttles polled batches and sends valid orders towards the DLQ \
             (MaximumConcurrency bounds concurrency instead)",
            place.join(".")
        );
    }
}

#[test]
fn the_database_is_private_encrypted_backed_up_and_takes_iam_authentication() {
    let t = template();
    let db = properties(&t, "Database");
    for (property, why) in [
        ("StorageEncrypted", "encrypt the storage"),
        ("EnableIAMDatabaseAuthentication", "IAM authentication"),
        (
            "ManageMasterUserPassword",
            "RDS keeps the master password in Secrets Manager",
        ),
    ] {
        assert!(
            truthy(db.get(property)),
            "Database needs {property}: true ({why})"
        );
    }
    assert!(
        db.get("PubliclyAccessible").is_some() && !truthy(db.get("PubliclyAccessible")),
        "Database needs PubliclyAccessible: false"
    );
    assert!(
        db.get("MasterUserPassword").is_none(),
        "no MasterUserPassword in the template: RDS manages it"
    );
    let backups = db
        .get("BackupRetentionPeriod")
        .and_then(|v| as_u64(v).or_else(|| default_of(&t, v).and_then(as_u64)));
    assert!(
        backups.is_some_and(|days| days >= 1),
        "Database needs BackupRetentionPeriod of at least 1 day, found {backups:?}"
    );
    let protection = db
        .get("DeletionProtection")
        .and_then(reference)
        .expect("DeletionProtection should be a parameter");
    // A protected instance cannot be deleted, so a failed first create would end in
    // ROLLBACK_FAILED with the database still billed: protection is off at create,
    // and scripts/deploy turns it on once the stack is up.
    assert_eq!(
        at(&t, &["Parameters", protection, "Default"]).as_str(),
        Some("false"),
        "deletion protection must be off by default, so that a failed first create rolls back"
    );

    assert_eq!(
        at(&t, &["Resources", "Database", "DeletionPolicy"]).as_str(),
        Some("Snapshot"),
        "deleting the stack must leave a final snapshot"
    );
    assert!(
        is_private_subnet_list(properties(&t, "DatabaseSubnetGroup").get("SubnetIds")),
        "the database's subnet group holds the private subnets only"
    );
}

#[test]
fn the_proxy_requires_tls_and_iam_and_logs_in_with_one_secret_per_user() {
    let t = template();
    let proxy = properties(&t, "DatabaseProxy");
    assert!(
        truthy(proxy.get("RequireTLS")),
        "DatabaseProxy needs RequireTLS: true"
    );
    // https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-secrets-arns.html:
    // the proxy logs in as a user with that user's secret, one secret each.
    let auth = items(proxy.get("Auth"));
    let secrets: Vec<String> = auth
        .iter()
        .map(|entry| {
            assert_eq!(entry.get("AuthScheme").map(text), Some("SECRETS"));
            assert_eq!(
                entry.get("IAMAuth").map(text),
                Some("REQUIRED"),
                "{entry:?}"
            );
            let arn = entry.get("SecretArn").expect("SecretArn");
            get_att(arn)
                .or_else(|| reference(arn).map(str::to_owned))
                .expect("a secret of the stack")
        })
        .collect();
    assert_eq!(
        secrets,
        [
            "Database.MasterUserSecret.SecretArn",
            "DatabaseWriterSecret",
            "DatabaseReaderSecret"
        ],
        "the master user (for the migrate function), the writer (for the consumer) and the \
         reader (for the status function)"
    );
    assert!(is_private_subnet_list(proxy.get("VpcSubnetIds")));

    let read = role_statements(&t, "DatabaseProxyRole");
    assert_eq!(
        read.len(),
        1,
        "the proxy's role reads the secrets, nothing else"
    );
    let statement = read.values().next().expect("statement");
    assert_eq!(
        actions(statement),
        BTreeSet::from(["secretsmanager:GetSecretValue".to_owned()])
    );
    let readable: Vec<String> = items(statement.get("Resource"))
        .into_iter()
        .map(|arn| {
            get_att(arn)
                .or_else(|| reference(arn).map(str::to_owned))
                .expect("a secret of the stack")
        })
        .collect();
    assert_eq!(
        readable, secrets,
        "exactly the secrets the proxy logs in with"
    );
}

#[test]
fn the_roles_secrets_name_their_users_and_need_no_normalising() {
    let t = template();
    for (secret, user) in [
        ("DatabaseWriterSecret", "DatabaseWriterUsername"),
        ("DatabaseReaderSecret", "DatabaseReaderUsername"),
    ] {
        let generate = properties(&t, secret)
            .get("GenerateSecretString")
            .expect("a generated password");
        let template_text = match intrinsic(generate.get("SecretStringTemplate").expect("template"))
        {
            Some((tag, Value::String(text))) if tag == "Sub" => text.clone(),
            other => panic!("SecretStringTemplate should be a !Sub, found {other:?}"),
        };
        assert_eq!(template_text, format!(r#"{{"username": "${{{user}}}"}}"#));
        assert_eq!(
            generate.get("GenerateStringKey").map(text),
            Some("password")
        );
        // Letters and digits only: SASLprep leaves such a password as it is, so the
        // provision task's verifier and any client's login agree on it.
        assert!(truthy(generate.get("ExcludePunctuation")), "{secret}");
        assert!(
            generate
                .get("PasswordLength")
                .and_then(as_u64)
                .is_some_and(|length| length >= 32),
            "{secret}: a long password"
        );
    }

    let migrate = at(
        &t,
        &[
            "Resources",
            "MigrateFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    assert_eq!(migrate.get("TASK").map(text), Some("migrate"));
    assert_eq!(
        migrate.get("DB_WRITER_USER").and_then(reference),
        Some("DatabaseWriterUsername"),
        "the migrate function grants the user the consumer logs in as"
    );
    let config = consumer_lambda::config::MigrateConfig::from_lookup(|name| {
        migrate.get(name).map(|value| match reference(value) {
            Some(parameter) => text(at(&t, &["Parameters", parameter, "Default"])).to_owned(),
            None => text(value).to_owned(),
        })
    })
    .unwrap_or_else(|err| panic!("the migrate task refuses the template's environment: {err}"));
    assert_eq!(config.writer, consumer_lambda::migrations::DEFAULT_WRITER);
    assert_eq!(
        config.reader.as_deref(),
        Some(consumer_lambda::migrations::DEFAULT_READER),
        "the migrate function grants the user the status function logs in as"
    );
    let status = at(
        &t,
        &[
            "Resources",
            "StatusFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    assert_eq!(
        status.get("DB_USER").and_then(reference),
        Some("DatabaseReaderUsername")
    );
}

#[test]
fn the_proxy_gives_up_on_a_pooled_connection_well_before_the_handler_stops_waiting() {
    let t = template();
    let timeout = function_timeout(&t);
    let borrow: u64 = t
        .number(&[
            "Resources",
            "DatabaseProxyTargetGroup",
            "Properties",
            "ConnectionPoolConfigurationInfo",
            "ConnectionBorrowTimeout",
        ])
        .expect("ConnectionBorrowTimeout, set explicitly (AWS's default is 120 s)");
    let usable = timeout.saturating_sub(consumer_lambda::DEADLINE_MARGIN.as_secs());
    // 0 means "wait forever" to RDS Proxy. Half the usable time leaves the other
    // half for the insert itself once a connection is borrowed.
    assert!(
        borrow >= 1 && 2 * borrow <= usable,
        "ConnectionBorrowTimeout is {borrow} s: it must be at least 1 s and at most half of the function's \
         {timeout} s Timeout minus the handler's {} s deadline margin ({usable} s), so that an exhausted \
         pool fails the connection while the handler can still postpone its records",
        consumer_lambda::DEADLINE_MARGIN.as_secs()
    );
}
