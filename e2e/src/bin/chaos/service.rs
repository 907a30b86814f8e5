//! The system's processes (the producer, local-esm), killed and started again
//! with the same command.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Settings local-esm also takes from its environment: a run sets them itself
/// or not at all, whatever the caller's shell exports.
pub(crate) const CONSUMER_ENV_OVERRIDES: [&str; 3] = [
    "RETRY_BASE_SECONDS",
    "RETRY_MULTIPLIER",
    "MAX_RECEIVE_COUNT",
];

/// A child process that can be killed and started again with the same command.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) log: String,
    pub(crate) child: Option<Child>,
}

impl Service {
    pub(crate) fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|err| panic!("open {}: {err}", self.log));
        let mut command = Command::new(&self.program);
        for name in CONSUMER_ENV_OVERRIDES {
            command.env_remove(name);
        }
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("start {} ({}): {err}", self.name, self.program));
        self.child = Some(child);
    }

    pub(crate) fn signal(&mut self, signal: &str) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
    }

    /// Waits up to `grace` for the process to exit; kills it after that.
    pub(crate) async fn wait_or_kill(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(grace, child.wait()).await.is_err()
        {
            let _ = child.kill().await;
        }
    }
}
