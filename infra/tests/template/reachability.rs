//! The reachability model: every AWS call a component in the VPC makes, the way
//! AWS would route it, and whether IAM, both ends' security groups and the
//! endpoint policy admit it.

use std::collections::BTreeSet;

use infra::{Document, Value, reference};

use crate::helpers::{
    HTTPS, actions, at, database_port, get_att, items, name_of, properties, role_statements, sid,
    template, text, truthy,
};
use crate::network::{Opening, Peer, egress_admits, ingress_admits, openings};

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
// A function with no VpcConfig calls out through Lambda's own network, which
// reaches the internet (https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc-internet.html).

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

/// A caller: where its network interfaces sit and who it is.
#[derive(Debug)]
struct Component {
    name: &'static str,
    /// A Lambda function with no VpcConfig: it has no interfaces in our subnets.
    outside_vpc: bool,
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
    /// Lambda's own network, for a function outside the VPC.
    LambdaNetwork,
    ServiceSide,
    Nowhere(String),
}

const ORDERS_QUEUE: &str = "OrdersQueue.Arn";
const DEAD_LETTER_QUEUE: &str = "OrdersDeadLetterQueue.Arn";

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
    let status = properties(t, "StatusFunction");
    let status_vpc = status
        .get("VpcConfig")
        .expect("the status function runs in the VPC");
    let service = Origin::Service;
    let provision = properties(t, "ProvisionFunction");
    let provision_vpc = provision.get("VpcConfig");

    vec![
        Component {
            name: "producer instances",
            outside_vpc: false,
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
                // orders-catalogue-fetch: `aws s3 cp` of the catalogue.
                Call {
                    api: "s3:GetObject",
                    action: "s3:GetObject",
                    resource: "arn:${AWS::Partition}:s3:::${ProducerArtifactBucket}/${AWS::StackName}/catalogue.json",
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
                // The CloudWatch agent: the producer's log file, and the EMF lines
                // of its Prometheus scrape, each into its log group of the stack.
                Call {
                    api: "logs:CreateLogStream",
                    action: "logs:CreateLogStream",
                    resource: "${ProducerLogGroup.Arn}",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "logs:PutLogEvents",
                    action: "logs:PutLogEvents",
                    resource: "${ProducerLogGroup.Arn}",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "logs:PutLogEvents",
                    action: "logs:PutLogEvents",
                    resource: "${ProducerMetricsLogGroup.Arn}",
                    origin: Origin::Vpc,
                },
                // Its memory measurement. CloudWatch's API answers at
                // monitoring.<region>.amazonaws.com, IAM calls it cloudwatch:.
                Call {
                    api: "monitoring:PutMetricData",
                    action: "cloudwatch:PutMetricData",
                    resource: "*",
                    origin: Origin::Vpc,
                },
            ],
        },
        Component {
            name: "consumer function",
            outside_vpc: false,
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
                // consumer-lambda/src/dead_letter.rs: poison to the DLQ, saying why.
                Call {
                    api: "sqs:SendMessageBatch",
                    action: "sqs:SendMessage",
                    resource: DEAD_LETTER_QUEUE,
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
            name: "status function",
            outside_vpc: false,
            groups: refs(status_vpc.get("SecurityGroupIds")),
            subnets: refs(status_vpc.get("SubnetIds")),
            public_address: false,
            role: role_of(status.get("Role")),
            // It calls no AWS API itself: the database through RDS Proxy
            // (below) and its logs and interfaces through Lambda.
            calls: vec![
                Call {
                    api: "logs:PutLogEvents",
                    action: "logs:PutLogEvents",
                    resource: "${StatusLogGroup.Arn}",
                    origin: service("Lambda ships the function's output to CloudWatch Logs"),
                },
                Call {
                    api: "ec2:CreateNetworkInterface",
                    action: "ec2:CreateNetworkInterface",
                    resource: "*",
                    origin: service("Lambda attaches the function to its subnets"),
                },
            ],
        },
        Component {
            name: "RDS Proxy",
            outside_vpc: false,
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
        Component {
            name: "provision function",
            outside_vpc: provision_vpc.is_none(),
            groups: refs(provision_vpc.and_then(|v| v.get("SecurityGroupIds"))),
            subnets: refs(provision_vpc.and_then(|v| v.get("SubnetIds"))),
            public_address: false,
            role: role_of(provision.get("Role")),
            calls: vec![
                // consumer-lambda/src/provision: the roles' passwords, the migrations,
                // and the answer at CloudFormation's presigned S3 URL, which carries
                // CloudFormation's own authorisation.
                Call {
                    api: "secretsmanager:GetSecretValue",
                    action: "secretsmanager:GetSecretValue",
                    resource: "Ref:DatabaseWriterSecret",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "secretsmanager:GetSecretValue",
                    action: "secretsmanager:GetSecretValue",
                    resource: "Ref:DatabaseReaderSecret",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "lambda:Invoke",
                    action: "lambda:InvokeFunction",
                    resource: "MigrateFunction.Arn",
                    origin: Origin::Vpc,
                },
                Call {
                    api: "s3:PutObject",
                    action: "",
                    resource: "*",
                    origin: Origin::Vpc,
                },
            ],
        },
    ]
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
    if component.outside_vpc {
        return Route::LambdaNetwork;
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
        Route::ServiceSide | Route::LambdaNetwork | Route::Nowhere(_) => {}
        Route::InternetGateway => {
            if !egress_admits(all, &c.groups, HTTPS, Peer::Internet) {
                out.push(format!("{:?} let no HTTPS out to the internet", c.groups));
            }
        }
        Route::Endpoint(id) => {
            let p = properties(t, id);
            let endpoint_groups: Vec<String> = items(p.get("SecurityGroupIds"))
                .into_iter()
                .filter_map(|g| reference(g).map(str::to_owned))
                .collect();
            if !egress_admits(all, &c.groups, HTTPS, Peer::InVpc(&endpoint_groups)) {
                out.push(format!(
                    "{:?} let no HTTPS out to {id} ({endpoint_groups:?})",
                    c.groups
                ));
            }
            if !ingress_admits(all, &endpoint_groups, HTTPS, Peer::InVpc(&c.groups)) {
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
fn the_sqs_endpoint_admits_exactly_the_calls_the_consumer_and_the_producer_make_on_their_queues() {
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
    assert_eq!(
        allowed_through(&statements, "ConsumerRole", DEAD_LETTER_QUEUE, SQS_ACTIONS),
        set(&["sqs:SendMessage"]),
        "the consumer's path to the DLQ admits its dead letters (SendMessageBatch), nothing else: \
         no receive or delete, so a bug in it cannot empty the DLQ"
    );
    assert!(
        allowed_through(&statements, "ProducerRole", DEAD_LETTER_QUEUE, SQS_ACTIONS).is_empty(),
        "nothing through the endpoint reaches the DLQ for the producer"
    );
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
        "the consumer's SQS actions on its queue apply to the orders queue only"
    );
    let poison = &role_statements(&t, "ConsumerRole")["DeadLetterPoison"];
    assert_eq!(actions(poison), set(&["sqs:SendMessage"]));
    assert_eq!(
        items(poison.get("Resource"))
            .into_iter()
            .filter_map(get_att)
            .collect::<Vec<_>>(),
        vec![DEAD_LETTER_QUEUE.to_owned()],
        "the consumer may only send to the DLQ"
    );
}

#[test]
fn the_functions_reach_the_proxy_and_the_proxy_the_database_and_nothing_else_reaches_either() {
    let t = template();
    let all = openings(&t);
    let db_port = database_port(&t);
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
    // The migrate function connects through the proxy too, once per deploy.
    let migrate: Vec<String> = items(
        properties(&t, "MigrateFunction")
            .get("VpcConfig")
            .and_then(|v| v.get("SecurityGroupIds")),
    )
    .into_iter()
    .filter_map(|g| reference(g).map(str::to_owned))
    .collect();
    let status = components(&t)
        .into_iter()
        .find(|c| c.name == "status function")
        .expect("the status function")
        .groups;
    let proxy = groups("DatabaseProxy", "VpcSecurityGroupIds");
    let database = groups("Database", "VPCSecurityGroups");
    for (from, from_groups, to, to_groups) in [
        ("consumer", &consumer, "proxy", &proxy),
        ("migrate function", &migrate, "proxy", &proxy),
        ("status function", &status, "proxy", &proxy),
        ("proxy", &proxy, "database", &database),
    ] {
        assert!(
            egress_admits(&all, from_groups, db_port, Peer::InVpc(to_groups)),
            "the {from}'s groups {from_groups:?} let nothing out to the {to} ({to_groups:?}) on {db_port}"
        );
        assert!(
            ingress_admits(&all, to_groups, db_port, Peer::InVpc(from_groups)),
            "the {to}'s groups {to_groups:?} admit nothing from the {from} ({from_groups:?}) on {db_port}"
        );
    }
    let producer = components(&t)
        .into_iter()
        .find(|c| c.name == "producer instances")
        .expect("the producer")
        .groups;
    for (to, to_groups) in [("proxy", &proxy), ("database", &database)] {
        assert!(
            !ingress_admits(&all, to_groups, db_port, Peer::InVpc(&producer)),
            "the producer never reaches the {to}"
        );
    }
}

#[test]
fn the_provision_function_moved_into_the_private_subnets_could_not_answer_cloudformation() {
    // The template with the provision function given the migrate function's VpcConfig.
    let yaml = std::fs::read_to_string(crate::helpers::TEMPLATE).expect("the template");
    let anchor = "      Role: !GetAtt ProvisionRole.Arn\n";
    assert!(
        yaml.contains(anchor),
        "the provision function's Role line moved"
    );
    let moved = yaml.replace(
        anchor,
        &format!(
            "{anchor}      VpcConfig:\n        SubnetIds: [!Ref PrivateSubnetA, !Ref PrivateSubnetB]\n        SecurityGroupIds: [!Ref ConsumerSecurityGroup]\n"
        ),
    );
    let t = Document::parse(&moved).expect("still YAML");
    let all = openings(&t);
    let provision = components(&t)
        .into_iter()
        .find(|c| c.name == "provision function")
        .expect("the provision function is modelled");
    for api in [
        "s3:PutObject",
        "secretsmanager:GetSecretValue",
        "lambda:Invoke",
    ] {
        let call = provision
            .calls
            .iter()
            .find(|c| c.api == api)
            .expect("a modelled call");
        // No route; or, for Secrets Manager with the proxy's endpoint, one that
        // admits only RDS Proxy.
        let (route, problems) = obstacles(&t, &all, &provision, call);
        assert!(!problems.is_empty(), "{api} went {route:?}, unopposed");
    }
}

/// The resources `ProxySecretsManagerEndpoint=true` adds.
const PROXY_SECRETS_REMEDY: [&str; 4] = [
    "SecretsEndpointSecurityGroup",
    "SecretsEndpointFromProxy",
    "ProxyToSecretsEndpoint",
    "SecretsManagerEndpoint",
];

#[test]
fn the_proxys_secrets_endpoint_is_off_unless_asked_for() {
    let t = template();
    assert_eq!(
        text(at(
            &t,
            &["Parameters", "ProxySecretsManagerEndpoint", "Default"]
        )),
        "false"
    );
    for id in PROXY_SECRETS_REMEDY {
        assert_eq!(
            at(&t, &["Resources", id, "Condition"]).as_str(),
            Some("HasProxySecretsEndpoint"),
            "{id} is created only with ProxySecretsManagerEndpoint=true"
        );
    }
}

#[test]
fn with_the_secrets_endpoint_rds_proxy_reads_both_secrets_from_its_own_subnets() {
    // If the proxy calls Secrets Manager from its interfaces in our subnets (what
    // AWS does not say), the remedy must give that call a route its groups (both
    // ends) and the endpoint's policy admit, for every user's secret.
    let t = template();
    let all = openings(&t);
    let proxy = components(&t)
        .into_iter()
        .find(|c| c.name == "RDS Proxy")
        .expect("RDS Proxy is modelled");
    for resource in [
        "Database.MasterUserSecret.SecretArn",
        "Ref:DatabaseWriterSecret",
        "Ref:DatabaseReaderSecret",
    ] {
        let call = Call {
            api: "secretsmanager:GetSecretValue",
            action: "secretsmanager:GetSecretValue",
            resource,
            origin: Origin::Vpc,
        };
        let (route, problems) = obstacles(&t, &all, &proxy, &call);
        assert_eq!(route, Route::Endpoint("SecretsManagerEndpoint".into()));
        assert!(problems.is_empty(), "{resource}: {problems:?}");
    }
    // And the endpoint admits nobody else: the producer's role, for one.
    let endpoint = properties(&t, "SecretsManagerEndpoint");
    let statements: Vec<Value> = items(
        endpoint
            .get("PolicyDocument")
            .and_then(|d| d.get("Statement")),
    )
    .into_iter()
    .cloned()
    .collect();
    assert!(!policy_allows(
        &statements,
        Some("ProducerRole"),
        "secretsmanager:GetSecretValue",
        "Ref:DatabaseWriterSecret"
    ));
}
