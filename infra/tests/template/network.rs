//! The network's openings: who may reach whom, on which port, and how the
//! private side leaves the VPC. Security group rules are read once, here, for
//! these checks and for the reachability model.

use std::collections::BTreeSet;

use infra::{Document, Value, intrinsic, reference};

use crate::helpers::{
    HTTPS, at, database_port, get_att, is_private_subnet_list, items, name_of, port, properties,
    template, text,
};

/// A security group rule as the openings check compares it: the group, the
/// first port, and the peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    group: String,
    port: u64,
    peer: String,
}

/// Ingress or egress rules, sorted, from the same reading as the reachability model.
fn rules(t: &Document, ingress: bool) -> Vec<Rule> {
    let mut out: Vec<Rule> = openings(t)
        .into_iter()
        .filter(|o| o.ingress == ingress)
        .map(|o| Rule {
            group: o.group,
            port: o.from,
            peer: o.peer,
        })
        .collect();
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
    let database = database_port(&t);
    // Every port a listener of the load balancer takes, whether or not its
    // condition holds: the HTTPS listener exists only with a certificate.
    let listeners: BTreeSet<u64> = t
        .resources_of_type("AWS::ElasticLoadBalancingV2::Listener")
        .map(|(id, l)| {
            l.get("Properties")
                .and_then(|p| p.get("Port"))
                .map(|p| port(&t, p))
                .unwrap_or_else(|| panic!("{id} has no Port"))
        })
        .collect();
    assert!(!listeners.is_empty(), "the load balancer has no listener");
    let ingress = rules(&t, true);
    let mut expected: Vec<Rule> = listeners
        .iter()
        .map(|&p| rule("LoadBalancerSecurityGroup", p, "0.0.0.0/0"))
        .collect();
    expected.extend([
        rule(
            "ProducerSecurityGroup",
            producer_port,
            "LoadBalancerSecurityGroup",
        ),
        rule("ProxySecurityGroup", database, "ConsumerSecurityGroup"),
        rule("ProxySecurityGroup", database, "StatusSecurityGroup"),
        rule("DatabaseSecurityGroup", database, "ProxySecurityGroup"),
        rule("EndpointSecurityGroup", HTTPS, "ConsumerSecurityGroup"),
        rule("EndpointSecurityGroup", HTTPS, "ProducerSecurityGroup"),
        // Only with ProxySecretsManagerEndpoint=true (reachability.rs).
        rule("SecretsEndpointSecurityGroup", HTTPS, "ProxySecurityGroup"),
    ]);
    expected.sort();
    assert_eq!(
        ingress, expected,
        "inbound: customers → load balancer ({listeners:?}) → producer; consumer and status function → \
         proxy → database on {database}; consumer and producer → SQS endpoint on {HTTPS}; nothing else"
    );

    let consumer_out: Vec<Rule> = rules(&t, false)
        .into_iter()
        .filter(|r| r.group == "ConsumerSecurityGroup" && r.peer != "127.0.0.1/32")
        .collect();
    assert_eq!(
        consumer_out,
        vec![
            rule("ConsumerSecurityGroup", HTTPS, "EndpointSecurityGroup"),
            rule("ConsumerSecurityGroup", database, "ProxySecurityGroup"),
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
    for function in ["ConsumerFunction", "MigrateFunction"] {
        let vpc = properties(&t, function).get("VpcConfig");
        assert!(
            is_private_subnet_list(vpc.and_then(|v| v.get("SubnetIds"))),
            "{function} runs in the private subnets"
        );
    }
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

/// One security group rule, inline or a separate resource.
#[derive(Debug, Clone)]
pub(crate) struct Opening {
    group: String,
    ingress: bool,
    protocol: String,
    from: u64,
    to: u64,
    /// A CIDR (`Ref:VpcCidr` for the VPC's own), or the other group's logical id.
    peer: String,
}

pub(crate) fn openings(t: &Document) -> Vec<Opening> {
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
pub(crate) enum Peer<'a> {
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
pub(crate) fn egress_admits(
    all: &[Opening],
    groups: &[String],
    tcp_port: u64,
    peer: Peer<'_>,
) -> bool {
    all.iter()
        .filter(|o| !o.ingress && groups.contains(&o.group))
        .any(|o| rule_admits(o, tcp_port, peer))
}

/// Whether any of `groups` lets traffic in from `peer` on the port.
pub(crate) fn ingress_admits(
    all: &[Opening],
    groups: &[String],
    tcp_port: u64,
    peer: Peer<'_>,
) -> bool {
    all.iter()
        .filter(|o| o.ingress && groups.contains(&o.group))
        .any(|o| rule_admits(o, tcp_port, peer))
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

/// CloudFormation's `DependsOn` page, "When a DependsOn attribute is required"
/// (<https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-attribute-dependson.html#gatewayattachment>):
/// resources in a public subnet that need the internet gateway (Auto Scaling
/// groups and load balancers among them, and routes through the gateway) must
/// `DependsOn` the VPC-gateway attachment, or their creation can fail while the
/// gateway is not yet attached, and a delete can detach it under them.
#[test]
fn what_needs_the_internet_gateway_waits_for_its_attachment() {
    let t = template();
    let attachments: Vec<&str> = t
        .resources_of_type("AWS::EC2::VPCGatewayAttachment")
        .filter(|(_, r)| {
            r.get("Properties")
                .and_then(|p| p.get("InternetGatewayId"))
                .is_some()
        })
        .map(|(id, _)| id)
        .collect();
    let [attachment] = attachments.as_slice() else {
        panic!("one attachment of the internet gateway, found {attachments:?}");
    };
    let public = |subnets: Option<&Value>| {
        items(subnets)
            .iter()
            .any(|s| reference(s).is_some_and(|name| name.starts_with("PublicSubnet")))
    };
    let mut needing = Vec::new();
    for (id, lb) in t.resources_of_type("AWS::ElasticLoadBalancingV2::LoadBalancer") {
        let properties = lb.get("Properties");
        if properties.and_then(|p| p.get("Scheme")).map(text) == Some("internet-facing") {
            needing.push(id);
        }
    }
    for (id, group) in t.resources_of_type("AWS::AutoScaling::AutoScalingGroup") {
        if public(
            group
                .get("Properties")
                .and_then(|p| p.get("VPCZoneIdentifier")),
        ) {
            needing.push(id);
        }
    }
    for (id, route) in t.resources_of_type("AWS::EC2::Route") {
        if route
            .get("Properties")
            .and_then(|p| p.get("GatewayId"))
            .is_some()
        {
            needing.push(id);
        }
    }
    for expected in ["LoadBalancer", "ProducerGroup", "PublicDefaultRoute"] {
        assert!(
            needing.contains(&expected),
            "{expected} is not among the resources that need the gateway: {needing:?}"
        );
    }
    for id in needing {
        let depends_on = items(t.get(&["Resources", id, "DependsOn"]).ok());
        assert!(
            depends_on.iter().any(|d| text(d) == *attachment),
            "{id} needs the internet gateway: DependsOn {attachment} (it has {depends_on:?})"
        );
    }
}
