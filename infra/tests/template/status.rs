//! The status function behind the load balancer: the listener rule that
//! authenticates, then forwards `GET /orders*` to a Lambda target group; the
//! permission that lets only that target group invoke the function (its trust
//! rests on this path: it cannot fetch the load balancer's keys); and its one
//! network path, to RDS Proxy.

use infra::{Value, as_u64, intrinsic, reference};

use crate::helpers::{HTTPS, at, database_port, get_att, items, properties, template, text};
use crate::network::{Peer, egress_admits, ingress_admits, openings};

/// The rule's actions by `Order` (an `!If`'s, its first branch's).
fn actions_in_order(rule: &Value) -> Vec<&Value> {
    let order = |action: &Value| -> u64 {
        let action = match intrinsic(action) {
            Some((tag, Value::Sequence(branches))) if tag == "If" => &branches[1],
            _ => action,
        };
        action
            .get("Order")
            .and_then(as_u64)
            .expect("every action has an Order")
    };
    let mut actions = items(rule.get("Actions"));
    actions.sort_by_key(|a| order(a));
    actions
}

/// The values of the rule's condition on `field`, read from its `…Config`.
fn condition<'a>(rule: &'a Value, field: &str, config: &str) -> Vec<&'a str> {
    let conditions: Vec<&Value> = items(rule.get("Conditions"))
        .into_iter()
        .filter(|c| c.get("Field").map(text) == Some(field))
        .collect();
    assert_eq!(conditions.len(), 1, "one {field} condition");
    items(conditions[0].get(config).and_then(|c| c.get("Values")))
        .into_iter()
        .map(text)
        .collect()
}

#[test]
fn get_orders_is_authenticated_then_forwarded_to_the_status_function_before_the_order_rule() {
    let t = template();
    let rule = properties(&t, "StatusRule");
    let api = properties(&t, "SignedInApiRule");
    assert_eq!(reference(&rule["ListenerArn"]), Some("HttpsListener"));
    let priority = |r: &Value| r.get("Priority").and_then(as_u64).expect("a priority");
    assert!(
        priority(rule) < priority(api),
        "a lower number is evaluated first: GET /orders must not reach the producer's rule"
    );
    assert_eq!(
        condition(rule, "http-request-method", "HttpRequestMethodConfig"),
        ["GET"]
    );
    assert_eq!(
        condition(rule, "path-pattern", "PathPatternConfig"),
        ["/orders*"]
    );
    let actions = actions_in_order(rule);
    assert_eq!(actions.len(), 2, "authenticate, then forward: {actions:?}");
    // The same sign-in as the API's (deny: a script gets 401, not a redirect).
    assert_eq!(
        actions[0],
        actions_in_order(api)[0],
        "the API's authenticate action first"
    );
    assert_eq!(text(&actions[1]["Type"]), "forward");
    assert_eq!(
        reference(&actions[1]["TargetGroupArn"]),
        Some("StatusTargetGroup")
    );
    assert_eq!(
        at(&t, &["Resources", "StatusRule", "Condition"]),
        at(&t, &["Resources", "HttpsListener", "Condition"]),
        "the rule exists with the listener"
    );
}

#[test]
fn the_status_target_group_holds_the_status_function_and_only_it_may_invoke_the_function() {
    let t = template();
    let group = properties(&t, "StatusTargetGroup");
    assert_eq!(text(&group["TargetType"]), "lambda");
    let targets = items(group.get("Targets"));
    assert_eq!(targets.len(), 1);
    assert_eq!(
        get_att(&targets[0]["Id"]).as_deref(),
        Some("StatusFunction.Arn")
    );
    // Registering the target needs the permission already in place.
    let depends: Vec<&str> = items(t.get(&["Resources", "StatusTargetGroup", "DependsOn"]).ok())
        .into_iter()
        .map(text)
        .collect();
    assert!(depends.contains(&"StatusInvokePermission"), "{depends:?}");

    let permissions: Vec<(&str, &Value)> = t
        .resources_of_type("AWS::Lambda::Permission")
        .filter(|(_, p)| {
            p.get("Properties")
                .and_then(|p| p.get("FunctionName"))
                .and_then(get_att)
                .is_some_and(|f| f.starts_with("StatusFunction"))
        })
        .collect();
    assert_eq!(
        permissions.len(),
        1,
        "one permission on the status function"
    );
    let permission = &permissions[0].1["Properties"];
    assert_eq!(text(&permission["Action"]), "lambda:InvokeFunction");
    assert_eq!(
        text(&permission["Principal"]),
        "elasticloadbalancing.amazonaws.com"
    );
    // The source is the target group by its fixed name: the same variables,
    // and the ARN's resource part `targetgroup/<name>/*`.
    let sub = |v: &Value| -> (String, Value) {
        match intrinsic(v) {
            Some((tag, Value::Sequence(parts))) if tag == "Sub" => {
                (text(&parts[0]).to_owned(), parts[1].clone())
            }
            other => panic!("expected !Sub [template, variables], got {other:?}"),
        }
    };
    let (name, name_vars) = sub(&group["Name"]);
    let (source, source_vars) = sub(&permission["SourceArn"]);
    assert_eq!(name_vars, source_vars);
    assert_eq!(
        source,
        format!(
            "arn:${{AWS::Partition}}:elasticloadbalancing:${{AWS::Region}}:${{AWS::AccountId}}:targetgroup/{name}/*"
        )
    );
}

#[test]
fn the_status_function_reaches_rds_proxy_and_nothing_else() {
    let t = template();
    let all = openings(&t);
    let db_port = database_port(&t);
    let refs = |v: Option<&Value>| -> Vec<String> {
        items(v)
            .into_iter()
            .filter_map(|g| reference(g).map(str::to_owned))
            .collect()
    };
    let vpc = &properties(&t, "StatusFunction")["VpcConfig"];
    assert_eq!(
        refs(vpc.get("SubnetIds")),
        refs(properties(&t, "ConsumerFunction")["VpcConfig"].get("SubnetIds")),
        "the consumer's subnets"
    );
    let status = refs(vpc.get("SecurityGroupIds"));
    let proxy = refs(properties(&t, "DatabaseProxy").get("VpcSecurityGroupIds"));
    let database = refs(properties(&t, "Database").get("VPCSecurityGroups"));
    assert!(egress_admits(&all, &status, db_port, Peer::InVpc(&proxy)));
    assert!(ingress_admits(&all, &proxy, db_port, Peer::InVpc(&status)));
    for (what, port, peer) in [
        ("the database", db_port, Peer::InVpc(&database)),
        ("the internet", HTTPS, Peer::Internet),
        (
            "the SQS endpoint",
            HTTPS,
            Peer::InVpc(&refs(properties(&t, "SqsEndpoint").get("SecurityGroupIds"))),
        ),
    ] {
        assert!(
            !egress_admits(&all, &status, port, peer),
            "the status function reaches {what}"
        );
    }
}
