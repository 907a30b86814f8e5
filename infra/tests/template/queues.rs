//! The orders queue, its dead-letter queue and the consumer's event source.

use std::collections::BTreeSet;

use infra::{Value, as_u64, intrinsic, reference};

use crate::helpers::{
    at, function_timeout, get_att, items, properties, template, text, truthy, visibility_timeout,
};

/// The longest SQS keeps a message: 14 days
/// (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SetQueueAttributes.html,
/// `MessageRetentionPeriod`).
const SQS_MAX_RETENTION_SECS: u64 = 14 * 24 * 3600;

/// Lambda's advice for an SQS event source: a visibility timeout of at least six
/// times the function's timeout, plus the batching window
/// (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html).
const VISIBILITY_TIMEOUTS_PER_FUNCTION_TIMEOUT: u64 = 6;

#[test]
fn the_visibility_timeout_covers_six_function_timeouts_plus_the_largest_batching_window() {
    let t = template();
    let visibility: u64 = visibility_timeout(&t);
    let timeout = function_timeout(&t);
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
        visibility >= VISIBILITY_TIMEOUTS_PER_FUNCTION_TIMEOUT * timeout + window,
        "OrdersQueue's VisibilityTimeout is {visibility} s, below 6 × the function timeout ({timeout} s) \
         + the largest batching window ({window} s) = {} s: raise it, or lower the \
         MaximumBatchingWindowInSeconds parameter's MaxValue",
        VISIBILITY_TIMEOUTS_PER_FUNCTION_TIMEOUT * timeout + window
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
fn a_dead_lettered_message_keeps_at_least_a_week_in_the_dlq() {
    // A standard queue's DLQ counts expiry from the original enqueue time, so
    // what is left there is the DLQ's retention minus the time spent in orders,
    // at worst the orders queue's whole retention.
    let t = template();
    let retention = |queue| {
        properties(&t, queue)
            .get("MessageRetentionPeriod")
            .and_then(as_u64)
            .unwrap_or_else(|| panic!("{queue} sets its retention"))
    };
    let (orders, dlq) = (retention("OrdersQueue"), retention("OrdersDeadLetterQueue"));
    let week = 7 * 24 * 3600;
    assert!(
        dlq.saturating_sub(orders) >= week,
        "orders {orders} s, DLQ {dlq} s"
    );
    assert!(
        orders >= week,
        "the orders queue rides out a week's outage: {orders} s"
    );
}

#[test]
fn the_dlq_keeps_orders_fourteen_days_and_takes_redrives_only_from_the_orders_queue() {
    let t = template();
    let dlq = properties(&t, "OrdersDeadLetterQueue");
    assert_eq!(
        dlq.get("MessageRetentionPeriod").and_then(as_u64),
        Some(SQS_MAX_RETENTION_SECS),
        "the DLQ keeps messages {SQS_MAX_RETENTION_SECS} s (14 days), the most SQS allows"
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
