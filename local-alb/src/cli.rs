//! `local-alb serve` and `local-alb sign-in CUSTOMER`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use infra::Document;

use crate::rules::Listener;
use crate::{Keys, LOCAL_SIGNER, Target};

#[derive(Debug, Parser)]
#[command(
    name = "local-alb",
    about = "The template's load balancer, locally: its listener rules, sign-in and signed claims."
)]
pub struct Cli {
    /// The SAM template whose HTTPS listener is played.
    #[arg(
        long,
        env = "LOCAL_ALB_TEMPLATE",
        default_value = "infra/template.yaml",
        global = true
    )]
    template: PathBuf,
    /// The signing key (PKCS#8); made when missing. Keep it, and sessions survive a restart.
    #[arg(
        long,
        env = "LOCAL_ALB_KEY",
        default_value = ".dev/local-alb/signing-key.p8",
        global = true
    )]
    key: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the load balancer.
    Serve {
        /// Where customers connect.
        #[arg(long, env = "LOCAL_ALB_ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The producer's URL (the ProducerTargetGroup).
        #[arg(long, env = "LOCAL_ALB_PRODUCER_URL")]
        producer_url: String,
        /// The database the status function reads (its Lambda target group's),
        /// e.g. postgres://orders_admin@127.0.0.1:54329/orders.
        #[arg(long, env = "LOCAL_ALB_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Prints a cookie header value (`name=value`) signed in as CUSTOMER.
    SignIn { customer: String },
    /// Prints the producer's sign-in settings for a local-alb at ALB_URL, one
    /// `NAME=value` a line: the signer, the key endpoint, the sign-out URL.
    ProducerEnv { alb_url: String },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let template = self.template.display().to_string();
        let document = Document::from_file(&template)?;
        let listener = Listener::from_document(&document)
            .with_context(|| format!("reading the listener rules of {template}"))?;
        let keys = Keys::load_or_create(&self.key, LOCAL_SIGNER)?;
        match self.command {
            Command::SignIn { customer } => {
                if order_contract::order::check_customer_id(&customer).is_err() {
                    bail!(
                        "{customer:?} is not a customer id: 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'"
                    );
                }
                let cookie = crate::session_cookie(&keys, &listener, &customer)
                    .context("the template's listener has no authenticate action")?;
                println!("{cookie}");
                Ok(())
            }
            Command::ProducerEnv { alb_url } => {
                let alb_url = alb_url.trim_end_matches('/');
                println!("ALB_SIGNER_ARN={LOCAL_SIGNER}");
                println!("ALB_KEY_ENDPOINT={alb_url}{}", crate::KEYS_PATH);
                println!("SIGN_OUT_URL={}", crate::LOGOUT_PATH);
                Ok(())
            }
            Command::Serve {
                listen,
                producer_url,
                database_url,
            } => {
                let mut targets = HashMap::from([(
                    "ProducerTargetGroup".to_owned(),
                    Target::Http(producer_url.clone()),
                )]);
                if let Some(group) = crate::rules::lambda_target_groups(&document).first() {
                    let url = database_url.as_deref().with_context(|| {
                        format!("{template} forwards to the Lambda target group {}, the status function: give it its database with --database-url (LOCAL_ALB_DATABASE_URL)", group.0)
                    })?;
                    let database =
                        consumer_lambda::DatabaseConfig::from_url(url).context("--database-url")?;
                    targets.extend(
                        crate::lambda_targets(&document, database)
                            .await
                            .context("the status function's database")?,
                    );
                }
                let kid = keys.kid.clone();
                let router = crate::router(listener, targets, keys)?;
                let tcp = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| {
                        format!("listening on {listen}: is another process using it?")
                    })?;
                tracing::info!(%listen, %producer_url, %kid, signer = LOCAL_SIGNER, "local-alb serving");
                let stop = support::shutdown_signal();
                crate::serve(tcp, router, async move {
                    stop.await;
                })
                .await
                .context("serving")
            }
        }
    }
}
