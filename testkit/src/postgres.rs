//! PostgreSQL for tests: a fresh database per test, or a private server to stop.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::{eventually, required_env, unique_name};

/// A database of its own on the shared server; it stays behind for post-mortems
/// and disappears with the server `scripts/test` throws away.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the server of `TEST_DATABASE_URL`.
    pub async fn create() -> Self {
        Self::create_on(&required_env("TEST_DATABASE_URL")).await
    }

    /// Creates a fresh, empty database on the server of `admin_url` (a superuser URL).
    pub async fn create_on(admin_url: &str) -> Self {
        let admin = connect(admin_url).await;
        let name = unique_name("test");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let (server, _) = admin_url.rsplit_once('/').expect("a URL with a path");
        let url = format!("{server}/{name}");
        Self { name, url }
    }

    pub async fn connect(&self) -> Client {
        connect(&self.url).await
    }

    /// This database's URL with another user (the servers trust local
    /// connections, so no password is needed): e.g. the consumer's writer role.
    pub fn url_as(&self, user: &str) -> String {
        let (scheme, rest) = self.url.split_once("://").expect("a URL with a scheme");
        let (_, host_and_path) = rest.split_once('@').expect("a URL with a user");
        format!("{scheme}://{user}@{host_and_path}")
    }
}

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to {url}: {err}"));
    tokio::spawn(connection);
    client
}

/// A PostgreSQL cluster of the test's own, for tests that stop the database.
/// Stopped (immediate mode) and deleted on drop.
#[derive(Debug)]
pub struct PostgresServer {
    dir: PathBuf,
    port: u16,
    tls: bool,
}

impl PostgresServer {
    /// Initialises a cluster in a temporary folder and starts it on a free port.
    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// Like [`start`](Self::start), but `role` must log in with its password
    /// (SCRAM-SHA-256), as on RDS; everyone else is trusted as usual.
    pub async fn start_with_password_for(role: &str) -> Self {
        Self::start_with(None, Some(role)).await
    }

    /// Like [`start`](Self::start), serving TLS (as well as plain text) with this
    /// PEM certificate chain and key.
    pub async fn start_with_tls(certificate_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((certificate_pem, key_pem)), None).await
    }

    async fn start_with(tls: Option<(&str, &str)>, password_role: Option<&str>) -> Self {
        let dir = std::env::temp_dir().join(unique_name("pg"));
        std::fs::create_dir_all(&dir).expect("create the cluster folder");
        // initdb and postgres refuse to run as root: the cluster belongs to `postgres`.
        chown(std::slice::from_ref(&dir));
        let server = Self {
            port: free_port(),
            dir,
            tls: tls.is_some(),
        };
        server.pg(
            &["initdb", "-D", &server.data()],
            "-U postgres -A trust --no-sync",
        );
        if let Some(role) = password_role {
            // The first matching line wins: this one, before initdb's trust lines.
            let hba = PathBuf::from(server.data()).join("pg_hba.conf");
            let trusting = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            std::fs::write(
                &hba,
                format!("host all {role} 127.0.0.1/32 scram-sha-256\n{trusting}"),
            )
            .expect("write pg_hba.conf");
        }
        if let Some((certificate, key)) = tls {
            let data = PathBuf::from(server.data());
            std::fs::write(data.join("server.crt"), certificate)
                .expect("write the server certificate");
            std::fs::write(data.join("server.key"), key).expect("write the server key");
            // PostgreSQL refuses a key that others may read.
            std::fs::set_permissions(
                data.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("restrict the key");
            chown(&[data.join("server.crt"), data.join("server.key")]);
        }
        server.start_again().await;
        server
    }

    /// A superuser URL for the `postgres` database of this server.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server as an outage would: immediately, without a checkpoint.
    pub fn stop(&self) {
        self.pg(&["pg_ctl", "-D", &self.data()], "-m immediate -w stop");
    }

    /// Starts the (stopped) server again on the same port and waits until it accepts connections.
    pub async fn start_again(&self) {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        if self.tls {
            options.push_str(" -c ssl=on");
        }
        let log = self.dir.join("server.log").display().to_string();
        let args = ["pg_ctl", "-D", &self.data(), "-l", &log, "-o", &options];
        self.pg(&args, "-w start");
        let url = self.admin_url();
        let accepting = "the private PostgreSQL to accept connections";
        eventually(accepting, Duration::from_secs(30), || async {
            let connected = tokio_postgres::connect(&url, NoTls).await;
            connected.map(drop).map_err(|err| err.to_string())
        })
        .await;
    }

    /// Freezes every process of the cluster with SIGSTOP, as a stalled disk or
    /// a failover would: connections stay open and nothing is answered until
    /// [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        assert!(self.signal_all("-STOP"), "the postmaster did not stop");
    }

    /// Resumes a frozen cluster with SIGCONT.
    pub fn thaw(&self) {
        assert!(self.signal_all("-CONT"), "the postmaster did not resume");
    }

    /// Sends `signal` to the postmaster and every process it forked: the
    /// postmaster first when stopping (so it forks nothing new meanwhile), last
    /// when resuming. Whether the postmaster took it: a child may have exited.
    fn signal_all(&self, signal: &str) -> bool {
        let Some(postmaster) = self.postmaster() else {
            return false;
        };
        let stopping = signal == "-STOP";
        if stopping && !send(signal, &postmaster) {
            return false;
        }
        // Its children; none left is no failure.
        let _ = Command::new("pkill")
            .args([signal, "-P", &postmaster])
            .output();
        stopping || send(signal, &postmaster)
    }

    fn postmaster(&self) -> Option<String> {
        let pid_file =
            std::fs::read_to_string(Path::new(&self.data()).join("postmaster.pid")).ok()?;
        Some(pid_file.lines().next()?.trim().to_owned())
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs a PostgreSQL tool from `PG_BINDIR` with `args` and then the words
    /// of `flags`, as `postgres` when we are root, and panics if it fails.
    fn pg(&self, args: &[&str], flags: &str) {
        let program = PathBuf::from(required_env("PG_BINDIR")).join(args[0]);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command.args(&args[1..]).args(flags.split_whitespace());
        let failure = match command.current_dir(&self.dir).output() {
            Ok(output) if output.status.success() => return,
            Ok(output) => {
                let said = String::from_utf8_lossy(&output.stdout)
                    + String::from_utf8_lossy(&output.stderr);
                format!("{command:?} failed: {said}")
            }
            Err(err) => format!("run {command:?}: {err}"),
        };
        // A second panic while unwinding (a drop's stop) would abort the whole test binary.
        if std::thread::panicking() {
            eprintln!("{failure}");
        } else {
            panic!("{failure}");
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // A test that failed while the cluster was frozen must not leave it
        // frozen: a stopped postmaster ignores pg_ctl's SIGQUIT.
        if self.signal_all("-CONT") {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends `signal` to `pid` with kill(1); false when the process is gone.
fn send(signal: &str, pid: &str) -> bool {
    Command::new("kill")
        .arg(signal)
        .arg(pid)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Gives `paths` to `postgres` when we are root.
fn chown(paths: &[PathBuf]) {
    if running_as_root() {
        let chown = Command::new("chown").arg("postgres:").args(paths).output();
        assert!(
            chown.is_ok_and(|out| out.status.success()),
            "chown {paths:?} failed"
        );
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port the kernel just handed out; free unless someone races us for it.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
