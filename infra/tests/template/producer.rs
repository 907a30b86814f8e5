//! The producer's instances: their service and boot, metadata and credits, AMI,
//! and the Auto Scaling group's rules.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use support::FromEnv;

use infra::{Document, Value, as_u64, intrinsic, reference};

use crate::helpers::{
    HTTPS, at, default_of, items, name_of, port, properties, template, text, truthy,
};

/// The user data script of the producer's launch template.
pub(crate) fn user_data(t: &Document) -> String {
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
/// computes `!Select [i, !Cidr [!Ref VpcCidr, count, bits]]` from the VPC's default
/// range: the i-th block of `bits` host bits, counted from the range's start.
fn load_balancer_subnet_cidrs(t: &Document) -> Vec<String> {
    items(properties(t, "LoadBalancer").get("Subnets"))
        .iter()
        .map(|subnet| {
            let id = reference(subnet).expect("!Ref to a subnet");
            let cidr = properties(t, id).get("CidrBlock").expect("CidrBlock");
            let Some((tag, Value::Sequence(select))) = intrinsic(cidr) else {
                panic!("{id}'s CidrBlock should be !Select of !Cidr, found {cidr:?}");
            };
            assert_eq!(tag, "Select");
            let index = as_u64(&select[0]).expect("an index");
            let Some((tag, Value::Sequence(args))) = intrinsic(&select[1]) else {
                panic!("{id}'s CidrBlock should select from a !Cidr");
            };
            assert_eq!(tag, "Cidr");
            let range = default_of(t, &args[0])
                .map(text)
                .expect("!Cidr's range is a !Ref to a parameter with a default");
            let count = as_u64(&args[1]).expect("!Cidr's count");
            let bits = as_u64(&args[2]).expect("!Cidr's host bits");
            assert!(index < count, "{id} selects block {index} of {count}");
            nth_block(range, index, bits)
        })
        .collect()
}

/// The `index`-th block with `bits` host bits inside an IPv4 range, as `!Cidr` counts them.
fn nth_block(range: &str, index: u64, bits: u64) -> String {
    let (address, prefix) = range.split_once('/').expect("a CIDR");
    let address: Ipv4Addr = address.parse().expect("an IPv4 address");
    let prefix: u32 = prefix.parse().expect("a prefix length");
    let bits = u32::try_from(bits).expect("host bits");
    assert!(
        32 - prefix >= bits,
        "a /{prefix} range has no blocks of {bits} host bits"
    );
    let start = u32::from(address) & (u32::MAX << (32 - prefix));
    let offset = u32::try_from(index).expect("an index") << bits;
    format!("{}/{}", Ipv4Addr::from(start + offset), 32 - bits)
}

#[test]
fn cidr_blocks_are_counted_from_the_start_of_the_range() {
    assert_eq!(nth_block("10.40.0.0/16", 1, 8), "10.40.1.0/24");
    assert_eq!(nth_block("10.40.0.0/20", 3, 10), "10.40.12.0/22");
    assert_eq!(nth_block("192.168.4.0/22", 2, 8), "192.168.6.0/24");
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
    let types = default_instance_types(&t);
    assert!(
        !types.is_empty(),
        "the launch template names no instance type"
    );
    let baseline = types
        .iter()
        .map(|kind| {
            BURSTABLE_BASELINE_PERCENT
                .iter()
                .find(|(name, _)| name == kind)
                .map(|(_, percent)| *percent)
                .unwrap_or_else(|| {
                    panic!("{kind} is not in BURSTABLE_BASELINE_PERCENT: add its baseline from AWS's table")
                })
        })
        .max()
        .expect("at least one type");
    assert!(
        mode == "unlimited" || target <= baseline,
        "in {mode} mode an instance of {types:?} out of credits is held at its {baseline} % baseline, so a \
         CPU target of {target} % would never scale out"
    );
    assert!(
        target > baseline && target <= 80,
        "a CPU target of {target} %: above the {baseline} % baseline of {types:?}, with headroom below 100 %"
    );
}

/// Baseline utilisation per vCPU of the burstable types, in per cent, from AWS's
/// burstable performance instance tables
/// (https://docs.aws.amazon.com/ec2/latest/instancetypes/gp.html#gp_cpu-credits).
const BURSTABLE_BASELINE_PERCENT: &[(&str, u64)] = &[
    ("t3.nano", 5),
    ("t3.micro", 10),
    ("t3.small", 20),
    ("t3.medium", 20),
    ("t3.large", 30),
    ("t4g.nano", 5),
    ("t4g.micro", 10),
    ("t4g.small", 20),
    ("t4g.medium", 20),
    ("t4g.large", 30),
];

/// The instance types a deploy that keeps ProducerInstanceType's default can get:
/// every branch of the launch template's `!If`s, parameters by their default,
/// an empty default standing for no choice.
fn default_instance_types(t: &Document) -> BTreeSet<String> {
    fn walk(t: &Document, value: &Value, out: &mut BTreeSet<String>) {
        match intrinsic(value) {
            Some((tag, Value::Sequence(args))) if tag == "If" => {
                for branch in &args[1..] {
                    walk(t, branch, out);
                }
            }
            _ if reference(value).is_some() => {
                let default = default_of(t, value).map(text).unwrap_or("");
                if !default.is_empty() {
                    out.insert(default.to_owned());
                }
            }
            _ => {
                if let Some(kind) = value.as_str() {
                    out.insert(kind.to_owned());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        t,
        at(
            t,
            &[
                "Resources",
                "ProducerLaunchTemplate",
                "Properties",
                "LaunchTemplateData",
                "InstanceType",
            ],
        ),
        &mut out,
    );
    out
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

/// The two branches of an output's `!If [HasCertificate, with, without]`.
fn by_certificate<'a>(t: &'a Document, output: &str) -> (&'a Value, &'a Value) {
    let value = at(t, &["Outputs", output, "Value"]);
    match intrinsic(value) {
        Some((tag, Value::Sequence(args))) if tag == "If" && args.len() == 3 => {
            assert_eq!(text(&args[0]), "HasCertificate", "{output}");
            (&args[1], &args[2])
        }
        _ => panic!("{output} is not !If [HasCertificate, …, …]"),
    }
}

/// A `!Sub`'s template, or the literal.
fn sub_text(value: &Value) -> String {
    crate::helpers::name_of(value)
}

#[test]
fn without_a_certificate_the_outputs_call_plain_http_a_trial() {
    let t = template();
    let (_, url) = by_certificate(&t, "ProducerUrl");
    assert!(sub_text(url).starts_with("http://"));
    let (https, trial) = by_certificate(&t, "ProducerMode");
    assert!(
        sub_text(trial).starts_with("TRIAL: plain HTTP"),
        "{trial:?}"
    );
    assert!(sub_text(https).starts_with("HTTPS"), "{https:?}");
}

#[test]
fn with_a_certificate_customers_reach_https_on_the_domain_it_names() {
    let t = template();
    let (url, _) = by_certificate(&t, "ProducerUrl");
    assert_eq!(sub_text(url), "https://${ProducerDomain}");
    // The certificate cannot name the load balancer: a domain is required with it.
    let rule = at(&t, &["Rules", "HttpsNamesItsDomain"]);
    let condition =
        serde_yaml_ng::to_string(rule.get("RuleCondition").expect("a condition")).expect("yaml");
    assert!(condition.contains("CertificateArn"), "{condition}");
    let assertion =
        serde_yaml_ng::to_string(rule.get("Assertions").expect("assertions")).expect("yaml");
    assert!(
        assertion.contains("Not") && assertion.contains("ProducerDomain"),
        "{assertion}"
    );
    // Port 80 only redirects there.
    let actions = serde_yaml_ng::to_string(
        properties(&t, "HttpListener")
            .get("DefaultActions")
            .expect("actions"),
    )
    .expect("yaml");
    assert!(actions.contains("HasCertificate") && actions.contains("redirect"));
}

/// The key `scripts/deploy` uploads the catalogue to, as the template writes it.
const CATALOGUE_OBJECT: &str =
    "arn:${AWS::Partition}:s3:::${ProducerArtifactBucket}/${AWS::StackName}/catalogue.json";

#[test]
fn the_instances_fetch_the_catalogue_before_the_producer_starts_and_every_minute_after() {
    let t = template();
    let script = user_data(&t);
    let lines: Vec<&str> = script.lines().map(str::trim).collect();
    let position = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("the user data has no line {line:?}"))
    };
    // The producer reads the file the fetch writes, which it replaces by a rename.
    position("Environment=CATALOGUE_PATH=/var/lib/orders-catalogue/catalogue.json");
    position(r#"mv -f "$dir/catalogue.json.new" "$dir/catalogue.json""#);
    position(
        "'s3://${ProducerArtifactBucket}/${AWS::StackName}/catalogue.json' \"$dir/catalogue.json.new\"",
    );
    // Once before the producer starts (it is not ready without a catalogue), then by the timer.
    assert!(
        position("/usr/local/bin/orders-catalogue-fetch")
            < position("systemctl enable --now orders-producer.service orders-catalogue.timer")
    );
    position("OnUnitActiveSec=1min");
    let deploy = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/deploy"))
        .expect("scripts/deploy");
    assert!(
        deploy.contains(r#"CATALOGUE_KEY="$STACK_NAME/catalogue.json""#),
        "scripts/deploy uploads the catalogue where the instances fetch it"
    );
}

#[test]
fn the_producer_may_read_the_catalogues_key_and_no_other() {
    let t = template();
    let statements = crate::helpers::role_statements(&t, "ProducerRole");
    let read = &statements["ReadCatalogue"];
    assert_eq!(
        crate::helpers::actions(read),
        BTreeSet::from(["s3:GetObject".to_owned()])
    );
    match intrinsic(read.get("Resource").expect("Resource")) {
        Some((tag, Value::String(object))) if tag == "Sub" => {
            assert_eq!(object, CATALOGUE_OBJECT, "the one key, not the bucket")
        }
        other => panic!("ReadCatalogue's Resource should be a !Sub, found {other:?}"),
    }
}

#[test]
fn a_refused_catalogue_raises_an_alarm() {
    let t = template();
    let alarm = properties(&t, "CatalogueInvalidAlarm");
    let field = |name: &str| alarm.get(name).map(text).unwrap_or_default().to_owned();
    assert_eq!(field("Namespace"), "OrdersProducer");
    assert_eq!(field("MetricName"), "producer_catalogue_invalid");
    assert_eq!(field("Statistic"), "Maximum");
    assert_eq!(field("ComparisonOperator"), "GreaterThanOrEqualToThreshold");
    assert_eq!(as_u64(alarm.get("Threshold").expect("Threshold")), Some(1));
    assert_eq!(
        as_u64(alarm.get("EvaluationPeriods").expect("EvaluationPeriods")),
        Some(1),
        "one refused fetch is enough: the file does not fix itself"
    );
    assert!(
        producer::Metrics::new()
            .render()
            .contains("# TYPE producer_catalogue_invalid gauge"),
        "the producer reports it as a gauge"
    );
}

/// The branches of an `!If [condition, then, else]`.
fn branches<'a>(value: &'a Value, condition: &str) -> (&'a Value, &'a Value) {
    match intrinsic(value) {
        Some((tag, Value::Sequence(args))) if tag == "If" && args.len() == 3 => {
            assert_eq!(text(&args[0]), condition, "{value:?}");
            (&args[1], &args[2])
        }
        _ => panic!("not !If [{condition}, …, …]: {value:?}"),
    }
}

/// A rule's actions: each identity provider's authenticate action with what it
/// does unauthenticated, then where it forwards.
fn sign_in_actions(actions: &Value, unauthenticated: &str) {
    let actions = items(Some(actions));
    assert_eq!(actions.len(), 2, "authenticate, then forward: {actions:?}");
    let (oidc, cognito) = branches(actions[0], "SignsInWithOidc");
    for (action, kind, config) in [
        (oidc, "authenticate-oidc", "AuthenticateOidcConfig"),
        (cognito, "authenticate-cognito", "AuthenticateCognitoConfig"),
    ] {
        assert_eq!(text(&action["Type"]), kind);
        assert_eq!(
            text(&action[config]["OnUnauthenticatedRequest"]),
            unauthenticated,
            "{kind}"
        );
        assert_eq!(as_u64(&action["Order"]), Some(1));
    }
    assert_eq!(text(&actions[1]["Type"]), "forward");
    assert_eq!(
        name_of(&actions[1]["TargetGroupArn"]),
        "Ref:ProducerTargetGroup"
    );
    assert_eq!(as_u64(&actions[1]["Order"]), Some(2));
}

#[test]
fn with_a_certificate_the_page_signs_in_the_api_answers_401_and_probes_and_assets_stay_public() {
    let t = template();
    sign_in_actions(
        &properties(&t, "HttpsListener")["DefaultActions"],
        "authenticate",
    );
    let rules: Vec<(&str, &Value)> = t
        .resources_of_type("AWS::ElasticLoadBalancingV2::ListenerRule")
        .map(|(id, _)| (id, properties(&t, id)))
        .filter(|(_, p)| reference(&p["ListenerArn"]) == Some("HttpsListener"))
        .collect();
    let paths = |rule: &Value| -> BTreeSet<String> {
        items(rule.get("Conditions"))
            .iter()
            .flat_map(|c| items(c["PathPatternConfig"].get("Values")))
            .map(|v| text(v).to_owned())
            .collect()
    };
    let (api, api_rule) = rules
        .iter()
        .find(|(_, rule)| paths(rule).contains("/orders"))
        .expect("a rule for the API");
    assert_eq!(
        paths(api_rule),
        ["/me", "/orders", "/orders/*"].map(String::from).into(),
        "{api}"
    );
    sign_in_actions(&api_rule["Actions"], "deny");
    let api_priority = as_u64(&api_rule["Priority"]).expect("a priority");

    let mut public = BTreeSet::new();
    for (id, rule) in &rules {
        // GET /orders* signs in too, for the status function (status.rs).
        if id == api || *id == "StatusRule" {
            continue;
        }
        assert!(
            as_u64(&rule["Priority"]).expect("a priority") > api_priority,
            "{id}"
        );
        let actions = items(rule.get("Actions"));
        assert_eq!(actions.len(), 1, "{id} forwards, nothing else");
        assert_eq!(text(&actions[0]["Type"]), "forward", "{id}");
        for condition in items(rule.get("Conditions")) {
            assert!(
                items(condition["PathPatternConfig"].get("Values")).len() <= 3,
                "{id}: at most three values a condition"
            );
        }
        public.extend(paths(rule));
    }
    assert_eq!(
        public,
        [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/catalogue",
            "/app.js",
            "/app.css",
            "/favicon.svg"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn the_user_pool_offers_hosted_sign_in_and_sign_up_to_the_load_balancer_only() {
    let t = template();
    let pool = properties(&t, "CustomerPool");
    assert_eq!(
        pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"],
        Value::Bool(false),
        "sign-up"
    );
    let client = properties(&t, "CustomerPoolClient");
    assert_eq!(
        client["GenerateSecret"],
        Value::Bool(true),
        "the ALB needs a client secret"
    );
    assert_eq!(
        items(client.get("AllowedOAuthFlows"))
            .iter()
            .map(|v| text(v))
            .collect::<Vec<_>>(),
        ["code"]
    );
    assert!(
        items(client.get("AllowedOAuthScopes"))
            .iter()
            .any(|v| text(v) == "openid")
    );
    let callbacks: Vec<String> = items(client.get("CallbackURLs"))
        .into_iter()
        .map(name_of)
        .collect();
    assert_eq!(callbacks, ["https://${ProducerDomain}/oauth2/idpresponse"]);
    for resource in ["CustomerPool", "CustomerPoolClient", "CustomerPoolDomain"] {
        assert_eq!(
            text(at(&t, &["Resources", resource, "Condition"])),
            "SignsInWithCognito"
        );
    }
    // The load balancer calls the identity provider's token and user info endpoints.
    let egress = properties(&t, "LoadBalancerToIdentityProvider");
    assert_eq!(
        (as_u64(&egress["FromPort"]), text(&egress["CidrIp"])),
        (Some(HTTPS), "0.0.0.0/0")
    );
}

#[test]
fn with_a_certificate_the_producer_verifies_this_load_balancers_signature_and_in_trial_nobody_signs_in()
 {
    let t = template();
    let script = user_data(&t);
    assert!(
        script.contains("${SignInEnvironment}"),
        "the unit takes the sign-in settings"
    );
    let variables = match intrinsic(at(
        &t,
        &[
            "Resources",
            "ProducerLaunchTemplate",
            "Properties",
            "LaunchTemplateData",
            "UserData",
            "Fn::Base64",
        ],
    )) {
        Some((_, Value::Sequence(parts))) => parts[1].clone(),
        other => panic!("not !Sub [script, variables]: {other:?}"),
    };
    let (signed, trial) = branches(&variables["SignInEnvironment"], "HasCertificate");
    let env: HashMap<String, String> = name_of(signed)
        .lines()
        .filter_map(|line| line.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v
                .replace("${LoadBalancer}", "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/shop/50dc6c495c0c9188")
                .replace("${AWS::Region}", "eu-west-1");
            (k.to_owned(), v)
        })
        .chain([
            ("QUEUE_URL".to_owned(), "https://sqs.eu-west-1.amazonaws.com/1/orders".to_owned()),
            ("CATALOGUE_PATH".to_owned(), "/var/lib/orders-catalogue/catalogue.json".to_owned()),
        ])
        .collect();
    let config = producer::Config::from_lookup(|name| env.get(name).cloned()).expect("valid");
    let sign_in = config.sign_in.expect("sign-in on with a certificate");
    assert!(
        sign_in
            .signer
            .ends_with(":loadbalancer/app/shop/50dc6c495c0c9188"),
        "{}",
        sign_in.signer
    );
    assert_eq!(
        sign_in.key_endpoint,
        "https://public-keys.auth.elb.eu-west-1.amazonaws.com"
    );
    assert!(env.contains_key("SIGN_OUT_URL"));
    assert!(!name_of(trial).contains("ALB_SIGNER_ARN"), "{trial:?}");
    let (_, trial_mode) = by_certificate(&t, "ProducerMode");
    assert!(
        sub_text(trial_mode).contains("nobody can sign in"),
        "{trial_mode:?}"
    );
}
