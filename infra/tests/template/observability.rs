//! What operators see in CloudWatch: the producer's log file and metrics shipped
//! by the CloudWatch agent, the dashboard and the saved queries, each held to
//! the names the code itself emits and writes (read from the code: the
//! consumer's EMF lines, the producer's rendered `/metrics`, its OpenAPI
//! document, and the `tracing` calls of both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use infra::{Document, Value, intrinsic, reference};

use crate::helpers::{
    REPO, at, get_att, items, name_of, properties, role_statements, template, text,
};
use crate::producer::user_data;

// ------------------------------------------------------------ the template's text --

/// A `!Sub` string with its variables made readable as JSON text: `${X}` becomes
/// `Ref:X` (a resource's or parameter's name, or `Ref:AWS::Region`), and `${!x}`,
/// CloudFormation's escape, the literal `${x}`.
fn substituted(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("a closed ${…}");
        let name = &after[..end];
        match name.strip_prefix('!') {
            Some(literal) => out.push_str(&format!("${{{literal}}}")),
            None => out.push_str(&format!("Ref:{name}")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The string of a `!Sub`, whichever form it takes.
fn sub_string(value: &Value) -> String {
    match intrinsic(value) {
        Some((tag, Value::String(s))) if tag == "Sub" => s.clone(),
        Some((tag, Value::Sequence(parts))) if tag == "Sub" => {
            parts.first().map(text).unwrap_or("").to_owned()
        }
        _ => text(value).to_owned(),
    }
}

/// The body of the user data's heredoc that ends with `marker`, and the path it
/// is written to (`cat >PATH <<'MARKER'`).
fn heredoc(script: &str, marker: &str) -> (String, String) {
    let opening = format!("<<'{marker}'");
    let mut lines = script.lines();
    let head = lines
        .by_ref()
        .find(|l| l.contains(&opening))
        .unwrap_or_else(|| panic!("the user data writes no <<'{marker}' heredoc"));
    let path = head
        .split('>')
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .unwrap_or_else(|| panic!("`cat >PATH {opening}` names no path: {head}"))
        .to_owned();
    let body: Vec<&str> = lines.take_while(|l| l.trim() != marker).collect();
    (path, body.join("\n"))
}

/// The CloudWatch agent's configuration, as the user data writes it.
fn agent_config(script: &str) -> (String, Value) {
    let (path, body) = heredoc(script, "AGENT");
    let config: Value = serde_yaml_ng::from_str(&substituted(&body))
        .unwrap_or_else(|e| panic!("the agent's configuration is not JSON: {e}\n{body}"));
    (path, config)
}

/// The systemd unit's setting, e.g. `StandardOutput`.
fn unit_setting(script: &str, key: &str) -> Option<String> {
    let (_, unit) = heredoc(script, "UNIT");
    unit.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    items(value)
        .into_iter()
        .map(|v| text(v).to_owned())
        .collect()
}

// ------------------------------------------------------------- the code's names --

/// The producer's metrics as `GET /metrics` renders them: name (with `_total`
/// for a counter's sample) and OpenMetrics type.
fn producer_metrics() -> BTreeMap<String, String> {
    let rendered = producer::Metrics::new().render();
    let metrics: BTreeMap<String, String> = rendered
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let sample = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            (sample, kind.to_owned())
        })
        .collect();
    assert!(metrics.len() >= 5, "{rendered}");
    metrics
}

/// The label names of the producer's metric families, read from the label
/// arrays `producer/src/metrics.rs` passes to its families (`("status", …)`).
fn producer_label_names() -> BTreeSet<String> {
    let source = std::fs::read_to_string(Path::new(REPO).join("producer/src/metrics.rs"))
        .expect("producer/src/metrics.rs");
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let labels: BTreeSet<String> = code
        .split("(\"")
        .skip(1)
        .filter_map(|rest| rest.split_once("\", "))
        .map(|(name, _)| name)
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(str::to_owned)
        .collect();
    assert!(labels.contains("status"), "{labels:?}");
    labels
}

/// Every metric name the consumer's and the breaker's EMF lines carry.
fn consumer_metrics() -> BTreeSet<String> {
    use consumer_lambda::metrics::{BatchMetrics, breaker_emf};
    let batch = BatchMetrics {
        oldest_received_at: "2026-12-02T10:00:00Z".parse().ok(),
        ..BatchMetrics::default()
    };
    let mut emitted = BTreeSet::new();
    for line in [batch.to_emf("f", 0), breaker_emf(true, "f", 0)] {
        let doc: serde_json::Value = serde_json::from_str(&line).expect("an EMF line is JSON");
        for directive in doc["_aws"]["CloudWatchMetrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for m in directive["Metrics"].as_array().into_iter().flatten() {
                emitted.insert(m["Name"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    emitted
}

// ------------------------------------------------------------------ the agent --

/// The producer's namespace, as the agent's `metrics` section names it.
fn producer_namespace(config: &Value) -> String {
    text(
        config
            .get("metrics")
            .and_then(|m| m.get("namespace"))
            .expect("metrics.namespace"),
    )
    .to_owned()
}

fn prometheus_section(config: &Value) -> &Value {
    config
        .get("logs")
        .and_then(|l| l.get("metrics_collected"))
        .and_then(|m| m.get("prometheus"))
        .expect("logs.metrics_collected.prometheus")
}

/// What the agent turns into CloudWatch metrics from the producer's `/metrics`:
/// the metric each declaration selects, with the dimension sets it declares.
fn agent_declarations(config: &Value) -> Vec<(String, Vec<Vec<String>>)> {
    let emf = prometheus_section(config)
        .get("emf_processor")
        .expect("prometheus.emf_processor");
    let mut out = Vec::new();
    for declaration in items(emf.get("metric_declaration")) {
        let dimensions: Vec<Vec<String>> = items(declaration.get("dimensions"))
            .into_iter()
            .map(|set| string_list(Some(set)))
            .collect();
        for selector in string_list(declaration.get("metric_selectors")) {
            let name = selector
                .strip_prefix('^')
                .and_then(|s| s.strip_suffix('$'))
                .unwrap_or_else(|| panic!("select one metric exactly (^name$), not {selector}"))
                .to_owned();
            out.push((name, dimensions.clone()));
        }
    }
    out
}

#[test]
fn the_producer_instances_install_the_cloudwatch_agent_from_the_amazon_linux_repositories_and_fetch_nothing_else()
 {
    let script = user_data(&template());
    assert!(
        script.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("dnf install") && l.contains("amazon-cloudwatch-agent")
        }),
        "the user data installs the agent with dnf from Amazon Linux 2023's repositories"
    );
    for line in script.lines() {
        for word in [
            "wget",
            "rpm -i",
            "rpm -U",
            "pip install",
            "http://",
            "https://",
        ] {
            assert!(
                !line.contains(word) || line.contains("127.0.0.1"),
                "at boot the instance fetches only from AWS's repositories and its own bucket: `{}`",
                line.trim()
            );
        }
        if line.contains("curl") {
            assert!(
                line.contains("127.0.0.1"),
                "curl only asks the producer itself: `{}`",
                line.trim()
            );
        }
    }
    assert!(
        script.contains("amazon-cloudwatch-agent-ctl -a fetch-config -m ec2"),
        "the agent starts with the configuration the user data writes"
    );
}

#[test]
fn the_agent_ships_the_producers_log_file_and_scrapes_its_metrics_listener() {
    let t = template();
    let script = user_data(&t);
    let (config_path, config) = agent_config(&script);
    assert!(
        script.contains(&format!("-c file:{config_path}")),
        "the agent is started with {config_path}"
    );

    // The producer's output goes to the file the agent tails, in the stack's log group.
    let output = unit_setting(&script, "StandardOutput").expect("the unit sets StandardOutput");
    let file = output
        .strip_prefix("append:")
        .unwrap_or_else(|| panic!("StandardOutput=append:FILE, not {output}"));
    let collected = items(
        config
            .get("logs")
            .and_then(|l| l.get("logs_collected"))
            .and_then(|l| l.get("files"))
            .and_then(|f| f.get("collect_list")),
    );
    assert_eq!(collected.len(), 1, "one file: {collected:?}");
    assert_eq!(collected[0].get("file_path").map(text), Some(file));
    assert_eq!(
        collected[0].get("log_group_name").map(text),
        Some("Ref:ProducerLogGroup")
    );
    assert_eq!(
        unit_setting(&script, "Environment=LOG_FORMAT").as_deref(),
        Some("json"),
        "JSON lines, whose fields Logs Insights discovers"
    );

    // The Prometheus scrape: the producer's own metrics listener.
    let prometheus = prometheus_section(&config);
    assert_eq!(
        prometheus.get("log_group_name").map(text),
        Some("Ref:ProducerMetricsLogGroup")
    );
    let scrape_path = text(
        prometheus
            .get("prometheus_config_path")
            .expect("prometheus_config_path"),
    );
    let (written, scrape) = heredoc(&script, "PROMETHEUS");
    assert_eq!(
        written, scrape_path,
        "the scrape configuration the agent reads is the one written"
    );
    let scrape: Value = serde_yaml_ng::from_str(&scrape).expect("the scrape configuration is YAML");
    let job = items(scrape.get("scrape_configs"))
        .first()
        .copied()
        .expect("one scrape job");
    let targets: Vec<String> = items(job.get("static_configs"))
        .into_iter()
        .flat_map(|c| string_list(c.get("targets")))
        .collect();
    assert_eq!(
        targets,
        [producer::metrics::DEFAULT_METRICS_ADDR.to_string()]
    );
    assert!(
        !script.contains("METRICS_ADDR="),
        "the unit keeps the producer's default metrics listener, which the agent scrapes"
    );
    let job_name = text(job.get("job_name").expect("job_name"));
    let emf = prometheus.get("emf_processor").expect("emf_processor");
    for declaration in items(emf.get("metric_declaration")) {
        assert_eq!(
            string_list(declaration.get("source_labels"))
                .first()
                .map(String::as_str),
            Some("job"),
            "each declaration matches the scrape job"
        );
        // The labels' values joined by the separator the declaration names.
        let labels = string_list(declaration.get("source_labels"));
        let matcher = declaration.get("label_matcher").map(text).unwrap_or("");
        assert!(
            matcher.starts_with(&format!("^{job_name}")) && matcher.ends_with('$'),
            "{matcher} matches the scrape job {job_name}"
        );
        if labels.len() > 1 {
            let separator = declaration
                .get("label_separator")
                .map(text)
                .unwrap_or_else(|| {
                    panic!("{labels:?}: name the label_separator {matcher} assumes")
                });
            assert_eq!(
                matcher.matches(separator).count(),
                labels.len() - 1,
                "{matcher}: one value per source label, joined by {separator}"
            );
        }
    }

    // Every metric the agent declares is one the producer renders, and none a
    // histogram: "The CloudWatch agent supports the counter, gauge, and summary
    // metric types ... histogram ... dropped"
    // (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/ContainerInsights-Prometheus-metrics-conversion.html).
    let rendered = producer_metrics();
    let labels = producer_label_names();
    let declared = agent_declarations(&config);
    assert!(declared.len() >= 3, "{declared:?}");
    for (name, dimensions) in &declared {
        let kind = rendered.get(name).unwrap_or_else(|| {
            panic!("the agent selects {name}, which the producer does not render ({rendered:?})")
        });
        assert!(
            kind == "counter" || kind == "gauge",
            "{name} is a {kind}; the agent drops histograms"
        );
        for dimension in dimensions.iter().flatten() {
            assert!(
                labels.contains(dimension) || dimension == "job",
                "{name}'s dimension {dimension} is no label of the producer's ({labels:?})"
            );
        }
    }
    assert_eq!(
        text(emf.get("metric_namespace").expect("metric_namespace")),
        producer_namespace(&config),
        "one namespace for everything the producer's instances publish"
    );
}

#[test]
fn the_producers_log_groups_belong_to_the_stack_and_keep_their_logs_a_bounded_time() {
    let t = template();
    for group in ["ProducerLogGroup", "ProducerMetricsLogGroup"] {
        let p = properties(&t, group);
        assert_eq!(
            at(&t, &["Resources", group, "Type"]).as_str(),
            Some("AWS::Logs::LogGroup")
        );
        assert!(
            p.get("RetentionInDays").is_some(),
            "{group} needs RetentionInDays"
        );
        assert!(
            sub_string(p.get("LogGroupName").expect("LogGroupName")).contains("${AWS::StackName}"),
            "{group} is named after the stack"
        );
    }
    assert_eq!(
        reference(
            properties(&t, "ProducerLogGroup")
                .get("RetentionInDays")
                .expect("retention")
        ),
        Some("LogRetentionInDays")
    );
}

#[test]
fn the_producer_role_may_write_only_its_own_log_groups_and_publish_only_its_namespace() {
    let t = template();
    let (_, config) = agent_config(&user_data(&t));
    let statements = role_statements(&t, "ProducerRole");
    let logs: Vec<&Value> = statements
        .values()
        .filter(|s| {
            string_list(s.get("Action"))
                .iter()
                .any(|a| a.starts_with("logs:"))
        })
        .collect();
    assert_eq!(logs.len(), 1, "one statement for the logs");
    assert_eq!(
        string_list(logs[0].get("Action"))
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "logs:CreateLogStream".to_owned(),
            "logs:PutLogEvents".to_owned()
        ]),
        "the agent writes streams of groups that exist; it creates none and sets no retention"
    );
    assert_eq!(
        items(logs[0].get("Resource"))
            .into_iter()
            .map(name_of)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "${ProducerLogGroup.Arn}".to_owned(),
            "${ProducerMetricsLogGroup.Arn}".to_owned()
        ])
    );

    let metrics: Vec<&Value> = statements
        .values()
        .filter(|s| {
            string_list(s.get("Action"))
                .iter()
                .any(|a| a.starts_with("cloudwatch:"))
        })
        .collect();
    assert_eq!(metrics.len(), 1, "one statement for the metrics");
    assert_eq!(
        string_list(metrics[0].get("Action")),
        ["cloudwatch:PutMetricData"]
    );
    // PutMetricData has no resource; the namespace condition is what bounds it
    // (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/iam-cw-condition-keys-namespace.html).
    let namespace = metrics[0]
        .get("Condition")
        .and_then(|c| c.get("StringEquals"))
        .and_then(|c| c.get("cloudwatch:namespace"))
        .map(text);
    assert_eq!(namespace, Some(producer_namespace(&config).as_str()));
}

// --------------------------------------------------------------- the dashboard --

/// One metric a dashboard widget plots.
#[derive(Debug, Clone)]
struct Plotted {
    namespace: String,
    name: String,
    dimensions: BTreeMap<String, String>,
}

/// The dashboard's body, parsed, with its `${…}` read as `Ref:…`.
fn dashboard(t: &Document) -> serde_json::Value {
    let dashboards: Vec<&str> = t
        .resources_of_type("AWS::CloudWatch::Dashboard")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(dashboards.len(), 1, "one dashboard: {dashboards:?}");
    let body = sub_string(
        properties(t, dashboards[0])
            .get("DashboardBody")
            .expect("DashboardBody"),
    );
    serde_json::from_str(&substituted(&body))
        .unwrap_or_else(|e| panic!("the dashboard body is not JSON: {e}\n{body}"))
}

/// Every metric the dashboard's widgets plot, with CloudWatch's `"."` (the
/// same item as the row above) filled in.
fn plotted(body: &serde_json::Value) -> Vec<Plotted> {
    let mut out = Vec::new();
    for widget in body["widgets"].as_array().expect("widgets") {
        let mut previous: Vec<String> = Vec::new();
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            // A SEARCH expression: `{Namespace,dimension,…} MetricName="name"`.
            if let Some(expression) = row
                .as_array()
                .and_then(|r| r.first())
                .and_then(|o| o["expression"].as_str())
            {
                out.push(searched(expression));
                continue;
            }
            let row: Vec<String> = row
                .as_array()
                .expect("a metric row")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .enumerate()
                .map(|(i, v)| {
                    if v == "." {
                        previous
                            .get(i)
                            .cloned()
                            .expect("a \".\" below a row that has the item")
                    } else {
                        v
                    }
                })
                .collect();
            assert!(
                row.len() >= 2 && row.len().is_multiple_of(2),
                "namespace, name, then dimension pairs: {row:?}"
            );
            out.push(Plotted {
                namespace: row[0].clone(),
                name: row[1].clone(),
                dimensions: row[2..]
                    .chunks(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            });
            previous = row;
        }
    }
    out
}

/// The metric a `SEARCH('{Namespace,dimension,…} MetricName="name"', …)` finds,
/// each dimension standing for any value.
fn searched(expression: &str) -> Plotted {
    let schema = expression
        .split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(schema, _)| schema)
        .unwrap_or_else(|| panic!("a SEARCH with a {{schema}}: {expression}"));
    let mut parts = schema.split(',').map(str::trim);
    let namespace = parts.next().unwrap_or("").to_owned();
    let name = expression
        .split_once("MetricName=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| panic!("a SEARCH for one MetricName: {expression}"));
    Plotted {
        namespace,
        name,
        dimensions: parts.map(|d| (d.to_owned(), "*".to_owned())).collect(),
    }
}

#[test]
fn the_dashboard_shows_the_edge_the_queues_the_consumer_and_the_database() {
    let t = template();
    let shown = plotted(&dashboard(&t));
    let has = |namespace: &str, name: &str, dimension: (&str, &str)| {
        shown.iter().any(|p| {
            p.namespace == namespace
                && p.name == name
                && p.dimensions.get(dimension.0).map(String::as_str) == Some(dimension.1)
        })
    };
    let (_, config) = agent_config(&user_data(&t));
    let producer = producer_namespace(&config);
    let function = ("FunctionName", "Ref:ConsumerFunction");
    for (namespace, name, dimension, what) in [
        (
            producer.as_str(),
            "producer_http_requests_total",
            ("route", "/orders"),
            "orders accepted and refused at the edge",
        ),
        (
            "AWS/ApplicationELB",
            "TargetResponseTime",
            ("TargetGroup", "Ref:ProducerTargetGroup.TargetGroupFullName"),
            "the time to answer an order (the enqueue)",
        ),
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            ("QueueName", "Ref:OrdersQueue.QueueName"),
            "queue depth",
        ),
        (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            ("QueueName", "Ref:OrdersQueue.QueueName"),
            "the oldest message's age",
        ),
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            ("QueueName", "Ref:OrdersDeadLetterQueue.QueueName"),
            "DLQ depth",
        ),
        ("OrdersConsumer", "Stored", function, "stored"),
        ("OrdersConsumer", "Duplicates", function, "duplicates"),
        ("OrdersConsumer", "Conflicts", function, "conflicts"),
        ("OrdersConsumer", "Postponed", function, "postponed"),
        ("OrdersConsumer", "Requeued", function, "requeued"),
        (
            "OrdersConsumer",
            "Skewed",
            function,
            "orders this build cannot take yet",
        ),
        (
            "OrdersConsumer",
            "DeadLettered",
            function,
            "poison sent to the DLQ",
        ),
        (
            "OrdersConsumer",
            "OldestOrderAge",
            function,
            "the oldest order's age",
        ),
        ("OrdersConsumer", "BatchLatency", function, "batch latency"),
        (
            "AWS/RDS",
            "DatabaseConnections",
            ("DBInstanceIdentifier", "Ref:Database"),
            "database connections",
        ),
        (
            "AWS/RDS",
            "DatabaseConnectionsCurrentlySessionPinned",
            ("ProxyName", "Ref:DatabaseProxy"),
            "RDS Proxy's pinned sessions",
        ),
    ] {
        assert!(
            has(namespace, name, dimension),
            "the dashboard does not show {what}: {namespace} {name} with {dimension:?}"
        );
    }
}

#[test]
fn the_dashboard_lists_the_status_functions_warnings_from_its_own_log_group() {
    let t = template();
    let body = dashboard(&t);
    let queries: Vec<&str> = body["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter(|w| w["type"] == "log")
        .filter_map(|w| w["properties"]["query"].as_str())
        .collect();
    let query = queries
        .iter()
        .find(|q| q.starts_with("SOURCE 'Ref:StatusLogGroup' |"))
        .unwrap_or_else(|| panic!("no log widget reads StatusLogGroup: {queries:?}"));
    // The level the function's "cannot be read" lines are written at.
    let status = include_str!("../../../status/src/lib.rs");
    assert!(status.contains("tracing::warn!("), "status warns no more?");
    assert!(query.contains(r#""level":"(WARN|ERROR)""#), "{query}");
    assert_eq!(
        properties(&t, "StatusFunction")
            .get("LoggingConfig")
            .and_then(|config| config.get("LogGroup"))
            .and_then(reference),
        Some("StatusLogGroup"),
        "the function logs where the widget reads"
    );
}

#[test]
fn every_metric_the_dashboard_and_the_alarms_name_is_one_the_code_emits() {
    let t = template();
    let (_, config) = agent_config(&user_data(&t));
    let producer = producer_namespace(&config);
    let consumer = consumer_metrics();
    let declared = agent_declarations(&config);
    // The agent's own measurements (memory), published with PutMetricData.
    let measured: Vec<String> = config
        .get("metrics")
        .and_then(|m| m.get("metrics_collected"))
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.iter())
        .flat_map(|(plugin, v)| {
            let plugin = text(plugin).to_owned();
            string_list(v.get("measurement"))
                .into_iter()
                .map(move |m| format!("{plugin}_{m}"))
        })
        .collect();
    assert_eq!(measured, ["mem_used_percent"]);

    let mut named = plotted(&dashboard(&t));
    // The alarms, in the same shape.
    for (_, alarm) in t.resources_of_type("AWS::CloudWatch::Alarm") {
        let p = alarm.get("Properties").expect("properties");
        named.push(Plotted {
            namespace: p.get("Namespace").map(text).unwrap_or("").to_owned(),
            name: p.get("MetricName").map(text).unwrap_or("").to_owned(),
            dimensions: items(p.get("Dimensions"))
                .into_iter()
                .map(|d| {
                    let value = d.get("Value").expect("a dimension value");
                    let value = get_att(value)
                        .or_else(|| reference(value).map(str::to_owned))
                        .map(|v| format!("Ref:{v}"))
                        .unwrap_or_else(|| text(value).to_owned());
                    (
                        text(d.get("Name").expect("a dimension name")).to_owned(),
                        value,
                    )
                })
                .collect(),
        });
    }
    let ours = named
        .iter()
        .filter(|p| p.namespace == producer || p.namespace == "OrdersConsumer")
        .count();
    assert!(ours >= 12, "{named:?}");
    for p in &named {
        let dimensions: BTreeSet<&str> = p.dimensions.keys().map(String::as_str).collect();
        if p.namespace == consumer_lambda::metrics::NAMESPACE {
            assert!(
                consumer.contains(&p.name),
                "{} names {}, which the consumer never emits ({consumer:?})",
                p.namespace,
                p.name
            );
            assert_eq!(
                p.dimensions.get("FunctionName").map(String::as_str),
                Some("Ref:ConsumerFunction"),
                "{}: the consumer's metrics carry its FunctionName",
                p.name
            );
        } else if p.namespace == status::NAMESPACE {
            assert_eq!(
                p.name,
                status::ANSWERS,
                "the status function emits only {}",
                status::ANSWERS
            );
            assert_eq!(
                p.dimensions.get("FunctionName").map(String::as_str),
                Some("Ref:StatusFunction"),
            );
            assert_eq!(
                dimensions,
                ["FunctionName", "Status"].into(),
                "status::answer_emf's set"
            );
        } else if p.namespace == producer {
            if measured.contains(&p.name) {
                assert!(
                    dimensions.is_empty(),
                    "{}: the agent adds no dimension to it",
                    p.name
                );
                continue;
            }
            let (_, sets) = declared
                .iter()
                .find(|(name, _)| *name == p.name)
                .unwrap_or_else(|| {
                    panic!(
                        "{} names {}, which the agent does not publish",
                        p.namespace, p.name
                    )
                });
            assert!(
                sets.iter().any(
                    |set| set.iter().map(String::as_str).collect::<BTreeSet<_>>() == dimensions
                ),
                "{} is published with the dimension sets {sets:?}, not {dimensions:?}",
                p.name
            );
        } else {
            assert!(
                p.namespace.starts_with("AWS/"),
                "an unknown namespace {}",
                p.namespace
            );
            for value in p.dimensions.values() {
                assert!(
                    value.starts_with("Ref:"),
                    "{} {}: name the stack's resource, not {value}",
                    p.namespace,
                    p.name
                );
            }
        }
    }
}

#[test]
fn the_dashboard_counts_each_status_post_orders_answers_and_no_other() {
    let t = template();
    let (_, config) = agent_config(&user_data(&t));
    let producer = producer_namespace(&config);
    let shown: BTreeSet<String> = plotted(&dashboard(&t))
        .into_iter()
        .filter(|p| p.namespace == producer && p.name == "producer_http_requests_total")
        .inspect(|p| {
            assert_eq!(
                p.dimensions.get("route").map(String::as_str),
                Some("/orders")
            )
        })
        .filter_map(|p| p.dimensions.get("status").cloned())
        .collect();
    let api: serde_json::Value =
        serde_json::from_str(producer::openapi::json()).expect("the OpenAPI document is JSON");
    let documented: BTreeSet<String> = api["paths"]["/orders"]["post"]["responses"]
        .as_object()
        .expect("POST /orders documents its responses")
        .keys()
        .cloned()
        .collect();
    assert!(documented.contains("202"), "{documented:?}");
    assert_eq!(
        shown, documented,
        "the dashboard's statuses are the ones POST /orders answers"
    );
}

#[test]
fn the_dashboards_alarm_widget_lists_every_alarm_of_the_stack() {
    let t = template();
    let body = dashboard(&t);
    let listed: BTreeSet<String> = body["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter(|w| w["type"] == "alarm")
        .flat_map(|w| {
            w["properties"]["alarms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let alarms: BTreeSet<String> = t
        .resources_of_type("AWS::CloudWatch::Alarm")
        .map(|(id, _)| format!("Ref:{id}.Arn"))
        .collect();
    assert!(alarms.len() >= 8, "{alarms:?}");
    assert_eq!(listed, alarms, "the dashboard shows each alarm's state");
}

#[test]
fn the_stack_outputs_the_dashboards_address() {
    let t = template();
    let output = at(&t, &["Outputs", "DashboardUrl", "Value"]);
    let url = sub_string(output);
    assert!(url.starts_with("https://"), "{url}");
    assert!(url.contains("#dashboards"), "{url}");
    assert!(url.contains("${OrdersDashboard}"), "{url}");
    assert!(url.contains("${AWS::Region}"), "{url}");
}

// ----------------------------------------------------------- the saved queries --

/// The fields the code's `tracing` calls write in a JSON log line, given where
/// the layout puts them: `event` for an event's own fields (and `message`),
/// `span` for the current span's.
fn fields_written(
    source_dir: &str,
    event: &str,
    elsewhere: &[&str],
) -> (BTreeSet<String>, Vec<String>) {
    let mut fields = BTreeSet::new();
    let mut messages = Vec::new();
    let mut dirs = vec![Path::new(REPO).join(source_dir)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("a source directory")
            .flatten()
        {
            let path = entry.path();
            let module = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if elsewhere.contains(&module) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("a source file");
            for (macro_name, is_span) in [
                ("info_span!(", true),
                ("info!(", false),
                ("warn!(", false),
                ("error!(", false),
                ("debug!(", false),
            ] {
                for (at, _) in source.match_indices(macro_name) {
                    let args = macro_arguments(&source[at + macro_name.len()..]);
                    let mut args = args.into_iter();
                    if is_span {
                        args.next(); // the span's name
                    }
                    for arg in args {
                        let arg = arg.trim();
                        if let Some(literal) = arg.strip_prefix('"') {
                            messages.push(literal.trim_end_matches('"').to_owned());
                            continue;
                        }
                        let name = arg
                            .trim_start_matches(['%', '?'])
                            .split(['=', ' ', '.'])
                            .next()
                            .unwrap_or("")
                            .trim();
                        if !name.is_empty()
                            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            fields.insert(if is_span {
                                format!("span.{name}")
                            } else {
                                format!("{event}{name}")
                            });
                        }
                    }
                }
            }
        }
    }
    // What the JSON formatter writes of its own.
    fields.insert(format!("{event}message"));
    fields.insert("level".to_owned());
    (fields, messages)
}

/// A macro call's top-level arguments, up to its closing parenthesis.
fn macro_arguments(rest: &str) -> Vec<String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut args = vec![String::new()];
    for c in rest.chars() {
        if in_string {
            args.last_mut().expect("an argument").push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth == 0 => break,
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                args.push(String::new());
                continue;
            }
            _ => {}
        }
        args.last_mut().expect("an argument").push(c);
    }
    args
}

/// Logs Insights' words and functions, which are not fields.
const QUERY_WORDS: &[&str] = &[
    "fields",
    "filter",
    "stats",
    "sort",
    "limit",
    "display",
    "by",
    "as",
    "and",
    "or",
    "not",
    "like",
    "in",
    "asc",
    "desc",
    "count",
    "ispresent",
    "isblank",
    "coalesce",
    "bin",
    "earliest",
    "latest",
    "min",
    "max",
    "sum",
    "avg",
    "dedup",
];

/// The fields a query names, and the text it matches with `like "…"`.
fn query_names(query: &str) -> (BTreeSet<String>, Vec<String>) {
    // The words after `as` name results, not fields, wherever they appear.
    let words: Vec<&str> = query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '@'))
        .filter(|w| !w.is_empty())
        .collect();
    let aliases: BTreeSet<&str> = words
        .windows(2)
        .filter(|pair| pair[0] == "as")
        .map(|pair| pair[1])
        .collect();
    let mut fields = BTreeSet::new();
    let mut matched = Vec::new();
    let mut rest = query;
    while !rest.is_empty() {
        let c = rest.chars().next().expect("a character");
        if c == '"' {
            let end = rest[1..].find('"').expect("a closed string") + 1;
            let literal = &rest[1..end];
            if query[..query.len() - rest.len()]
                .trim_end()
                .ends_with("like")
            {
                matched.push(literal.to_owned());
            }
            rest = &rest[end + 1..];
            continue;
        }
        if c.is_ascii_alphabetic() || c == '@' || c == '_' {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '@'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            let call = rest[end..].trim_start().starts_with('(');
            if !call && !QUERY_WORDS.contains(&word) && !aliases.contains(word) {
                fields.insert(word.to_owned());
            }
            rest = &rest[end..];
            continue;
        }
        rest = &rest[c.len_utf8()..];
    }
    (fields, matched)
}

/// Insights' own fields (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/CWL_AnalyzeLogData-discoverable-fields.html).
const INSIGHTS_FIELDS: &[&str] = &["@timestamp", "@message", "@log", "@logStream"];

#[test]
fn every_log_field_and_message_a_saved_query_names_is_one_the_code_writes() {
    // The producer's JSON layout flattens an event's fields to the top level and
    // puts the current span's under "span" (producer/src/telemetry.rs); the
    // consumer's is lambda_runtime's default, tracing-subscriber's JSON: an
    // event's fields under "fields", the current span's under "span".
    let telemetry = std::fs::read_to_string(Path::new(REPO).join("producer/src/telemetry.rs"))
        .expect("producer/src/telemetry.rs");
    for layout in [".flatten_event(true)", ".with_current_span(true)"] {
        assert!(
            telemetry.contains(layout),
            "the producer's JSON layout changed: no {layout}"
        );
    }
    let main = std::fs::read_to_string(Path::new(REPO).join("consumer-lambda/src/main.rs"))
        .expect("consumer-lambda/src/main.rs");
    assert!(
        main.contains("lambda_runtime::tracing::init_default_subscriber()"),
        "the consumer's JSON layout changed: it no longer uses lambda_runtime's default subscriber"
    );
    let (producer_fields, producer_messages) = fields_written("producer/src", "", &[]);
    // The same binary's breaker and provision tasks run as functions of their own,
    // which log to their own groups, not the consumer's.
    let (consumer_fields, consumer_messages) =
        fields_written("consumer-lambda/src", "fields.", &["breaker", "provision"]);
    for field in ["span.order_id", "span.request_id", "order_id"] {
        assert!(
            producer_fields.contains(field),
            "{field} in {producer_fields:?}"
        );
    }
    for field in ["span.order_id", "span.request_id", "fields.error"] {
        assert!(
            consumer_fields.contains(field),
            "{field} in {consumer_fields:?}"
        );
    }

    let t = template();
    let queries: Vec<(&str, &Value)> = t
        .resources_of_type("AWS::Logs::QueryDefinition")
        .filter_map(|(id, q)| Some((id, q.get("Properties")?)))
        .collect();
    assert!(queries.len() >= 3, "{queries:?}");
    for (id, p) in queries {
        let query = text(p.get("QueryString").expect("QueryString"));
        let groups: BTreeSet<String> = items(p.get("LogGroupNames"))
            .into_iter()
            .map(|g| {
                reference(g)
                    .map(str::to_owned)
                    .unwrap_or_else(|| text(g).to_owned())
            })
            .collect();
        let mut known: BTreeSet<String> = INSIGHTS_FIELDS.iter().map(|f| (*f).to_owned()).collect();
        let mut messages: Vec<&String> = Vec::new();
        if groups.contains("ProducerLogGroup") {
            known.extend(producer_fields.iter().cloned());
            messages.extend(&producer_messages);
        }
        if groups.contains("ConsumerLogGroup") {
            known.extend(consumer_fields.iter().cloned());
            messages.extend(&consumer_messages);
        }
        assert!(
            !messages.is_empty(),
            "{id} reads neither the producer's nor the consumer's log group"
        );
        let (fields, matched) = query_names(query);
        for field in &fields {
            assert!(
                known.contains(field),
                "{id} names the field {field}, which the code of its log groups never writes ({known:?})"
            );
        }
        for text in &matched {
            assert!(
                messages.iter().any(|m| m.contains(text.as_str())),
                "{id} matches \"{text}\", which no log message of its log groups contains"
            );
        }
    }
}

#[test]
fn the_saved_queries_follow_one_order_read_refused_records_by_reason_and_list_conflicts() {
    let t = template();
    let queries: Vec<(String, BTreeSet<String>, String)> = t
        .resources_of_type("AWS::Logs::QueryDefinition")
        .map(|(_, q)| {
            let p = q.get("Properties").expect("properties");
            (
                sub_string(p.get("Name").expect("Name")),
                items(p.get("LogGroupNames"))
                    .into_iter()
                    .filter_map(|g| reference(g).map(str::to_owned))
                    .collect(),
                text(p.get("QueryString").expect("QueryString")).to_owned(),
            )
        })
        .collect();
    let find = |word: &str| {
        queries
            .iter()
            .find(|(name, _, _)| name.contains(word))
            .unwrap_or_else(|| panic!("no saved query named …{word}…: {queries:?}"))
    };
    let (_, groups, query) = find("one-order");
    assert_eq!(
        groups,
        &BTreeSet::from(["ProducerLogGroup".to_owned(), "ConsumerLogGroup".to_owned()]),
        "one order, from the request to its row"
    );
    for field in ["span.order_id", "span.request_id"] {
        assert!(query.contains(field), "{query}");
    }
    let (_, groups, query) = find("refused");
    assert!(groups.contains("ConsumerLogGroup"));
    assert!(
        query.contains("stats") && query.contains(" by "),
        "counted by reason: {query}"
    );
    let (_, groups, query) = find("conflicts");
    assert!(groups.contains("ConsumerLogGroup"));
    assert!(query.contains("span.order_id"), "{query}");
    for (name, _, _) in &queries {
        assert!(
            name.contains("${AWS::StackName}"),
            "{name}: named after the stack, so stacks don't collide"
        );
    }
}
