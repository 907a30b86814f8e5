//! What every subject's checks share: the template, and small readers of its YAML.

use std::collections::{BTreeSet, HashMap};

use infra::{Document, Value, as_u64, intrinsic, reference};

pub(crate) const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
pub(crate) const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// AWS's APIs answer HTTPS on this port, through an endpoint or the internet.
pub(crate) const HTTPS: u64 = 443;

pub(crate) fn template() -> Document {
    Document::from_file(TEMPLATE).expect("infra/template.yaml is readable YAML")
}

pub(crate) fn at<'a>(t: &'a Document, path: &[&str]) -> &'a Value {
    t.get(path).unwrap_or_else(|err| panic!("{err}"))
}

pub(crate) fn properties<'a>(t: &'a Document, resource: &str) -> &'a Value {
    at(t, &["Resources", resource, "Properties"])
}

pub(crate) fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// A YAML boolean, or the strings CloudFormation reads as one.
pub(crate) fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// `!GetAtt Resource.Attribute` as "Resource.Attribute".
pub(crate) fn get_att(value: &Value) -> Option<String> {
    match intrinsic(value)? {
        (tag, Value::String(target)) if tag == "GetAtt" => Some(target.clone()),
        (tag, Value::Sequence(parts)) if tag == "GetAtt" => {
            Some(parts.iter().map(text).collect::<Vec<_>>().join("."))
        }
        _ => None,
    }
}

/// A list, or one value standing for a list of one (as IAM allows).
pub(crate) fn items(value: Option<&Value>) -> Vec<&Value> {
    match value {
        Some(Value::Sequence(list)) => list.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

/// The parameter's default, for a `!Ref` to a parameter.
pub(crate) fn default_of<'a>(t: &'a Document, value: &Value) -> Option<&'a Value> {
    t.get(&["Parameters", reference(value)?, "Default"]).ok()
}

/// A port: a number, or a `!Ref` to a parameter with a numeric default.
pub(crate) fn port(t: &Document, value: &Value) -> u64 {
    as_u64(value)
        .or_else(|| default_of(t, value).and_then(as_u64))
        .unwrap_or_else(|| panic!("{value:?} is not a port number"))
}

/// Every statement of every permission policy in the template, with the resource
/// that holds it. Trust policies (AssumeRolePolicyDocument) say who may assume a
/// role, not what it may do, and are left out.
pub(crate) fn statements(t: &Document) -> Vec<(String, Value)> {
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

pub(crate) fn sid(statement: &Value) -> &str {
    statement.get("Sid").map(text).unwrap_or("(no Sid)")
}

/// The inline statements of a role, by Sid.
pub(crate) fn role_statements(t: &Document, role: &str) -> HashMap<String, Value> {
    statements(t)
        .into_iter()
        .filter(|(owner, _)| owner == role)
        .map(|(_, s)| (sid(&s).to_owned(), s))
        .collect()
}

/// Every (action, resource) a role's inline statements allow, resources as
/// [`name_of`] writes them.
pub(crate) fn granted(t: &Document, role: &str) -> BTreeSet<(String, String)> {
    role_statements(t, role)
        .values()
        .flat_map(|s| {
            let resources: Vec<String> =
                items(s.get("Resource")).into_iter().map(name_of).collect();
            actions(s)
                .into_iter()
                .flat_map(move |a| resources.clone().into_iter().map(move |r| (a.clone(), r)))
        })
        .collect()
}

pub(crate) fn actions(statement: &Value) -> BTreeSet<String> {
    items(statement.get("Action"))
        .into_iter()
        .map(|a| text(a).to_owned())
        .collect()
}

pub(crate) fn is_private_subnet_list(value: Option<&Value>) -> bool {
    let subnets = items(value);
    !subnets.is_empty()
        && subnets
            .iter()
            .all(|s| reference(s).is_some_and(|name| name.starts_with("PrivateSubnet")))
}

/// A policy's resource or principal as the template writes it: `X.Y` for
/// `!GetAtt X.Y`, `Ref:X` for `!Ref X`, a `!Sub`'s template, or the literal.
pub(crate) fn name_of(value: &Value) -> String {
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

/// The orders queue's VisibilityTimeout, in seconds.
pub(crate) fn visibility_timeout(t: &Document) -> u64 {
    t.number(&[
        "Resources",
        "OrdersQueue",
        "Properties",
        "VisibilityTimeout",
    ])
    .expect("the orders queue's VisibilityTimeout")
}

/// The orders queue's redrive maxReceiveCount (the parameter's default).
pub(crate) fn max_receive_count(t: &Document) -> u32 {
    t.number(&[
        "Resources",
        "OrdersQueue",
        "Properties",
        "RedrivePolicy",
        "maxReceiveCount",
    ])
    .expect("the orders queue's maxReceiveCount")
}

/// The consumer function's Timeout: its own, else the template's Globals.
pub(crate) fn function_timeout(t: &Document) -> u64 {
    t.number(&["Resources", "ConsumerFunction", "Properties", "Timeout"])
        .or_else(|_| t.number(&["Globals", "Function", "Timeout"]))
        .expect("the function's Timeout (on the function or in Globals)")
}

/// The consumer function's environment variables, as the template writes them.
pub(crate) fn consumer_environment(t: &Document) -> &Value {
    at(
        t,
        &[
            "Resources",
            "ConsumerFunction",
            "Properties",
            "Environment",
            "Variables",
        ],
    )
}

/// The port the consumer connects on (its DB_PORT). RDS Proxy listens on its
/// engine family's port and reaches the database on the database's own, which
/// the template leaves at the engine's default; so one port serves both hops.
pub(crate) fn database_port(t: &Document) -> u64 {
    let port = consumer_environment(t)
        .get("DB_PORT")
        .and_then(as_u64)
        .expect("the consumer's DB_PORT");
    let database = properties(t, "Database").get("Port");
    assert!(
        database.is_none_or(|p| as_u64(p) == Some(port)),
        "the database listens on {database:?}, the consumer connects on {port}"
    );
    port
}
