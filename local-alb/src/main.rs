use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::init_tool_logs("info");
    local_alb::cli::Cli::parse().run().await
}
