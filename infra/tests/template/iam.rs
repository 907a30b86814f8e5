//! Least privilege: what each role and policy may do, and on what.

use std::collections::BTreeSet;

use infra::{Value, as_u64, intrinsic, reference};

use crate::helpers::{
    actions, at, get_att, items, role_statements, sid, statements, template, text,
};

#[test]
fn no_policy_statement_allows_every_action() {
    let t = template();
    let all = statements(&t);
    // A walker that found nothing would pass everything below.
    for (role, _) in t.resources_of_type("AWS::IAM::Role") {
        assert!(
            all.iter().any(|(owner, _)| owner == role),
            "no policy statement found for {role}"
        );
    }
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
        "MigrateRole",
        "VpcNetworkInterfaces",
        "the same network interfaces for the migrate function, in the same VPC",
    ),
    (
        "StatusRole",
        "VpcNetworkInterfaces",
        "the same network interfaces for the status function, in the same VPC",
    ),
    (
        "ProducerRole",
        "SessionManager",
        "the Session Manager agent's own calls (ssm:UpdateInstanceInformation, ssmmessages:*Channel), \
         which AWS's custom instance profile for Session Manager gives on \"*\"",
    ),
    (
        "BreakerRole",
        "ReadTheBatchesFigures",
        "cloudwatch:GetMetricData, which has no resource-level permissions and no condition key; \
         it only reads metrics (breaker.rs checks it is the statement's only action)",
    ),
    (
        "ProducerRole",
        "PublishMetrics",
        "cloudwatch:PutMetricData, which has no resource; its cloudwatch:namespace condition holds \
         it to the producer's namespace (observability.rs checks it)",
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

#[test]
fn the_producer_may_only_send_to_the_orders_queue_read_its_own_binary_and_ship_its_telemetry() {
    let t = template();
    let statements = role_statements(&t, "ProducerRole");
    // ShipLogs and PublishMetrics: observability.rs checks their resources and condition.
    assert_eq!(
        statements.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "PublishMetrics".to_owned(),
            "ReadCatalogue".to_owned(),
            "ReadOwnBinary".to_owned(),
            "SendOrders".to_owned(),
            "SessionManager".to_owned(),
            "ShipLogs".to_owned()
        ]),
        "the producer's role has exactly six statements (ReadCatalogue: producer.rs)"
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
fn the_consumer_may_connect_only_through_the_proxy_as_the_writer() {
    connects_only_through_the_proxy_as(
        "ConsumerRole",
        "ConnectThroughProxy",
        "DatabaseWriterUsername",
        "ConsumerFunction",
    );
}

#[test]
fn only_the_migrate_function_may_connect_as_the_owner() {
    connects_only_through_the_proxy_as(
        "MigrateRole",
        "ConnectThroughProxyAsOwner",
        "DatabaseMasterUsername",
        "MigrateFunction",
    );
    let t = template();
    let as_owner: Vec<String> = statements(&t)
        .into_iter()
        .filter(|(_, statement)| actions(statement).contains("rds-db:connect"))
        .filter(|(_, statement)| {
            format!("{:?}", statement.get("Resource")).contains("${DatabaseMasterUsername}")
        })
        .map(|(owner, _)| owner)
        .collect();
    assert_eq!(
        as_owner,
        ["MigrateRole"],
        "who may connect as the master user"
    );
}

/// `role`'s `sid` allows rds-db:connect through the proxy as the user of the
/// parameter `user`, and `function` connects to the proxy as that user.
fn connects_only_through_the_proxy_as(role: &str, sid: &str, user: &str, function: &str) {
    let t = template();
    let statements = role_statements(&t, role);
    let connect = statements
        .get(sid)
        .unwrap_or_else(|| panic!("{role} needs the {sid} statement"));
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
        arn.ends_with(&format!(":dbuser:${{ProxyId}}/${{{user}}}")),
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
            function,
            "Properties",
            "Environment",
            "Variables",
        ],
    );
    assert_eq!(
        env.get("DB_USER").and_then(reference),
        Some(user),
        "{function}'s DB_USER must be the user its role may connect as"
    );
    assert_eq!(
        env.get("DB_HOST").and_then(get_att).as_deref(),
        Some("DatabaseProxy.Endpoint"),
        "{function} connects to RDS Proxy, where its IAM token is valid"
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
