//! What the end-to-end tests (`tests/`, whose `stack` module runs the whole
//! system in one process) and `chaos` (`src/bin/chaos/`, the real binaries under
//! a seeded schedule of faults, behind `scripts/chaos`) share.

use producer::catalogue::fixtures;
use serde_json::Value;

/// The repository's catalogue, which the producer of `chaos` is given.
pub const CATALOGUE_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../producer/catalogue.json");

/// The fixture order of `order_contract::fixtures::order_request`, priced by
/// the repository's catalogue: what every test posts.
pub fn order_request(customer: usize, lines: usize) -> Value {
    fixtures::priced(order_contract::fixtures::order_request(customer, lines))
}

/// Why a DLQ message failed, as the consumer's failure attributes on it say;
/// `None` for one without them (the redrive policy moved it).
pub fn failure_of(message: &aws_sdk_sqs::types::Message) -> Option<order_contract::Failure> {
    let attributes = message.message_attributes();
    order_contract::Failure::read(|name| attributes?.get(name)?.string_value())
}
