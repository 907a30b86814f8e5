//! The order message contract, owned here and shared by the producer, the
//! consumer and the operator tools, so that the three cannot disagree.
//!
//! The producer validates before enqueueing; the consumer validates again with the
//! same code, because other producers, old versions and hand-made messages exist.
//!
//! # Layout
//! - [`order`]: what a customer may order ([`OrderRequest`] in, validated [`Order`] out).
//! - [`message`]: [`OrderPlaced`], the versioned JSON message that travels on the queue.
//! - [`dead_letter`]: [`Failure`], why a message is in the DLQ, as attributes on it.
//! - [`request_id`]: [`RequestId`], the id that follows an order from the HTTP
//!   request to its row, and the message attribute that carries it.
//! - `fixtures` (feature `fixtures`): valid orders for tests, written once.
//! - [`error`]: [`ContractError`], which always names the offending field.
//! - `json`: the JSON driver: parses a body and finds the path to the failing field.
//! - `object`: `Object<T>`, which reads a struct from a JSON object and nothing else.

pub mod dead_letter;
pub mod error;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod json;
pub mod message;
mod object;
pub mod order;
pub mod request_id;

pub use dead_letter::{Failure, FailureClass};
pub use error::ContractError;
pub use message::{OrderPlaced, SCHEMA_VERSION};
pub use order::{LineItem, Order, OrderRequest};
pub use request_id::{MAX_REQUEST_ID_LEN, REQUEST_ID_ATTRIBUTE, RequestId};
