//! The infrastructure's own checks: a reader for `infra/template.yaml` (or any
//! CloudFormation/SAM template) as data, used by the local stack (`local-esm`) to
//! take its queue and event-source settings from the template, and by this
//! crate's tests, which check what the template means for this system without AWS.
//!
//! cfn-lint, checkov and `sam validate` (`scripts/check-infra`) check the
//! template's form; the tests here check its meaning.
//!
//! # Layout
//! - [`template`]: [`Document`], the template as a YAML tree; numbers resolved
//!   through parameter defaults ([`Document::number`]) or bounds
//!   ([`Document::largest`]); [`intrinsic`] and [`reference`] for short-form tags.
//! - `tests/template/`: the template's checks, one file per subject (queues,
//!   retry bounds, IAM, quotas, database, network, reachability model,
//!   consumer, breaker, producer, operations) over a shared `helpers` module.
//! - `tests/deploy.rs`: `scripts/deploy --verify` and `--migrate` with the real
//!   pinned AWS CLI and curl against an AWS-shaped endpoint (`tests/deploy/aws_stub.rs`).
//! - `tests/help.rs`: every script's `--help` prints its whole header comment.

pub mod template;

pub use template::{Document, TemplateError, Value, as_u64, intrinsic, reference};
