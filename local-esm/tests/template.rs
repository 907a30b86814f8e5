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
const RESOURCE_STAR_ALLOWED: &[(&str, &str, &str)] = &[(
    "ConsumerRole",
    "VpcNetworkInterfaces",
    "Lambda's VPC network interfaces: DescribeNetworkInterfaces has no resource-level permissions, \
     and AWS documents the other ENI actions for this role on \"*\" too",
)];

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
fn only_the_producer_role_attaches_a_managed_policy_and_only_session_manager() {
    let t = template();
    for (id, role) in t.resources_of_type("AWS::IAM::Role") {
        let managed: Vec<String> = items(
            role.get("Properties")
                .and_then(|p| p.get("ManagedPolicyArns")),
        )
        .into_iter()
        .map(|arn| match intrinsic(arn) {
            Some((_, Value::String(s))) => s.clone(),
            _ => text(arn).to_owned(),
        })
        .collect();
        if id == "ProducerRole" {
            assert_eq!(
                managed,
                vec![
                    "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore".to_owned()
                ],
                "the producer's only managed policy is Session Manager's"
            );
        } else {
            assert!(
                managed.is_empty(),
                "{id} attaches {managed:?}: write the statements it needs inline"
            );
        }
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
        BTreeSet::from(["ReadOwnBinary".to_owned(), "SendOrders".to_owned()]),
        "the producer's role has exactly two statements"
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
    assert_eq!(
        at(&t, &["Parameters", protection, "Default"]).as_str(),
        Some("true"),
        "deletion protection is on unless the deployer turns it off"
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
    ];
    expected.sort();
    assert_eq!(
        ingress, expected,
        "inbound: customers → load balancer (80, 443) → producer; consumer → proxy → database on 5432; \
         consumer → SQS endpoint on 443; nothing else"
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
    let endpoint = properties(&t, "SqsEndpoint");
    assert_eq!(endpoint.get("VpcEndpointType").map(text), Some("Interface"));
    assert!(
        truthy(endpoint.get("PrivateDnsEnabled")),
        "the SDK's default SQS host must resolve to the endpoint"
    );
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
    assert!(
        config.queue_url.is_some(),
        "QUEUE_URL lets the consumer postpone failed records"
    );
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
        other => panic!("UserData should be Fn::Base64 of a !Sub script, found {other:?}"),
    }
}

#[test]
fn the_producer_service_gets_the_settings_its_configuration_reads() {
    let t = template();
    let script = user_data(&t);
    let producer_port = port(&t, at(&t, &["Parameters", "ProducerPort", "Default"]));
    let substitute = |line: &str| {
        line.replace(
            "${OrdersQueue}",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-orders",
        )
        .replace("${ProducerPort}", &producer_port.to_string())
        .replace("${AWS::Region}", "eu-west-1")
    };
    let env: HashMap<String, String> = script
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), substitute(v)))
        .collect();
    let config = producer::Config::from_lookup(|name| env.get(name).cloned())
        .unwrap_or_else(|err| panic!("the producer refuses the service's environment: {err}"));
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
