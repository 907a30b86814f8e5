//! The order message contract, shared by the producer, the consumer and the
//! operator tools: the producer validates before enqueueing, the consumer again
//! with the same code (other producers, old versions and hand-made messages exist).
//!
//! # Layout
//! - [`order`]: [`OrderRequest`] in, validated [`Order`] out; [`error`]:
//!   [`ContractError`], naming the field; `json` and `object` read the JSON.
//! - [`message`]: [`OrderPlaced`], the versioned message on the queue.
//! - [`dead_letter`]: [`Failure`], why a message is in the DLQ, as attributes on it.
//! - [`request_id`]: [`RequestId`], which follows an order from request to row.
//! - `fixtures` (feature `fixtures`): valid orders for tests.

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
