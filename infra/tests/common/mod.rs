//! What the test binaries that run the real CLIs share: a directory of their
//! own, the real CLIs kept away from this machine's AWS settings, and a run
//! that is killed when it outlives its limit.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The repository's root.
pub(crate) const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A directory of the test's own, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `program` with `cli_bin` (the pinned `aws` and `sam`) first on PATH, none
/// of this machine's AWS profiles or credentials (a home of its own), the
/// static `credentials` instead, and every AWS call to `endpoint`: awscli
/// 1.46.3's botocore and SAM's boto3 read `AWS_ENDPOINT_URL` for every service
/// ("environment_global" in the CLI's --debug), except the v1 CLI's `sqs`
/// commands. In its own process group, so that a run killed past its limit
/// ends with its children.
pub(crate) fn sandboxed(
    program: &str,
    cli_bin: &str,
    home: &TempDir,
    credentials: (&str, &str),
    endpoint: &str,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let path = format!("{cli_bin}:{}", std::env::var("PATH").unwrap_or_default());
    let mut command = std::process::Command::new(program);
    command
        .env("PATH", path)
        .env("HOME", &home.0)
        .env("AWS_CONFIG_FILE", home.0.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.0.join("credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_ACCESS_KEY_ID", credentials.0)
        .env("AWS_SECRET_ACCESS_KEY", credentials.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SAM_CLI_TELEMETRY", "0")
        .env("AWS_ENDPOINT_URL", endpoint)
        // Byte-code written once into the virtualenv, not compiled at every start.
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .process_group(0);
    command
}

/// What a run printed and whether it succeeded.
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    /// Both streams.
    pub(crate) output: String,
    pub(crate) took: Duration,
}

/// Runs `command` to its end with `input` on its standard input, or kills its
/// process group after `limit` and fails the test with what `context` says
/// (the peer's log, say).
pub(crate) fn run_bounded(
    mut command: std::process::Command,
    input: &[u8],
    limit: Duration,
    context: impl FnOnce() -> String,
) -> Run {
    use std::io::Write;
    let started = Instant::now();
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the command starts");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(limit) {
        Ok(output) => output.expect("the command's output"),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("{command:?} ran past {limit:?}; {}", context());
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Run {
        ok: output.status.success(),
        output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)),
        stdout,
        took: started.elapsed(),
    }
}
