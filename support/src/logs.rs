//! Logs for the command-line tools: to stderr (stdout is for what they print),
//! `RUST_LOG` or the tool's default, JSON lines when `LOG_FORMAT=json`.

use std::io::IsTerminal;

/// Installs the global subscriber; `default` is an `EnvFilter` directive.
pub fn init_tool_logs(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
}
