//! The order message contract, owned here and shared by the producer, the
//! consumer and the operator tools, so that the three cannot disagree.
//!
//! # Layout
//! - [`order`]: what a customer may order ([`OrderRequest`] in, validated [`Order`] out).
//! - [`message`]: [`OrderPlaced`], the versioned JSON message that travels on the queue.
//! - [`error`]: [`ContractError`], which always names the offending field.
//!
//! The producer validates before enqueueing; the consumer validates again with the
//! same code, because other producers, old versions and hand-made messages exist.

pub mod error;
pub mod message;
pub mod order;

pub use error::ContractError;
pub use message::{OrderPlaced, SCHEMA_VERSION};
pub use order::{LineItem, Order, OrderRequest};
