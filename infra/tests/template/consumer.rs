//! What the consumer function is built from and given: the build, and the
//! environment its configuration code must accept.

use std::collections::HashMap;
use std::path::{Component, Path};
use support::FromEnv;

use consumer_lambda::config::DbAuth;
use infra::{Document, Value, as_u64, reference};

use crate::helpers::{
    REPO, at, consumer_environment, default_of, get_att, items, max_receive_count, properties,
    template, text,
};

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
            "OrdersDeadLetterQueue" => {
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-orders-dlq".to_owned()
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
    let variables = consumer_environment(&t).as_mapping().expect("a mapping");
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
        config.retry.max_receive_count.get(),
        max_receive_count(&t),
        "the consumer requeues by the queue's own maxReceiveCount"
    );

    // The CA bundle: a layer whose content scripts/deploy writes, mounted under /opt.
    let bundle = config
        .database
        .ca_bundle
        .expect("DB_CA_BUNDLE turns on verified TLS");
    assert!(
        bundle.starts_with("/opt"),
        "DB_CA_BUNDLE lies in a layer, under /opt, found {bundle:?}"
    );
    let layers = items(properties(&t, "ConsumerFunction").get("Layers"));
    assert!(
        layers.iter().any(|l| reference(l) == Some("CaBundleLayer")),
        "the function mounts CaBundleLayer"
    );
    let content = text(at(
        &t,
        &["Resources", "CaBundleLayer", "Properties", "ContentUri"],
    ));
    // SAM resolves ContentUri from the template's directory, infra/.
    let mut resolved: Vec<String> = vec!["infra".to_owned()];
    for part in Path::new(content).components() {
        match part {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => resolved.push(name.to_string_lossy().into_owned()),
            other => panic!("CaBundleLayer's ContentUri {content} has a {other:?}"),
        }
    }
    assert_eq!(
        resolved.first().map(String::as_str),
        Some(".dev"),
        "the layer's content ({content}) is generated under the repository's .dev/ (git-ignored), \
         where scripts/deploy writes it, never committed"
    );
}
