//! `apr-gateway`: the site gateway as a process.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Site gateway: device MQTT in, validated batches out to the server.
#[derive(Debug, Parser)]
#[command(name = "apr-gateway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// TOML configuration file (defaults and APR_GATEWAY__* variables otherwise).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print a commented configuration template with the defaults.
    Configfile,
    /// Tell whether data is flowing and how far behind it is (reads the
    /// running gateway's /metrics).
    Status {
        /// The gateway's /metrics address (default: `[metrics] listen` of the configuration).
        #[arg(long)]
        metrics: Option<String>,
        /// TOML configuration file, for `[metrics] listen`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Language of the message: es (default) or en.
        #[arg(long, default_value = "es")]
        lang: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Configfile => {
            print!("{}", apr_gateway::configfile());
            Ok(())
        }
        Command::Status {
            metrics,
            config,
            lang,
        } => {
            use apr_gateway::status::{fetch_metrics, message, Lang, Status};
            let lang = if lang.eq_ignore_ascii_case("en") {
                Lang::En
            } else {
                Lang::Es
            };
            let addr = match metrics {
                Some(a) => a,
                None => {
                    apr_gateway::GatewayConfig::load(config.as_deref())
                        .context("loading the configuration")?
                        .metrics
                        .listen
                }
            };
            let text = fetch_metrics(&addr).await.map_err(|e| {
                anyhow::anyhow!(if lang == Lang::Es {
                    format!("El gateway no responde en {addr} ({e}): ¿está en marcha?")
                } else {
                    format!("The gateway does not answer on {addr} ({e}): is it running?")
                })
            })?;
            let status =
                Status::from_metrics(&text).context("the page is not the gateway's /metrics")?;
            println!("{}", message(&status, lang));
            Ok(())
        }
        Command::Run { config } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            let config = apr_gateway::GatewayConfig::load(config.as_deref())
                .context("loading the configuration")?;
            apr_gateway::run(config, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("gateway failed")
        }
    }
}
