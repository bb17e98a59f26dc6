//! `apr`: the whole stack in one process (`apr demo`). Thin: see `apr::demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "apr", about = "APR monitoring: sensor to dashboard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole stack with the 56-APR demo fleet (CONTRACT §1).
    Demo {
        /// Dashboards + API listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// Embedded MQTT broker listen address.
        #[arg(long, default_value = "127.0.0.1:1883")]
        mqtt: std::net::SocketAddr,
        /// Where the store and gateway queues live (reused when it exists).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Days of history to simulate and ingest before going live.
        #[arg(long, default_value_t = 30)]
        history_days: u32,
        /// Write the demo logins as JSON to this file.
        #[arg(long)]
        credentials_out: Option<PathBuf>,
        /// Live report interval of the simulated devices, seconds.
        #[arg(long, default_value_t = 60)]
        report_interval: u64,
        /// Keep the series in VictoriaMetrics at this base URL (e.g.
        /// http://127.0.0.1:8428) instead of the embedded store.
        #[arg(long)]
        series_url: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rumqttd logs routine client disconnects as errors: silenced
                // by default (RUST_LOG overrides everything here).
                .unwrap_or_else(|_| {
                    "warn,apr=info,apr_server=info,apr_server::api=warn,rumqttd=off".into()
                }),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Demo {
            http,
            mqtt,
            data,
            history_days,
            credentials_out,
            report_interval,
            series_url,
        } => {
            let opts = apr::demo::DemoOptions {
                http,
                mqtt,
                data,
                history_days,
                credentials_out,
                report_interval: std::time::Duration::from_secs(report_interval.max(1)),
                series_url,
            };
            let demo = apr::demo::start(opts).await?;
            println!("{}", demo.banner());
            tokio::signal::ctrl_c().await?;
            println!("Deteniendo… / Stopping…");
            demo.shutdown().await?;
        }
    }
    Ok(())
}
