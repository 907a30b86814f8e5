//! The claims `infra/template.yaml` makes, checked on the parsed template without
//! AWS, one file per subject. cfn-lint, checkov and `sam validate`
//! (`scripts/check-infra`) check the template's form; these check what it means
//! for this system. Limits come from the template's own parameters (and from
//! AWS's published figures, cited where they are used), not from copies of them.

mod breaker;
mod consumer;
mod database;
mod helpers;
mod iam;
mod network;
mod observability;
mod operations;
mod outage_budget;
mod producer;
mod provision;
mod queues;
mod quotas;
mod reachability;
mod release;
mod skew;
mod status;
