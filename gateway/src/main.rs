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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Configfile => {
            print!("{}", apr_gateway::configfile());
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
