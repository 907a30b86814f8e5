//! The claims `infra/template.yaml` makes, checked on the parsed template without
//! AWS: queue and event-source settings, least-privilege IAM, encryption, the
//! network's openings, and that what the template hands the consumer and the
//! producer is what their configuration code accepts. cfn-lint, checkov and
//! `sam validate` (scripts/check-infra) check the template's form; these check
//! what it means for this system.

use std::collections::{BTreeSet, HashMap};

use consumer_lambda::config::DbAuth;
use local_esm::Template;
use local_esm::template::{Document, Value, as_u64, intrinsic, reference};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Connections a db.t4g.micro (1 GiB) accepts in all: RDS sets max_connections to
/// DBInstanceClassMemory / 9531392, a little over 80 once the OS has its share.
const DB_T4G_MICRO_MAX_CONNECTIONS: u64 = 80;

fn template() -> Document {
    Document::from_file(TEMPLATE).expect("infra/template.yaml is readable YAML")
}

fn at<'a>(t: &'a Document, path: &[&str]) -> &'a Value {
    t.get(path).unwrap_or_else(|err| panic!("{err}"))
}

fn properties<'a>(t: &'a Document, resource: &str) -> &'a Value {
    at(t, &["Resources", resource, "Properties"])
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// A YAML boolean, or the strings CloudFormation reads as one.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// `!GetAtt Resource.Attribute` as "Resource.Attribute".
fn get_att(value: &Value) -> Option<String> {
    match intrinsic(value)? {
        (tag, Value::String(target)) if tag == "GetAtt" => Some(target.clone()),
        (tag, Value::Sequence(parts)) if tag == "GetAtt" => {
            Some(parts.iter().map(text).collect::<Vec<_>>().join("."))
        }
        _ => None,
    }
}

/// A list, or one value standing for a list of one (as IAM allows).
fn items(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Sequence(list)) => list.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

/// The parameter's default, for a `!Ref` to a parameter.
fn default_of<'a>(t: &'a Document, value: &Value) -> Option<&'a Value> {
    t.get(&["Parameters", reference(value)?, "Default"]).ok()
}

/// A port: a number, or a `!Ref` to a parameter with a numeric default.
fn port(t: &Document, value: &Value) -> u64 {
    as_u64(value)
        .or_else(|| default_of(t, value).and_then(as_u64))
        .unwrap_or_else(|| panic!("{value:?} is not a port number"))
}

// --- the queues and the event source ---------------------------------------------

#[test]
fn the_visibility_timeout_covers_six_function_timeouts_plus_the_largest_batching_window() {
    let t = template();
    let visibility: u64 = t
        .number(&[
            "Resources",
            "OrdersQueue",
            "Properties",
            "VisibilityTimeout",
        ])
        .expect("VisibilityTimeout");
    let timeout: u64 = t
        .number(&["Resources", "ConsumerFunction", "Properties", "Timeout"])
        .or_else(|_| t.number(&["Globals", "Function", "Timeout"]))
        .expect("the function's Timeout (on the function or in Globals)");
    let window: u64 = t
        .largest(&[
            "Resources",
            "ConsumerFunction",
            "Properties",
            "Events",
            "Orders",
            "Properties",
            "MaximumBatchingWindowInSeconds",
        ])
        .expect("the batching window, bounded");
    assert!(
        visibility >= 6 * timeout + window,
        "OrdersQueue's VisibilityTimeout is {visibility} s, below 6 × the function timeout ({timeout} s) \
         + the largest batching window ({window} s) = {} s: raise it, or lower the \
         MaximumBatchingWindowInSeconds parameter's MaxValue",
        6 * timeout + window
    );
}

#[test]
fn a_message_is_received_at_least_three_times_before_it_moves_to_the_dlq() {
    let t = template();
    let path = [
        "Resources",
        "OrdersQueue",
        "Properties",
        "RedrivePolicy",
        "maxReceiveCount",
    ];
    let default: u64 = t.number(&path).expect("maxReceiveCount");
    assert!(
        default >= 3,
        "maxReceiveCount defaults to {default}: at least 3, so one transient failure cannot park an order"
    );
    if let Some(parameter) = reference(at(&t, &path)) {
        let min = t
            .get(&["Parameters", parameter, "MinValue"])
            .ok()
            .and_then(as_u64);
        assert!(
            min.is_some_and(|min| min >= 3),
            "parameter {parameter} needs MinValue: 3 (it has {min:?}), so no deploy can set fewer receives"
        );
    }
    assert_eq!(
        get_att(at(&t, &[&path[..4], &["deadLetterTargetArn"]].concat())).as_deref(),
        Some("OrdersDeadLetterQueue.Arn"),
        "OrdersQueue must redrive to OrdersDeadLetterQueue"
    );
}

#[test]
fn the_event_source_reports_batch_item_failures() {
    let t = template();
    let types = at(
        &t,
        &[
            "Resources",
            "ConsumerFunction",
            "Properties",
            "Events",
            "Orders",
            "Properties",
            "FunctionResponseTypes",
        ],
    );
    assert!(
        items(Some(types))
            .iter()
            .any(|v| text(v) == "ReportBatchItemFailures"),
        "the SQS event needs FunctionResponseTypes: [ReportBatchItemFailures], or one bad record fails its whole batch"
    );
}

#[test]
fn the_event_source_caps_concurrency_within_the_proxys_connection_budget() {
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
    let budget = DB_T4G_MICRO_MAX_CONNECTIONS * percent / 100;
    assert!(
        default >= 2 && largest <= budget,
        "MaximumConcurrency (default {default}, at most {largest}) must stay within the proxy's share of a \
         db.t4g.micro ({budget} connections): one connection per concurrent invocation"
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
fn the_local_stack_reads_the_same_queue_and_event_settings_as_the_template_declares() {
    let t = template();
    let local = Template::parse(&std::fs::read_to_string(TEMPLATE).expect("template"))
        .expect("local-esm reads the template");
    let raw = |path: &[&str]| as_u64(at(&t, path));
    let parameter_default = |name: &str| raw(&["Parameters", name, "Default"]);
    let queue = |p: &str| raw(&["Resources", "OrdersQueue", "Properties", p]);

    assert_eq!(
        Some(u64::from(local.queues.visibility_timeout_secs)),
        queue("VisibilityTimeout")
    );
    assert_eq!(
        Some(u64::from(local.queues.retention_secs)),
        queue("MessageRetentionPeriod")
    );
    assert_eq!(
        Some(u64::from(local.queues.dlq_retention_secs)),
        raw(&[
            "Resources",
            "OrdersDeadLetterQueue",
            "Properties",
            "MessageRetentionPeriod"
        ])
    );
    assert_eq!(
        Some(u64::from(local.queues.max_receive_count)),
        parameter_default("MaxReceiveCount"),
        "the local redrive policy must use the MaxReceiveCount parameter's default"
    );
    assert_eq!(
        Some(local.event_source.batch_size as u64),
        parameter_default("BatchSize")
    );
    assert_eq!(
        Some(local.event_source.batching_window.as_secs()),
        parameter_default("MaximumBatchingWindowInSeconds")
    );
    assert_eq!(
        Some(local.event_source.max_concurrency as u64),
        parameter_default("MaximumConcurrency")
    );
}

#[test]
fn both_queues_are_encrypted_and_refuse_requests_without_tls() {
    let t = template();
    let queues = ["OrdersQueue", "OrdersDeadLetterQueue"];
    for queue in queues {
        let p = properties(&t, queue);
        assert!(
            truthy(p.get("SqsManagedSseEnabled")) || p.get("KmsMasterKeyId").is_some(),
            "{queue} must be encrypted at rest: SqsManagedSseEnabled: true or a KmsMasterKeyId"
        );
    }
    let denied: BTreeSet<String> = t
        .resources_of_type("AWS::SQS::QueuePolicy")
        .flat_map(|(_, policy)| {
            items(
                policy
                    .get("Properties")
                    .and_then(|p| p.get("PolicyDocument"))
                    .and_then(|d| d.get("Statement")),
            )
            .into_iter()
            .filter(|s| text(s.get("Effect").unwrap_or(&Value::Null)) == "Deny")
            .filter(|s| {
                s.get("Condition")
                    .and_then(|c| c.get("Bool"))
                    .and_then(|b| b.get("aws:SecureTransport"))
                    .is_some_and(|v| !truthy(Some(v)))
            })
            .flat_map(|s| items(s.get("Resource")))
            .filter_map(get_att)
            .collect::<Vec<_>>()
        })
        .collect();
    for queue in queues {
        assert!(
            denied.contains(&format!("{queue}.Arn")),
            "a queue policy must deny requests to {queue} when aws:SecureTransport is false"
        );
    }
}

#[test]
fn the_dlq_keeps_orders_fourteen_days_and_takes_redrives_only_from_the_orders_queue() {
    let t = template();
    let dlq = properties(&t, "OrdersDeadLetterQueue");
    assert_eq!(
        dlq.get("MessageRetentionPeriod").and_then(as_u64),
        Some(14 * 24 * 3600),
        "the DLQ keeps messages 14 days (1209600 s), the most SQS allows"
    );
    let allow = dlq
        .get("RedriveAllowPolicy")
        .expect("OrdersDeadLetterQueue needs a RedriveAllowPolicy");
    assert_eq!(allow.get("redrivePermission").map(text), Some("byQueue"));
    let sources: Vec<String> = items(allow.get("sourceQueueArns"))
        .into_iter()
        .filter_map(|arn| match intrinsic(arn) {
            Some((tag, Value::String(s))) if tag == "Sub" => Some(s.clone()),
            _ => None,
        })
        .collect();
    let queue_name = match intrinsic(at(
        &t,
        &["Resources", "OrdersQueue", "Properties", "QueueName"],
    )) {
        Some((tag, Value::String(name))) if tag == "Sub" => name.clone(),
        other => panic!("OrdersQueue's QueueName should be a !Sub, found {other:?}"),
    };
    assert_eq!(
        sources,
        vec![format!(
            "arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{queue_name}"
        )],
        "the DLQ's sourceQueueArns must name exactly the orders queue"
    );
}

// --- IAM -----------------------------------------------------------------------------

/// Every statement of every permission policy in the template, with the resource
/// that holds it. Trust policies (AssumeRolePolicyDocument) say who may assume a
/// role, not what it may do, and are left out.
fn statements(t: &Document) -> Vec<(String, Value)> {
    fn walk(owner: &str, node: &Value, out: &mut Vec<(String, Value)>) {
        match node {
            Value::Mapping(map) => {
                for (key, value) in map {
                    if key.as_str() == Some("PolicyDocument") {
                        for statement in items(value.get("Statement")) {
                            out.push((owner.to_owned(), statement.clone()));
                        }
                    } else if key.as_str() != Some("AssumeRolePolicyDocument") {
                        walk(owner, value, out);
                    }
                }
            }
            Value::Sequence(list) => list.iter().for_each(|v| walk(owner, v, out)),
            Value::Tagged(tagged) => walk(owner, &tagged.value, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(resources) = t.root().get("Resources").and_then(Value::as_mapping) {
        for (id, resource) in resources {
            walk(id.as_str().unwrap_or("?"), resource, &mut out);
        }
    }
    out
}

fn sid(statement: &Value) -> &str {
    statement.get("Sid").map(text).unwrap_or("(no Sid)")
}

#[test]
fn no_policy_statement_allows_every_action() {
    let all = statements(&template());
    assert!(all.len() >= 8, "found only {} statements", all.len());
    for (owner, statement) in &all {
        for action in items(statement.get("Action")) {
            assert_ne!(
                text(action),
                "*",
                "{owner} / {}: Action \"*\"; name the actions it needs",
                sid(statement)
            );
            let allows = text(statement.get("Effect").unwrap_or(&Value::Null)) == "Allow";
            assert!(
                !(allows && text(action).ends_with(":*")),
                "{owner} / {}: allows {}, every action of a service; name the actions it needs",
                sid(statement),
                text(action)
            );
        }
    }
}

/// Where AWS offers no narrower resource: the statement, and why.
const RESOURCE_STAR_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "ConsumerRole",
        "VpcNetworkInterfaces",
        "Lambda's VPC network interfaces: the Describe actions have no resource-level permissions, \
         and AWS's AWSLambdaVPCAccessExecutionRole gives the other ENI actions on \"*\" too",
    ),
    (
        "ProducerRole",
        "SessionManager",
        "the Session Manager agent's own calls (ssm:UpdateInstanceInformation, ssmmessages:*Channel), \
         which AWS's custom instance profile for Session Manager gives on \"*\"",
    ),
];

#[test]
fn no_policy_statement_covers_every_resource_except_where_aws_requires_it() {
    for (owner, statement) in statements(&template()) {
        let star = items(statement.get("Resource"))
            .iter()
            .any(|r| text(r) == "*");
        if !star {
            continue;
        }
        assert!(
            RESOURCE_STAR_ALLOWED
                .iter()
                .any(|(o, s, _)| *o == owner && *s == sid(&statement)),
            "{owner} / {}: Resource \"*\"; name the resources (the only statements allowed \"*\" are {:?})",
            sid(&statement),
            RESOURCE_STAR_ALLOWED
                .iter()
                .map(|(o, s, why)| format!("{o}/{s}: {why}"))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn no_role_attaches_a_managed_policy() {
    let t = template();
    for (id, role) in t.resources_of_type("AWS::IAM::Role") {
        let managed = items(
            role.get("Properties")
                .and_then(|p| p.get("ManagedPolicyArns")),
        );
        assert!(
            managed.is_empty(),
            "{id} attaches {managed:?}: write the statements it needs inline (AmazonSSMManagedInstanceCore, \
             for one, lets an instance read every Parameter Store value in the account)"
        );
    }
    for (id, function) in t.resources_of_type("AWS::Serverless::Function") {
        let p = function.get("Properties").expect("properties");
        assert!(
            p.get("Policies").is_none() && p.get("Role").is_some(),
            "{id}: give it an explicit Role; SAM's generated role adds AWSLambdaBasicExecutionRole (logs on \"*\")"
        );
    }
}

/// The inline statements of a role, by Sid.
fn role_statements(t: &Document, role: &str) -> HashMap<String, Value> {
    statements(t)
        .into_iter()
        .filter(|(owner, _)| owner == role)
        .map(|(_, s)| (sid(&s).to_owned(), s))
        .collect()
}

fn actions(statement: &Value) -> BTreeSet<String> {
    items(statement.get("Action"))
        .into_iter()
        .map(|a| text(a).to_owned())
        .collect()
}

#[test]
fn the_producer_may_only_send_to_the_orders_queue_and_read_its_own_binary() {
    let t = template();
    let statements = role_statements(&t, "ProducerRole");
    assert_eq!(
        statements.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "ReadOwnBinary".to_owned(),
            "SendOrders".to_owned(),
            "SessionManager".to_owned()
        ]),
        "the producer's role has exactly three statements"
    );
    // Exactly the agent's calls for a shell: no ssm:GetParameter(s), no ec2messages
    // (Run Command), no S3 or KMS (session logging, which this stack does not set).
    assert_eq!(
        actions(&statements["SessionManager"]),
        [
            "ssm:UpdateInstanceInformation",
            "ssmmessages:CreateControlChannel",
            "ssmmessages:CreateDataChannel",
            "ssmmessages:OpenControlChannel",
            "ssmmessages:OpenDataChannel",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>(),
        "the producer's Session Manager statement"
    );
    let send = &statements["SendOrders"];
    assert_eq!(
        actions(send),
        BTreeSet::from([
            "sqs:GetQueueAttributes".to_owned(),
            "sqs:SendMessage".to_owned()
        ])
    );
    assert_eq!(
        items(send.get("Resource"))
            .into_iter()
            .filter_map(get_att)
            .collect::<Vec<_>>(),
        vec!["OrdersQueue.Arn".to_owned()],
        "SendOrders applies to the orders queue only"
    );
    let read = &statements["ReadOwnBinary"];
    assert_eq!(actions(read), BTreeSet::from(["s3:GetObject".to_owned()]));
    let object = match intrinsic(read.get("Resource").expect("Resource")) {
        Some((tag, Value::String(s))) if tag == "Sub" => s.clone(),
        other => panic!("ReadOwnBinary's Resource should be a !Sub, found {other:?}"),
    };
    assert_eq!(
        object, "arn:${AWS::Partition}:s3:::${ProducerArtifactBucket}/${ProducerArtifactKey}",
        "the instances may read their one artifact, not the bucket"
    );
}

#[test]
fn the_consumer_may_connect_only_through_the_proxy_as_its_database_user() {
    let t = template();
    let statements = role_statements(&t, "ConsumerRole");
    let connect = statements
        .get("ConnectThroughProxy")
        .expect("ConsumerRole needs the ConnectThroughProxy statement");
    assert_eq!(
        actions(connect),
        BTreeSet::from(["rds-db:connect".to_owned()])
    );
    let (arn, variables) = match intrinsic(connect.get("Resource").expect("Resource")) {
        Some((tag, Value::Sequence(args))) if tag == "Sub" && args.len() == 2 => {
            (text(&args[0]).to_owned(), args[1].clone())
        }
        other => panic!(
            "the rds-db:connect resource should be !Sub [arn, {{ProxyId: …}}], found {other:?}"
        ),
    };
    assert!(
        arn.ends_with(":dbuser:${ProxyId}/${DatabaseMasterUsername}"),
        "the rds-db:connect ARN should end with :dbuser:<proxy resource id>/<user>, found {arn}"
    );
    // ProxyId: !Select [6, !Split [":", !GetAtt DatabaseProxy.DBProxyArn]]
    let (index, split) = match intrinsic(variables.get("ProxyId").expect("ProxyId")) {
        Some((tag, Value::Sequence(args))) if tag == "Select" => {
            (as_u64(&args[0]).expect("index"), args[1].clone())
        }
        other => panic!("ProxyId should be a !Select, found {other:?}"),
    };
    let Some((tag, Value::Sequence(split))) = intrinsic(&split) else {
        panic!("ProxyId should !Select from a !Split");
    };
    assert_eq!(tag, "Split");
    assert_eq!(text(&split[0]), ":");
    assert_eq!(
        get_att(&split[1]).as_deref(),
        Some("DatabaseProxy.DBProxyArn")
    );
    let example = "arn:aws:rds:eu-west-1:123456789012:db-proxy:prx-0123456789abcdef0";
    assert_eq!(
        example.split(':').nth(index as usize),
        Some("prx-0123456789abcdef0"),
        "element {index} of a proxy ARN split on ':' must be its resource id"
    );

    let env = at(
        &t,
        &[
            "Resources",
            "ConsumerFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    assert_eq!(
        env.get("DB_USER").and_then(reference),
        Some("DatabaseMasterUsername"),
        "DB_USER must be the user the role may connect as"
    );
    assert_eq!(
        env.get("DB_HOST").and_then(get_att).as_deref(),
        Some("DatabaseProxy.Endpoint"),
        "the consumer connects to RDS Proxy, where its IAM token is valid"
    );
}

// --- database ------------------------------------------------------------------------

fn is_private_subnet_list(value: Option<&Value>) -> bool {
    let subnets = items(value);
    !subnets.is_empty()
        && subnets
            .iter()
            .all(|s| reference(s).is_some_and(|name| name.starts_with("PrivateSubnet")))
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
    let deploy = std::fs::read_to_string(format!("{REPO}/scripts/deploy")).expect("scripts/deploy");
    for step in [
        format!("overrides_with {protection} false"),
        format!("overrides_with {protection} true"),
    ] {
        assert!(
            deploy.contains(&step),
            "scripts/deploy creates the stack unprotected and protects it once it is up: no `{step}`"
        );
    }

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
fn the_proxy_requires_tls_and_iam_and_reads_the_rds_managed_secret() {
    let t = template();
    let proxy = properties(&t, "DatabaseProxy");
    assert!(
        truthy(proxy.get("RequireTLS")),
        "DatabaseProxy needs RequireTLS: true"
    );
    let auth = items(proxy.get("Auth"));
    assert_eq!(auth.len(), 1, "one Auth entry: the master secret");
    assert_eq!(auth[0].get("IAMAuth").map(text), Some("REQUIRED"));
    let secret = auth[0].get("SecretArn").and_then(get_att);
    assert_eq!(
        secret.as_deref(),
        Some("Database.MasterUserSecret.SecretArn")
    );
    assert!(is_private_subnet_list(proxy.get("VpcSubnetIds")));

    let read = role_statements(&t, "DatabaseProxyRole");
    assert_eq!(
        read.len(),
        1,
        "the proxy's role reads one secret, nothing else"
    );
    let statement = read.values().next().expect("statement");
    assert_eq!(
        actions(statement),
        BTreeSet::from(["secretsmanager:GetSecretValue".to_owned()])
    );
    assert_eq!(
        items(statement.get("Resource"))
            .into_iter()
            .filter_map(get_att)
            .collect::<Vec<_>>(),
        vec!["Database.MasterUserSecret.SecretArn".to_owned()]
    );
}

// --- network -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    group: String,
    port: u64,
    peer: String,
}

/// Ingress or egress rules, inline and as separate resources, with the peer as a
/// CIDR or the name of the other group.
fn rules(t: &Document, direction: &str) -> Vec<Rule> {
    let (inline, resource_type, peer_key) = match direction {
        "ingress" => (
            "SecurityGroupIngress",
            "AWS::EC2::SecurityGroupIngress",
            "SourceSecurityGroupId",
        ),
        _ => (
            "SecurityGroupEgress",
            "AWS::EC2::SecurityGroupEgress",
            "DestinationSecurityGroupId",
        ),
    };
    let rule = |group: String, r: &Value| {
        let peer = r
            .get("CidrIp")
            .or_else(|| r.get("CidrIpv6"))
            .map(|c| text(c).to_owned())
            .or_else(|| {
                r.get(peer_key)
                    .and_then(get_att)
                    .map(|g| g.trim_end_matches(".GroupId").to_owned())
            })
            .unwrap_or_else(|| format!("{r:?}"));
        let port = match r.get("FromPort") {
            Some(from) => port(t, from),
            None => 0, // all protocols
        };
        Rule { group, port, peer }
    };
    let mut out = Vec::new();
    for (id, group) in t.resources_of_type("AWS::EC2::SecurityGroup") {
        for r in items(group.get("Properties").and_then(|p| p.get(inline))) {
            out.push(rule(id.to_owned(), r));
        }
    }
    for (_, r) in t.resources_of_type(resource_type) {
        let p = r.get("Properties").expect("properties");
        let group = p
            .get("GroupId")
            .and_then(get_att)
            .expect("GroupId: !GetAtt <group>.GroupId");
        out.push(rule(group.trim_end_matches(".GroupId").to_owned(), p));
    }
    out.sort();
    out
}

fn rule(group: &str, port: u64, peer: &str) -> Rule {
    Rule {
        group: group.to_owned(),
        port,
        peer: peer.to_owned(),
    }
}

#[test]
fn only_the_load_balancer_is_open_to_customers_and_the_database_only_to_the_consumer_path() {
    let t = template();
    let producer_port = port(&t, at(&t, &["Parameters", "ProducerPort", "Default"]));
    let ingress = rules(&t, "ingress");
    let mut expected = vec![
        rule("LoadBalancerSecurityGroup", 80, "0.0.0.0/0"),
        rule("LoadBalancerSecurityGroup", 443, "0.0.0.0/0"),
        rule(
            "ProducerSecurityGroup",
            producer_port,
            "LoadBalancerSecurityGroup",
        ),
        rule("ProxySecurityGroup", 5432, "ConsumerSecurityGroup"),
        rule("DatabaseSecurityGroup", 5432, "ProxySecurityGroup"),
        rule("EndpointSecurityGroup", 443, "ConsumerSecurityGroup"),
        rule("EndpointSecurityGroup", 443, "ProducerSecurityGroup"),
    ];
    expected.sort();
    assert_eq!(
        ingress, expected,
        "inbound: customers → load balancer (80, 443) → producer; consumer → proxy → database on 5432; \
         consumer and producer → SQS endpoint on 443; nothing else"
    );

    let consumer_out: Vec<Rule> = rules(&t, "egress")
        .into_iter()
        .filter(|r| r.group == "ConsumerSecurityGroup" && r.peer != "127.0.0.1/32")
        .collect();
    assert_eq!(
        consumer_out,
        vec![
            rule("ConsumerSecurityGroup", 443, "EndpointSecurityGroup"),
            rule("ConsumerSecurityGroup", 5432, "ProxySecurityGroup"),
        ],
        "the consumer may reach the proxy and the SQS endpoint only"
    );
}

#[test]
fn the_private_side_has_no_way_out_but_the_sqs_endpoint() {
    let t = template();
    assert_eq!(
        t.resources_of_type("AWS::EC2::NatGateway").count(),
        0,
        "no NAT gateway: the private subnets reach AWS through interface endpoints"
    );
    for (id, route) in t.resources_of_type("AWS::EC2::Route") {
        let table = route
            .get("Properties")
            .and_then(|p| p.get("RouteTableId"))
            .and_then(reference);
        assert_eq!(
            table,
            Some("PublicRouteTable"),
            "{id}: only the public route table has routes out"
        );
    }
    let function = properties(&t, "ConsumerFunction");
    assert!(
        is_private_subnet_list(function.get("VpcConfig").and_then(|v| v.get("SubnetIds"))),
        "the consumer runs in the private subnets"
    );
    // Whether its private DNS is on, and what that captures, is the reachability
    // model's business (below), not a setting to pin here.
    let endpoint = properties(&t, "SqsEndpoint");
    assert_eq!(endpoint.get("VpcEndpointType").map(text), Some("Interface"));
    assert!(is_private_subnet_list(endpoint.get("SubnetIds")));
    let service = match endpoint.get("ServiceName").and_then(intrinsic) {
        Some((_, Value::String(s))) => s.clone(),
        _ => String::new(),
    };
    assert!(
        service.ends_with(".sqs"),
        "the endpoint serves SQS, found {service}"
    );
}

// --- what the consumer and the producer are given ------------------------------------

#[test]
fn the_consumer_builds_with_cargo_lambda_for_al2023_and_arm64_by_default() {
    let t = template();
    let function = at(&t, &["Resources", "ConsumerFunction"]);
    let metadata = function.get("Metadata").expect("Metadata");
    assert_eq!(
        metadata.get("BuildMethod").map(text),
        Some("rust-cargolambda")
    );
    let binary = metadata
        .get("BuildProperties")
        .and_then(|b| b.get("Binary"))
        .map(text)
        .expect("Metadata.BuildProperties.Binary: a workspace member must name its binary");
    let manifest = std::fs::read_to_string(format!("{REPO}/consumer-lambda/Cargo.toml"))
        .expect("consumer-lambda/Cargo.toml");
    assert!(
        manifest.contains(&format!("name = \"{binary}\"")),
        "consumer-lambda has no binary named {binary}"
    );
    let runtime = function
        .get("Properties")
        .and_then(|p| p.get("Runtime"))
        .unwrap_or_else(|| at(&t, &["Globals", "Function", "Runtime"]));
    assert_eq!(text(runtime), "provided.al2023");
    let architectures = at(&t, &["Globals", "Function", "Architectures"]);
    let architecture = items(Some(architectures))
        .first()
        .and_then(|a| default_of(&t, a))
        .map(text);
    assert_eq!(
        architecture,
        Some("arm64"),
        "the default architecture is arm64"
    );
}

/// What Lambda would set each environment variable to, with made-up values for
/// what only a deploy knows.
fn resolve(t: &Document, value: &Value) -> String {
    if let Some(name) = reference(value) {
        if let Some(default) = default_of(t, value) {
            return as_u64(default).map_or_else(|| text(default).to_owned(), |n| n.to_string());
        }
        return match name {
            "OrdersQueue" => {
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-orders".to_owned()
            }
            other => panic!("no stand-in value for !Ref {other}"),
        };
    }
    if let Some(target) = get_att(value) {
        return match target.as_str() {
            "DatabaseProxy.Endpoint" => {
                "orders-proxy.proxy-abc123.eu-west-1.rds.amazonaws.com".to_owned()
            }
            other => panic!("no stand-in value for !GetAtt {other}"),
        };
    }
    as_u64(value).map_or_else(|| text(value).to_owned(), |n| n.to_string())
}

#[test]
fn the_consumer_accepts_the_environment_the_template_gives_it() {
    let t = template();
    let variables = at(
        &t,
        &[
            "Resources",
            "ConsumerFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    )
    .as_mapping()
    .expect("a mapping");
    let env: HashMap<String, String> = variables
        .iter()
        .map(|(k, v)| (text(k).to_owned(), resolve(&t, v)))
        .collect();
    assert!(
        !env.contains_key("DATABASE_URL"),
        "no connection string (and no password) in the function's environment"
    );
    let config = consumer_lambda::Config::from_lookup(|name| env.get(name).cloned())
        .unwrap_or_else(|err| panic!("the consumer refuses the template's environment: {err}"));
    assert_eq!(config.database.auth, DbAuth::Iam);
    assert_eq!(
        config.retry.max_receive_count,
        Some(
            local_esm::Template::from_document(&t)
                .expect("settings")
                .queues
                .max_receive_count
        ),
        "the consumer requeues by the queue's own maxReceiveCount"
    );

    // The CA bundle: a layer whose content scripts/deploy writes, mounted under /opt.
    let bundle = config
        .database
        .ca_bundle
        .expect("DB_CA_BUNDLE turns on verified TLS");
    let inside = bundle
        .strip_prefix("/opt")
        .expect("DB_CA_BUNDLE lies in a layer, under /opt")
        .to_string_lossy()
        .into_owned();
    let layers = items(properties(&t, "ConsumerFunction").get("Layers"));
    assert!(
        layers.iter().any(|l| reference(l) == Some("CaBundleLayer")),
        "the function mounts CaBundleLayer"
    );
    let content = text(at(
        &t,
        &["Resources", "CaBundleLayer", "Properties", "ContentUri"],
    ));
    assert_eq!(
        content, "../.dev/deploy/ca-layer",
        "the layer's content is generated under .dev/ (git-ignored), where scripts/deploy writes it"
    );
    let deploy_lib = std::fs::read_to_string(format!("{REPO}/scripts/lib/infra.sh"))
        .expect("scripts/lib/infra.sh");
    for line in [
        "DEPLOY_DIR=\"$STATE_DIR/deploy\"",
        "CA_LAYER_DIR=\"$DEPLOY_DIR/ca-layer\"",
    ] {
        assert!(
            deploy_lib.contains(line),
            "scripts/lib/infra.sh must fill the layer directory the template ships ({content}): `{line}`"
        );
    }
    assert!(
        deploy_lib.contains(&format!("CA_BUNDLE_IN_LAYER=\"$CA_LAYER_DIR/{inside}\"")),
        "scripts/deploy must write the bundle where DB_CA_BUNDLE points ({inside} inside the layer)"
    );
}

/// The user data script of the producer's launch template.
fn user_data(t: &Document) -> String {
    let data = at(
        t,
        &[
            "Resources",
            "ProducerLaunchTemplate",
            "Properties",
            "LaunchTemplateData",
            "UserData",
            "Fn::Base64",
        ],
    );
    match intrinsic(data) {
        Some((tag, Value::String(script))) if tag == "Sub" => script.clone(),
        // `!Sub [script, {variables}]`.
        Some((tag, Value::Sequence(parts))) if tag == "Sub" => match parts.first() {
            Some(Value::String(script)) => script.clone(),
            other => panic!("!Sub's first item should be the script, found {other:?}"),
        },
        other => panic!("UserData should be Fn::Base64 of a !Sub script, found {other:?}"),
    }
}

/// The CIDR blocks of the subnets the load balancer sits in, as CloudFormation
/// computes them from the VPC's default range (`!Cidr [VpcCidr, 4, 8]`).
fn load_balancer_subnet_cidrs(t: &Document) -> Vec<String> {
    let vpc = text(at(t, &["Parameters", "VpcCidr", "Default"])).to_owned();
    let (address, prefix) = vpc.split_once('/').expect("a CIDR");
    let octets: Vec<u8> = address
        .split('.')
        .map(|o| o.parse().expect("an octet"))
        .collect();
    assert_eq!(
        prefix, "16",
        "the computation below assumes the default /16"
    );
    items(properties(t, "LoadBalancer").get("Subnets"))
        .iter()
        .map(|subnet| {
            let id = reference(subnet).expect("!Ref to a subnet");
            let cidr = properties(t, id).get("CidrBlock").expect("CidrBlock");
            let index = match intrinsic(cidr) {
                Some((tag, Value::Sequence(args))) if tag == "Select" => {
                    as_u64(&args[0]).expect("an index")
                }
                other => panic!("{id}'s CidrBlock should be !Select of !Cidr, found {other:?}"),
            };
            format!("{}.{}.{index}.0/24", octets[0], octets[1])
        })
        .collect()
}

#[test]
fn the_producer_service_gets_the_settings_its_configuration_reads() {
    let t = template();
    let script = user_data(&t);
    let producer_port = port(&t, at(&t, &["Parameters", "ProducerPort", "Default"]));
    let balancer_cidrs = load_balancer_subnet_cidrs(&t);
    let substitute = |line: &str| {
        line.replace(
            "${OrdersQueue}",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-orders",
        )
        .replace("${ProducerPort}", &producer_port.to_string())
        .replace("${AWS::Region}", "eu-west-1")
        .replace("${PublicCidrA},${PublicCidrB}", &balancer_cidrs.join(","))
    };
    let env: HashMap<String, String> = script
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), substitute(v)))
        .collect();
    let config = producer::Config::from_lookup(|name| env.get(name).cloned())
        .unwrap_or_else(|err| panic!("the producer refuses the service's environment: {err}"));
    // Only the load balancer's nodes may name the client in X-Forwarded-For;
    // without this, all customers would share the balancer's rate-limit buckets.
    assert_eq!(
        config.trusted_proxies,
        producer::client_ip::TrustedProxies::parse(&balancer_cidrs.join(",")).expect("valid"),
        "TRUSTED_PROXIES must be the load balancer's subnets"
    );
    assert!(
        config.bind_addr.ip().is_unspecified()
            && u64::from(config.bind_addr.port()) == producer_port,
        "the producer must listen on 0.0.0.0:{producer_port}, where the load balancer sends, not {}",
        config.bind_addr
    );
    assert_eq!(
        port(
            &t,
            properties(&t, "ProducerTargetGroup")
                .get("Port")
                .expect("Port")
        ),
        producer_port
    );
    for (line, why) in [
        ("Restart=always", "comes back after a crash"),
        ("User=orders-producer", "never runs as root"),
        ("KillSignal=SIGTERM", "drains in-flight requests on stop"),
        (
            "ExecStart=/usr/local/bin/orders-producer",
            "runs the installed binary",
        ),
        (
            "sha256sum --check",
            "refuses a binary whose hash differs from its key",
        ),
        (
            "--resource ProducerGroup",
            "signals the Auto Scaling group's creation policy",
        ),
    ] {
        assert!(
            script.lines().any(|l| l.contains(line)),
            "the producer's user data needs `{line}`: the service {why}"
        );
    }
}

#[test]
fn the_producer_instances_require_imdsv2_and_have_no_ssh_key() {
    let t = template();
    let data = at(
        &t,
        &[
            "Resources",
            "ProducerLaunchTemplate",
            "Properties",
            "LaunchTemplateData",
        ],
    );
    let metadata = data.get("MetadataOptions").expect("MetadataOptions");
    assert_eq!(
        metadata.get("HttpTokens").map(text),
        Some("required"),
        "IMDSv2 only: MetadataOptions.HttpTokens: required"
    );
    assert_eq!(
        metadata.get("HttpPutResponseHopLimit").and_then(as_u64),
        Some(1)
    );
    assert!(
        data.get("KeyName").is_none(),
        "no SSH key: operators use SSM Session Manager"
    );
    for device in items(data.get("BlockDeviceMappings")) {
        assert!(
            truthy(device.get("Ebs").and_then(|e| e.get("Encrypted"))),
            "the instances' volumes are encrypted"
        );
    }
}

// --- operations ----------------------------------------------------------------------

#[test]
fn alarms_watch_the_dlq_the_oldest_order_and_the_consumer_and_notify_the_topic() {
    let t = template();
    let alarms: Vec<(String, String, String)> = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .map(|(id, alarm)| {
            let p = alarm.get("Properties").expect("properties");
            assert!(
                items(p.get("AlarmActions"))
                    .iter()
                    .any(|a| reference(a) == Some("AlarmTopic")),
                "{id} must notify AlarmTopic"
            );
            let dimension = items(p.get("Dimensions"))
                .first()
                .and_then(|d| d.get("Value"))
                .map(|v| {
                    get_att(v)
                        .or_else(|| reference(v).map(str::to_owned))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            (
                p.get("MetricName").map(text).unwrap_or("").to_owned(),
                dimension,
                id.to_owned(),
            )
        })
        .collect();
    for (metric, dimension, what) in [
        (
            "ApproximateNumberOfMessagesVisible",
            "OrdersDeadLetterQueue.QueueName",
            "the DLQ is not empty",
        ),
        (
            "ApproximateAgeOfOldestMessage",
            "OrdersQueue.QueueName",
            "the oldest order waits too long",
        ),
        (
            "Errors",
            "ConsumerFunction",
            "the consumer fails invocations",
        ),
    ] {
        assert!(
            alarms.iter().any(|(m, d, _)| m == metric && d == dimension),
            "no alarm on {metric} of {dimension} (for: {what}); alarms: {alarms:?}"
        );
    }
    assert_eq!(
        at(&t, &["Parameters", "AlarmEmail", "Default"]).as_str(),
        Some(""),
        "the e-mail subscription is optional"
    );
    assert!(
        at(&t, &["Resources", "AlarmTopicEmail", "Condition"]).as_str() == Some("HasAlarmEmail"),
        "the subscription exists only when AlarmEmail is given"
    );
}

#[test]
fn the_outputs_say_where_the_producer_the_queues_and_the_database_are() {
    let t = template();
    for output in [
        "ProducerUrl",
        "OrdersQueueUrl",
        "OrdersDeadLetterQueueUrl",
        "DatabaseEndpoint",
    ] {
        assert!(
            t.get(&["Outputs", output, "Value"]).is_ok(),
            "the stack needs an output {output}"
        );
    }
}

#[test]
fn the_consumer_logs_are_kept_for_a_set_time() {
    let t = template();
    let group = properties(&t, "ConsumerLogGroup");
    assert!(
        t.number::<u64>(&[
            "Resources",
            "ConsumerLogGroup",
            "Properties",
            "RetentionInDays"
        ])
        .is_ok(),
        "ConsumerLogGroup needs RetentionInDays"
    );
    assert_eq!(
        properties(&t, "ConsumerFunction")
            .get("LoggingConfig")
            .and_then(|l| l.get("LogGroup"))
            .and_then(reference),
        Some("ConsumerLogGroup"),
        "the function logs to ConsumerLogGroup"
    );
    let sub = |v: Option<&Value>| match v.and_then(intrinsic) {
        Some((_, Value::String(s))) => s.clone(),
        _ => String::new(),
    };
    assert_eq!(
        sub(group.get("LogGroupName")),
        format!(
            "/aws/lambda/{}",
            sub(properties(&t, "ConsumerFunction").get("FunctionName"))
        ),
        "the log group carries the function's name, so nothing else creates one without retention"
    );
}

#[test]
fn every_checkov_skip_sits_on_its_resource_with_a_reason() {
    let t = template();
    assert!(
        t.get(&["Metadata", "checkov"]).is_err() && t.get(&["Metadata", "cfn-lint"]).is_err(),
        "no template-wide skips: put each on the resource it concerns"
    );
    let resources = at(&t, &["Resources"]).as_mapping().expect("resources");
    let mut skips = 0;
    for (id, resource) in resources {
        for skip in items(
            resource
                .get("Metadata")
                .and_then(|m| m.get("checkov"))
                .and_then(|c| c.get("skip")),
        ) {
            skips += 1;
            let check = skip.get("id").map(text).unwrap_or("");
            let comment = skip.get("comment").map(text).unwrap_or("");
            assert!(
                check.starts_with("CKV") && comment.len() >= 40,
                "{}: checkov skip {check:?} needs an id and a comment that says why ({comment:?})",
                text(id)
            );
        }
    }
    assert!(skips > 0);
}

// --- reachability: every AWS call a component makes, and the way it takes ----------
//
// A model of how AWS routes a call made from inside the VPC, from AWS's documentation:
// - an interface endpoint with private DNS puts the service's default name
//   (sqs.<region>.amazonaws.com) in a private hosted zone of the whole VPC, so
//   every subnet resolves it to the endpoint, not only the endpoint's own
//   (https://docs.aws.amazon.com/vpc/latest/privatelink/privatelink-access-aws-services.html,
//   EC2 CreateVpcEndpoint, PrivateDnsEnabled); the call then needs the caller's
//   egress, the endpoint's ingress and the endpoint policy to admit it;
// - otherwise it leaves through the internet gateway, which needs a 0.0.0.0/0
//   route to one in the caller's subnet, a public address, and egress to it;
// - otherwise it goes nowhere.
// Calls that the AWS service makes itself with a role (the event source mapping's
// polling, Lambda's logs and network interfaces, RDS Proxy's secret) need only IAM.

/// Where a call is made from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// From the component's network interfaces in our subnets.
    Vpc,
    /// By the AWS service itself, outside our subnets: why we believe so.
    Service(&'static str),
}

/// One AWS API call, as IAM authorises it.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// The API, for messages.
    api: &'static str,
    /// The IAM action it needs, or "" when AWS documents that it needs none.
    action: &'static str,
    /// The resource as the template writes it (`X.Arn` for `!GetAtt X.Arn`, the
    /// template string of a `!Sub`), or "*".
    resource: &'static str,
    origin: Origin,
}

impl Call {
    /// The service's endpoint prefix: "sqs" for sqs:SendMessage.
    fn service(&self) -> &'static str {
        self.api.split(':').next().unwrap_or(self.api)
    }
}

/// A caller in the VPC: where its network interfaces sit and who it is.
#[derive(Debug)]
struct Component {
    name: &'static str,
    groups: Vec<String>,
    subnets: Vec<String>,
    public_address: bool,
    role: String,
    calls: Vec<Call>,
}

/// How a call leaves, as AWS would route it.
#[derive(Debug, PartialEq)]
enum Route {
    Endpoint(String),
    InternetGateway,
    ServiceSide,
    Nowhere(String),
}

const ORDERS_QUEUE: &str = "OrdersQueue.Arn";

/// Every component in the VPC with the AWS calls its code and its boot make.
fn components(t: &Document) -> Vec<Component> {
    let lt = at(
        t,
        &[
            "Resources",
            "ProducerLaunchTemplate",
            "Properties",
            "LaunchTemplateData",
        ],
    );
    let nic = items(lt.get("NetworkInterfaces"))
        .first()
        .copied()
        .expect("the launch template declares its network interface");
    let profile = lt
        .get("IamInstanceProfile")
        .and_then(|p| p.get("Arn"))
        .and_then(get_att)
        .expect("IamInstanceProfile.Arn: !GetAtt <profile>.Arn");
    let profile = profile.trim_end_matches(".Arn");
    let producer_role = items(properties(t, profile).get("Roles"))
        .first()
        .and_then(|r| reference(r))
        .expect("the instance profile holds a role")
        .to_owned();
    let refs = |v: Option<&Value>| -> Vec<String> {
        items(v)
            .into_iter()
            .filter_map(|x| reference(x).map(str::to_owned))
            .collect()
    };
    let role_of = |v: Option<&Value>| -> String {
        v.and_then(get_att)
            .map(|r| r.trim_end_matches(".Arn").to_owned())
            .expect("a role as !GetAtt <role>.Arn")
    };

    let function = properties(t, "ConsumerFunction");
    let vpc = function
        .get("VpcConfig")
        .expect("the consumer runs in the VPC");
    let proxy = properties(t, "DatabaseProxy");
    let service = Origin::Service;

    vec![
        Component {
            name: "producer instances",
            groups: refs(nic.get("Groups")),
            subnets: refs(properties(t, "ProducerGroup").get("VPCZoneIdentifier")),
            public_address: truthy(nic.get("AssociatePublicIpAddress")),
            role: producer_role,
            calls: vec![
                // producer/src/queue.rs: SendMessageBatch is authorised as SendMessage.
                Call {
                    api: "sqs:SendMessageBatch",
                    action: "sqs:SendMessage",
                    resource: ORDERS_QUEUE,
                    origin: Origin::Vpc,
                },
                // /readyz
                Call {
                    api: "sqs:GetQueueAttributes",
                    action: "sqs:GetQueueAttributes",
                    resource: ORDERS_QUEUE,
                    origin: Origin::Vpc,
                },
                // User data: `aws s3 cp` of the binary.
                Call {
                    api: "s3:GetObject",
                    action: "s3:GetObject",
                    resource: "arn:${AWS::Partition}:s3:::${ProducerArtifactBucket}/${ProducerArtifactKey}",
                    origin: Origin::Vpc,
                },
                // cfn-signal needs no credentials (AWS docs, cfn-signal), but a way out.
                Call {
                    api: "cloudformation:SignalResource",
                    action: "",
                    resource: "*",
                    origin: Origin::Vpc,
                },
                // The Session Manager agent.
                Call {
                    api: "ssm:UpdateInstanceInformation",
                    action: "ssm:UpdateInstanceInformation",
                    resource: "*",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "ssmmessages:CreateControlChannel",
                    action: "ssmmessages:CreateControlChannel",
                    resource: "*",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "ssmmessages:OpenDataChannel",
                    action: "ssmmessages:OpenDataChannel",
                    resource: "*",
                    origin: Origin::Vpc,
                },
            ],
        },
        Component {
            name: "consumer function",
            groups: refs(vpc.get("SecurityGroupIds")),
            subnets: refs(vpc.get("SubnetIds")),
            // Lambda gives a function's network interfaces no public address, in
            // any subnet (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc-internet.html).
            public_address: false,
            role: role_of(function.get("Role")),
            calls: vec![
                // consumer-lambda: back off (ChangeMessageVisibilityBatch) and re-enqueue
                // a fresh copy before the last receive (SendMessageBatch).
                Call {
                    api: "sqs:ChangeMessageVisibilityBatch",
                    action: "sqs:ChangeMessageVisibility",
                    resource: ORDERS_QUEUE,
                    origin: Origin::Vpc,
                },
                Call {
                    api: "sqs:SendMessageBatch",
                    action: "sqs:SendMessage",
                    resource: ORDERS_QUEUE,
                    origin: Origin::Vpc,
                },
                // The event source mapping polls and deletes from the Lambda service
                // with the function's role (https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html).
                Call {
                    api: "sqs:ReceiveMessage",
                    action: "sqs:ReceiveMessage",
                    resource: ORDERS_QUEUE,
                    origin: service("the event source mapping polls from the Lambda service"),
                },
                Call {
                    api: "sqs:DeleteMessageBatch",
                    action: "sqs:DeleteMessage",
                    resource: ORDERS_QUEUE,
                    origin: service("the event source mapping deletes from the Lambda service"),
                },
                Call {
                    api: "sqs:GetQueueAttributes",
                    action: "sqs:GetQueueAttributes",
                    resource: ORDERS_QUEUE,
                    origin: service("the event source mapping reads the queue's attributes"),
                },
                Call {
                    api: "logs:PutLogEvents",
                    action: "logs:PutLogEvents",
                    resource: "${ConsumerLogGroup.Arn}",
                    origin: service("Lambda ships the function's output to CloudWatch Logs"),
                },
                // Lambda manages the function's interfaces with its role; AWS's
                // AWSLambdaVPCAccessExecutionRole (v3) lists these.
                Call {
                    api: "ec2:CreateNetworkInterface",
                    action: "ec2:CreateNetworkInterface",
                    resource: "*",
                    origin: service("Lambda attaches the function to its subnets"),
                },
                Call {
                    api: "ec2:DescribeSubnets",
                    action: "ec2:DescribeSubnets",
                    resource: "*",
                    origin: service("Lambda reads the subnets it attaches to"),
                },
            ],
        },
        Component {
            name: "RDS Proxy",
            groups: refs(proxy.get("VpcSecurityGroupIds")),
            subnets: refs(proxy.get("VpcSubnetIds")),
            public_address: false,
            role: role_of(proxy.get("RoleArn")),
            calls: vec![Call {
                api: "secretsmanager:GetSecretValue",
                action: "secretsmanager:GetSecretValue",
                resource: "Database.MasterUserSecret.SecretArn",
                // Unverified: AWS's network prerequisites for RDS Proxy require only
                // the VPC and two subnets, and name no route to Secrets Manager
                // (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-proxy-network-prereqs.html).
                origin: service(
                    "RDS Proxy reads its secret with its role; AWS's network prerequisites name no route for it",
                ),
            }],
        },
    ]
}

/// A policy's resource or principal as the template writes it: `X.Y` for
/// `!GetAtt X.Y`, `Ref:X` for `!Ref X`, a `!Sub`'s template, or the literal.
fn name_of(value: &Value) -> String {
    if let Some(att) = get_att(value) {
        return att;
    }
    if let Some(name) = reference(value) {
        return format!("Ref:{name}");
    }
    match intrinsic(value) {
        Some((tag, Value::String(s))) if tag == "Sub" => s.clone(),
        Some((tag, Value::Sequence(args))) if tag == "Sub" => {
            args.first().map(text).unwrap_or("").to_owned()
        }
        _ => text(value).to_owned(),
    }
}

/// IAM action matching: case-insensitive, with a trailing `*`.
fn action_matches(pattern: &str, action: &str) -> bool {
    let (pattern, action) = (pattern.to_ascii_lowercase(), action.to_ascii_lowercase());
    pattern == action
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| action.starts_with(prefix))
}

/// Whether a statement names this action on this resource for this principal
/// (`None`: an identity policy, whose statements have no Principal).
fn statement_covers(
    statement: &Value,
    principal: Option<&str>,
    action: &str,
    resource: &str,
) -> bool {
    let action_ok = items(statement.get("Action"))
        .iter()
        .any(|a| action_matches(text(a), action));
    let resource_ok = items(statement.get("Resource")).iter().any(|r| {
        let name = name_of(r);
        name == "*" || name == resource
    });
    let principal_ok = match principal {
        None => true,
        Some(role) => match statement.get("Principal") {
            Some(Value::String(p)) => p == "*",
            Some(p) => items(p.get("AWS")).iter().any(|a| {
                let name = name_of(a);
                name == "*" || name == format!("{role}.Arn")
            }),
            None => false,
        },
    };
    action_ok && resource_ok && principal_ok
}

/// IAM's verdict over a set of statements: an explicit deny wins, else an allow.
fn policy_allows(
    statements: &[Value],
    principal: Option<&str>,
    action: &str,
    resource: &str,
) -> bool {
    let effect = |s: &Value| s.get("Effect").map(text).unwrap_or("").to_owned();
    let covers = |s: &&Value| statement_covers(s, principal, action, resource);
    !statements
        .iter()
        .filter(|s| effect(s) == "Deny")
        .any(|s| covers(&s))
        && statements
            .iter()
            .filter(|s| effect(s) == "Allow")
            .any(|s| covers(&s))
}

/// One security group rule, inline or a separate resource.
#[derive(Debug, Clone)]
struct Opening {
    group: String,
    ingress: bool,
    protocol: String,
    from: u64,
    to: u64,
    /// A CIDR (`Ref:VpcCidr` for the VPC's own), or the other group's logical id.
    peer: String,
}

fn openings(t: &Document) -> Vec<Opening> {
    let mut out = Vec::new();
    let mut add = |group: &str, ingress: bool, r: &Value| {
        let protocol = r.get("IpProtocol").map(name_of).unwrap_or_default();
        let (from, to) = if protocol == "-1" {
            (0, 65535)
        } else {
            (
                r.get("FromPort").map_or(0, |p| port(t, p)),
                r.get("ToPort").map_or(65535, |p| port(t, p)),
            )
        };
        let peer = r
            .get("CidrIp")
            .or_else(|| r.get("CidrIpv6"))
            .map(name_of)
            .or_else(|| {
                r.get("SourceSecurityGroupId")
                    .or_else(|| r.get("DestinationSecurityGroupId"))
                    .and_then(get_att)
                    .map(|g| g.trim_end_matches(".GroupId").to_owned())
            })
            .unwrap_or_default();
        out.push(Opening {
            group: group.to_owned(),
            ingress,
            protocol,
            from,
            to,
            peer,
        });
    };
    for (id, group) in t.resources_of_type("AWS::EC2::SecurityGroup") {
        let p = group.get("Properties");
        for r in items(p.and_then(|p| p.get("SecurityGroupIngress"))) {
            add(id, true, r);
        }
        for r in items(p.and_then(|p| p.get("SecurityGroupEgress"))) {
            add(id, false, r);
        }
    }
    for (kind, ingress) in [
        ("AWS::EC2::SecurityGroupIngress", true),
        ("AWS::EC2::SecurityGroupEgress", false),
    ] {
        for (_, r) in t.resources_of_type(kind) {
            let p = r.get("Properties").expect("properties");
            let group = p
                .get("GroupId")
                .and_then(get_att)
                .expect("GroupId: !GetAtt <group>.GroupId");
            add(group.trim_end_matches(".GroupId"), ingress, p);
        }
    }
    out
}

/// Where the other end of a connection is, for matching a rule's peer.
#[derive(Debug, Clone, Copy)]
enum Peer<'a> {
    /// A network interface in the VPC carrying these groups.
    InVpc(&'a [String]),
    /// An AWS public endpoint on the internet.
    Internet,
}

fn rule_admits(o: &Opening, tcp_port: u64, peer: Peer<'_>) -> bool {
    let protocol_ok = o.protocol == "tcp" || o.protocol == "-1" || o.protocol == "6";
    let peer_ok = match peer {
        _ if o.peer == "0.0.0.0/0" => true,
        Peer::InVpc(groups) => o.peer == "Ref:VpcCidr" || groups.contains(&o.peer),
        Peer::Internet => false,
    };
    protocol_ok && o.from <= tcp_port && tcp_port <= o.to && peer_ok
}

/// Whether any of `groups` lets traffic out to `peer` on the port.
fn egress_admits(all: &[Opening], groups: &[String], tcp_port: u64, peer: Peer<'_>) -> bool {
    all.iter()
        .filter(|o| !o.ingress && groups.contains(&o.group))
        .any(|o| rule_admits(o, tcp_port, peer))
}

/// Whether any of `groups` lets traffic in from `peer` on the port.
fn ingress_admits(all: &[Opening], groups: &[String], tcp_port: u64, peer: Peer<'_>) -> bool {
    all.iter()
        .filter(|o| o.ingress && groups.contains(&o.group))
        .any(|o| rule_admits(o, tcp_port, peer))
}

/// The interface endpoint with private DNS for a service, if the VPC has one.
fn private_dns_endpoint<'a>(t: &'a Document, service: &str) -> Option<(&'a str, &'a Value)> {
    t.resources_of_type("AWS::EC2::VPCEndpoint")
        .filter_map(|(id, e)| Some((id, e.get("Properties")?)))
        .find(|(_, p)| {
            p.get("VpcEndpointType").map(text) == Some("Interface")
                && truthy(p.get("PrivateDnsEnabled"))
                && p.get("ServiceName")
                    .map(name_of)
                    .is_some_and(|s| s.ends_with(&format!(".{service}")))
        })
}

/// Whether a subnet's route table sends 0.0.0.0/0 to an attached internet gateway.
fn subnet_reaches_internet_gateway(t: &Document, subnet: &str) -> bool {
    let tables: Vec<String> = t
        .resources_of_type("AWS::EC2::SubnetRouteTableAssociation")
        .filter_map(|(_, a)| a.get("Properties"))
        .filter(|p| p.get("SubnetId").and_then(reference) == Some(subnet))
        .filter_map(|p| p.get("RouteTableId").and_then(reference).map(str::to_owned))
        .collect();
    let attached: Vec<String> = t
        .resources_of_type("AWS::EC2::VPCGatewayAttachment")
        .filter_map(|(_, a)| {
            a.get("Properties")?
                .get("InternetGatewayId")
                .and_then(reference)
        })
        .map(str::to_owned)
        .collect();
    t.resources_of_type("AWS::EC2::Route")
        .filter_map(|(_, r)| r.get("Properties"))
        .any(|p| {
            p.get("RouteTableId")
                .and_then(reference)
                .is_some_and(|rt| tables.iter().any(|x| x == rt))
                && p.get("DestinationCidrBlock").map(text) == Some("0.0.0.0/0")
                && p.get("GatewayId")
                    .and_then(reference)
                    .is_some_and(|g| attached.iter().any(|x| x == g))
        })
}

fn route(t: &Document, component: &Component, call: &Call) -> Route {
    if let Origin::Service(_) = call.origin {
        return Route::ServiceSide;
    }
    if let Some((id, _)) = private_dns_endpoint(t, call.service()) {
        return Route::Endpoint(id.to_owned());
    }
    let unrouted: Vec<&String> = component
        .subnets
        .iter()
        .filter(|s| !subnet_reaches_internet_gateway(t, s))
        .collect();
    match (component.public_address, unrouted.is_empty()) {
        (true, true) => Route::InternetGateway,
        (false, _) => Route::Nowhere(format!(
            "no private-DNS endpoint for {} in the VPC, and no public address for the internet gateway",
            call.service()
        )),
        (true, false) => Route::Nowhere(format!(
            "no private-DNS endpoint for {}, and subnets {unrouted:?} have no 0.0.0.0/0 route to an internet gateway",
            call.service()
        )),
    }
}

/// What stops this call, if anything: IAM, then the route, its security groups
/// (both ends) and the endpoint policy.
fn obstacles(t: &Document, all: &[Opening], c: &Component, call: &Call) -> (Route, Vec<String>) {
    let mut out = Vec::new();
    let role: Vec<Value> = role_statements(t, &c.role).into_values().collect();
    if !call.action.is_empty() && !policy_allows(&role, None, call.action, call.resource) {
        out.push(format!(
            "{}'s policy does not allow {} on {}",
            c.role, call.action, call.resource
        ));
    }
    let route = route(t, c, call);
    match &route {
        Route::ServiceSide | Route::Nowhere(_) => {}
        Route::InternetGateway => {
            if !egress_admits(all, &c.groups, 443, Peer::Internet) {
                out.push(format!("{:?} let no HTTPS out to the internet", c.groups));
            }
        }
        Route::Endpoint(id) => {
            let p = properties(t, id);
            let endpoint_groups: Vec<String> = items(p.get("SecurityGroupIds"))
                .into_iter()
                .filter_map(|g| reference(g).map(str::to_owned))
                .collect();
            if !egress_admits(all, &c.groups, 443, Peer::InVpc(&endpoint_groups)) {
                out.push(format!(
                    "{:?} let no HTTPS out to {id} ({endpoint_groups:?})",
                    c.groups
                ));
            }
            if !ingress_admits(all, &endpoint_groups, 443, Peer::InVpc(&c.groups)) {
                out.push(format!(
                    "{id}'s {endpoint_groups:?} admit no HTTPS from {:?}",
                    c.groups
                ));
            }
            // No policy is AWS's default: full access.
            if let Some(doc) = p.get("PolicyDocument") {
                let statements: Vec<Value> =
                    items(doc.get("Statement")).into_iter().cloned().collect();
                let action = if call.action.is_empty() {
                    call.api
                } else {
                    call.action
                };
                if !policy_allows(&statements, Some(&c.role), action, call.resource) {
                    out.push(format!(
                        "{id}'s endpoint policy does not allow {action} on {} for {}",
                        call.resource, c.role
                    ));
                }
            }
        }
    }
    if let Route::Nowhere(why) = &route {
        out.push(why.clone());
    }
    (route, out)
}

#[test]
fn every_aws_call_from_the_vpc_has_a_route_whose_security_groups_and_endpoint_policy_admit_it() {
    let t = template();
    let all = openings(&t);
    let mut failures = Vec::new();
    for c in components(&t) {
        for call in &c.calls {
            let (route, problems) = obstacles(&t, &all, &c, call);
            let why = match call.origin {
                Origin::Service(why) => why,
                Origin::Vpc => "",
            };
            eprintln!("{:<20} {:<34} {route:?} {why}", c.name, call.api);
            for p in problems {
                failures.push(format!("{} → {} via {route:?}: {p}", c.name, call.api));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "calls that AWS would refuse or never deliver:\n  {}",
        failures.join("\n  ")
    );
}

#[test]
fn every_security_group_declares_its_egress() {
    // "When you create a security group, if you do not add egress rules, we add
    // egress rules that allow all outbound IPv4 and IPv6 traffic"
    // (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-ec2-securitygroup.html):
    // separate AWS::EC2::SecurityGroupEgress resources come after the group, too late.
    let t = template();
    let mut groups = 0;
    for (id, group) in t.resources_of_type("AWS::EC2::SecurityGroup") {
        groups += 1;
        let egress = items(
            group
                .get("Properties")
                .and_then(|p| p.get("SecurityGroupEgress")),
        );
        assert!(
            !egress.is_empty(),
            "{id} declares no SecurityGroupEgress, so AWS adds \"all traffic to anywhere\": declare its \
             egress inline (a rule to 127.0.0.1/32 if the separate egress resources say the rest)"
        );
    }
    assert!(groups >= 6, "found only {groups} security groups");
}

/// The actions an endpoint policy allows a role on a resource, of the given ones.
fn allowed_through(
    statements: &[Value],
    role: &str,
    resource: &str,
    candidates: &[&str],
) -> BTreeSet<String> {
    candidates
        .iter()
        .filter(|a| policy_allows(statements, Some(role), a, resource))
        .map(|a| (*a).to_owned())
        .collect()
}

/// Every SQS action IAM knows, for "exactly these and no other" checks.
const SQS_ACTIONS: &[&str] = &[
    "sqs:AddPermission",
    "sqs:CancelMessageMoveTask",
    "sqs:ChangeMessageVisibility",
    "sqs:CreateQueue",
    "sqs:DeleteMessage",
    "sqs:DeleteQueue",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ListDeadLetterSourceQueues",
    "sqs:ListMessageMoveTasks",
    "sqs:ListQueueTags",
    "sqs:ListQueues",
    "sqs:PurgeQueue",
    "sqs:ReceiveMessage",
    "sqs:RemovePermission",
    "sqs:SendMessage",
    "sqs:SetQueueAttributes",
    "sqs:StartMessageMoveTask",
    "sqs:TagQueue",
    "sqs:UntagQueue",
];

#[test]
fn the_sqs_endpoint_admits_exactly_the_calls_the_consumer_and_the_producer_make_on_their_queue() {
    let t = template();
    let statements: Vec<Value> = items(
        properties(&t, "SqsEndpoint")
            .get("PolicyDocument")
            .and_then(|d| d.get("Statement")),
    )
    .into_iter()
    .cloned()
    .collect();
    assert!(!statements.is_empty(), "the SQS endpoint needs a policy");
    for s in &statements {
        assert!(
            s.get("Principal")
                .is_some_and(|p| !matches!(p, Value::String(_))),
            "{}: name the role, not Principal \"*\": the endpoint carries every SQS call in the VPC",
            sid(s)
        );
    }
    let set = |actions: &[&str]| {
        actions
            .iter()
            .map(|a| (*a).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        allowed_through(&statements, "ConsumerRole", ORDERS_QUEUE, SQS_ACTIONS),
        set(&["sqs:ChangeMessageVisibility", "sqs:SendMessage"]),
        "the consumer's path to SQS admits its backoff (ChangeMessageVisibilityBatch) and its fresh \
         copies (SendMessageBatch), nothing else"
    );
    assert_eq!(
        allowed_through(&statements, "ProducerRole", ORDERS_QUEUE, SQS_ACTIONS),
        set(&["sqs:GetQueueAttributes", "sqs:SendMessage"]),
        "the producer's path to SQS admits its orders (SendMessageBatch) and /readyz, nothing else"
    );
    for role in ["ConsumerRole", "ProducerRole"] {
        assert!(
            allowed_through(&statements, role, "OrdersDeadLetterQueue.Arn", SQS_ACTIONS).is_empty(),
            "nothing through the endpoint reaches the DLQ for {role}"
        );
    }
    assert!(
        allowed_through(&statements, "DatabaseProxyRole", ORDERS_QUEUE, SQS_ACTIONS).is_empty(),
        "no other principal passes the endpoint"
    );

    // IAM: the consumer may send, but only to its own queue.
    let consume = &role_statements(&t, "ConsumerRole")["ConsumeOrders"];
    assert!(actions(consume).contains("sqs:SendMessage"));
    assert_eq!(
        items(consume.get("Resource"))
            .into_iter()
            .filter_map(get_att)
            .collect::<Vec<_>>(),
        vec![ORDERS_QUEUE.to_owned()],
        "the consumer's SQS actions apply to the orders queue only"
    );
}

#[test]
fn the_consumer_role_has_the_network_interface_actions_of_awss_vpc_access_policy() {
    // AWSLambdaVPCAccessExecutionRole, version 3 (January 2024); its logs actions
    // are the WriteOwnLogs statement, on the function's own log group.
    let expected: BTreeSet<String> = [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let t = template();
    assert_eq!(
        actions(&role_statements(&t, "ConsumerRole")["VpcNetworkInterfaces"]),
        expected
    );
}

#[test]
fn the_consumer_reaches_the_proxy_and_the_proxy_the_database_and_nothing_else_reaches_either() {
    let t = template();
    let all = openings(&t);
    let groups = |resource: &str, key: &str| -> Vec<String> {
        items(properties(&t, resource).get(key))
            .into_iter()
            .filter_map(|g| reference(g).map(str::to_owned))
            .collect()
    };
    let consumer = components(&t)
        .into_iter()
        .find(|c| c.name == "consumer function")
        .expect("the consumer")
        .groups;
    let proxy = groups("DatabaseProxy", "VpcSecurityGroupIds");
    let database = groups("Database", "VPCSecurityGroups");
    for (from, from_groups, to, to_groups) in [
        ("consumer", &consumer, "proxy", &proxy),
        ("proxy", &proxy, "database", &database),
    ] {
        assert!(
            egress_admits(&all, from_groups, 5432, Peer::InVpc(to_groups)),
            "the {from}'s groups {from_groups:?} let nothing out to the {to} ({to_groups:?}) on 5432"
        );
        assert!(
            ingress_admits(&all, to_groups, 5432, Peer::InVpc(from_groups)),
            "the {to}'s groups {to_groups:?} admit nothing from the {from} ({from_groups:?}) on 5432"
        );
    }
    let producer = components(&t)
        .into_iter()
        .find(|c| c.name == "producer instances")
        .expect("the producer")
        .groups;
    for (to, to_groups) in [("proxy", &proxy), ("database", &database)] {
        assert!(
            !ingress_admits(&all, to_groups, 5432, Peer::InVpc(&producer)),
            "the producer never reaches the {to}"
        );
    }
}

#[test]
fn the_proxy_gives_up_on_a_pooled_connection_well_before_the_handler_stops_waiting() {
    let t = template();
    let timeout: u64 = t
        .number(&["Resources", "ConsumerFunction", "Properties", "Timeout"])
        .or_else(|_| t.number(&["Globals", "Function", "Timeout"]))
        .expect("the function's Timeout");
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

#[test]
fn a_conflicting_order_raises_an_alarm_on_the_consumers_conflicts_metric() {
    let t = template();
    let alarm = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .filter_map(|(_, a)| a.get("Properties"))
        .find(|p| p.get("MetricName").map(text) == Some("Conflicts"))
        .expect("an alarm on the consumer's Conflicts metric");
    assert_eq!(
        alarm.get("Namespace").map(text),
        Some(consumer_lambda::metrics::NAMESPACE),
        "the consumer's EMF namespace"
    );
    let dimensions = items(alarm.get("Dimensions"));
    assert_eq!(
        dimensions.len(),
        1,
        "the consumer's metrics have one dimension"
    );
    assert_eq!(dimensions[0].get("Name").map(text), Some("FunctionName"));
    assert_eq!(
        dimensions[0].get("Value").and_then(reference),
        Some("ConsumerFunction"),
        "FunctionName is the function's name (!Ref ConsumerFunction)"
    );
    assert_eq!(alarm.get("Statistic").map(text), Some("Sum"));
    assert_eq!(alarm.get("Period").and_then(as_u64), Some(300));
    assert_eq!(alarm.get("Threshold").and_then(as_u64), Some(0));
    assert_eq!(
        alarm.get("ComparisonOperator").map(text),
        Some("GreaterThanThreshold"),
        "any conflict at all (Sum > 0)"
    );
    assert_eq!(
        alarm.get("TreatMissingData").map(text),
        Some("notBreaching")
    );
    assert!(
        items(alarm.get("AlarmActions"))
            .iter()
            .any(|a| reference(a) == Some("AlarmTopic")),
        "the alarm notifies AlarmTopic"
    );
}

#[test]
fn the_producer_ami_is_read_from_ssm_at_every_deploy_one_parameter_per_architecture() {
    let t = template();
    let image = at(
        &t,
        &[
            "Resources",
            "ProducerLaunchTemplate",
            "Properties",
            "LaunchTemplateData",
            "ImageId",
        ],
    );
    let Some((tag, Value::Sequence(args))) = intrinsic(image) else {
        panic!(
            "ImageId should be !If [IsArm64, !Ref <arm64 parameter>, !Ref <x86_64 parameter>], found {image:?}"
        );
    };
    assert_eq!(tag, "If");
    assert_eq!(text(&args[0]), "IsArm64");
    for (arg, architecture) in [(&args[1], "arm64"), (&args[2], "x86_64")] {
        let parameter =
            reference(arg).unwrap_or_else(|| panic!("the {architecture} AMI should be a !Ref"));
        let declared = at(&t, &["Parameters", parameter]);
        assert_eq!(
            declared.get("Type").map(text),
            Some("AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"),
            "{parameter}: an SSM-typed parameter is re-read at every update; {{{{resolve:ssm:…}}}} is not"
        );
        assert_eq!(
            declared.get("Default").map(text),
            Some(
                format!(
                    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{architecture}"
                )
                .as_str()
            ),
            "{parameter}: AWS's public parameter for Amazon Linux 2023 on {architecture}"
        );
    }
}

#[test]
fn the_producer_credit_mode_is_explicit_and_lets_cpu_scaling_work() {
    let t = template();
    let mode = t
        .get(&[
            "Resources",
            "ProducerLaunchTemplate",
            "Properties",
            "LaunchTemplateData",
            "CreditSpecification",
            "CpuCredits",
        ])
        .map(text)
        .expect("CreditSpecification.CpuCredits: say which mode, T3 and T4g launch unlimited by default");
    let target = t
        .get(&[
            "Resources",
            "ProducerCpuScaling",
            "Properties",
            "TargetTrackingConfiguration",
            "TargetValue",
        ])
        .ok()
        .and_then(as_u64)
        .expect("the CPU target");
    // A t4g.micro's or t3.micro's baseline is 10 % of its CPU.
    assert!(
        mode == "unlimited" || target <= 10,
        "in {mode} mode an instance out of credits is held at its 10 % baseline, so a CPU target of \
         {target} % would never scale out"
    );
    assert!(target > 10 && target <= 80, "a CPU target of {target} %");
}

/// CloudFormation's rule functions over parameter values (all strings), as far
/// as the template's Rules use them.
fn rule_holds(condition: &Value, parameters: &HashMap<&str, String>) -> bool {
    let value = |v: &Value| -> String {
        reference(v)
            .map(|name| parameters.get(name).cloned().unwrap_or_default())
            .unwrap_or_else(|| as_u64(v).map_or_else(|| text(v).to_owned(), |n| n.to_string()))
    };
    let (function, args): (String, &Value) = match (intrinsic(condition), condition.as_mapping()) {
        (Some((tag, args)), _) => (format!("Fn::{tag}"), args),
        (None, Some(map)) if map.len() == 1 => {
            let (k, v) = map.iter().next().expect("one key");
            (text(k).to_owned(), v)
        }
        _ => panic!("not a rule function: {condition:?}"),
    };
    let args = items(Some(args));
    match function.as_str() {
        "Fn::Or" => args.iter().any(|c| rule_holds(c, parameters)),
        "Fn::And" => args.iter().all(|c| rule_holds(c, parameters)),
        "Fn::Not" => !rule_holds(args[0], parameters),
        "Fn::Equals" => value(args[0]) == value(args[1]),
        "Fn::Contains" => items(Some(args[0]))
            .iter()
            .any(|v| value(v) == value(args[1])),
        other => panic!("a rule function this model does not know: {other}"),
    }
}

#[test]
fn the_rules_reject_every_producer_maximum_that_does_not_exceed_the_minimum() {
    let t = template();
    let range = |name: &str| -> (u64, u64) {
        let p = at(&t, &["Parameters", name]);
        (
            p.get("MinValue").and_then(as_u64).expect("MinValue"),
            p.get("MaxValue").and_then(as_u64).expect("MaxValue"),
        )
    };
    let assertions: Vec<&Value> =
        items(t.get(&["Rules", "ProducerScalingRoom", "Assertions"]).ok())
            .into_iter()
            .filter_map(|a| a.get("Assert"))
            .collect();
    assert!(
        !assertions.is_empty(),
        "Rules.ProducerScalingRoom needs an assertion"
    );
    let (min_lo, min_hi) = range("ProducerMinInstances");
    let (max_lo, max_hi) = range("ProducerMaxInstances");
    for min in min_lo..=min_hi {
        for max in max_lo..=max_hi {
            let parameters = HashMap::from([
                ("ProducerMinInstances", min.to_string()),
                ("ProducerMaxInstances", max.to_string()),
            ]);
            let accepted = assertions.iter().all(|a| rule_holds(a, &parameters));
            assert_eq!(
                accepted,
                max > min,
                "ProducerMinInstances={min}, ProducerMaxInstances={max}: the rules {} it",
                if accepted { "accept" } else { "reject" }
            );
        }
    }
}

// --- scripts/deploy: the checks of a deployed stack, against stand-ins -------------
//
// No AWS account is reachable here, so `aws` and `curl` are stand-ins on PATH that
// answer what AWS and the load balancer would; the checks' own logic (what they
// ask, what they accept, what they name when it fails) runs for real.

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
