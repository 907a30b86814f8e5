//! The `status` binary Lambda runs behind the load balancer's `GET /orders*` rule.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    status::run().await
}
