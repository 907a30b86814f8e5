//! The system's processes (the producer, local-esm), killed and started again
//! with the same command.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::Args;

/// A child process that can be stopped and started again with the same command.
pub(crate) struct Service {
    name: &'static str,
    program: String,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    log: String,
    child: Option<Child>,
}

impl Service {
    /// Starts `--bin-dir`'s `name`, its output appended to `<name>.log` in `--log-dir`.
    pub(crate) fn start(
        cli: &Args,
        name: &'static str,
        args: Vec<String>,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        let mut service = Self {
            name,
            program: format!("{}/{name}", cli.bin_dir),
            args,
            env,
            log: format!("{}/{name}.log", cli.log_dir),
            child: None,
        };
        service.spawn();
        service
    }

    /// Starts the process, again after [`Service::stop`].
    pub(crate) fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|err| panic!("open {}: {err}", self.log));
        let child = Command::new(&self.program)
            // Settings local-esm also takes from its environment: a run sets
            // them itself or not at all, whatever the caller's shell exports.
            .env_remove("RETRY_BASE_SECONDS")
            .env_remove("RETRY_MULTIPLIER")
            .env_remove("MAX_RECEIVE_COUNT")
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

    /// Sends `signal` (`-TERM`, `-KILL`) and waits up to `grace` for the
    /// process to exit; kills it after that.
    pub(crate) async fn stop(&mut self, signal: &str, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
