//! `apr-server`: the server's command line, a thin layer over the library.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use apr_server::audit::{self, AuditEntry, Via};
use apr_server::auth::{self, NewUser, Role};
use apr_server::{config, device, fleet, Config};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "apr-server",
    version,
    about = "APR server: ingest, store and serve readings"
)]
struct Cli {
    /// Configuration file (TOML); APR_SERVER__SECTION__KEY variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve,
    /// Print a commented configuration file with the defaults.
    Configfile,
    /// Import (or update) the fleet registry from a CSV file.
    ImportFleet {
        /// The fleet file.
        file: PathBuf,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Copy the store while the server runs, then check the copy.
    Backup {
        /// Where to write the backup.
        #[arg(long)]
        out: PathBuf,
    },
    /// Check a store or backup file for consistency.
    Check {
        /// The file (default: the configured store).
        file: Option<PathBuf>,
    },
    /// Replace the configured store with a backup (stop the server first).
    Restore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// Replace an existing store.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user. The password is read from APR_PASSWORD or standard input
    /// (gateways have none).
    Add {
        #[arg(long)]
        username: String,
        /// operator, engineer, gore, admin or gateway.
        #[arg(long)]
        role: String,
        /// An APR of an operator or gateway (repeat for several).
        #[arg(long = "apr")]
        aprs: Vec<String>,
        /// The region of a gore user.
        #[arg(long)]
        region: Option<String>,
    },
    /// Set a user's password (read from APR_PASSWORD or standard input),
    /// checked against the password policy.
    Password {
        #[arg(long)]
        username: String,
    },
    /// Disable a user: clear its password and revoke its tokens.
    Disable {
        #[arg(long)]
        username: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a user and print it (it is shown only once).
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// List tokens (id, user, label, created, revoked), never the tokens.
    List {
        #[arg(long)]
        username: Option<String>,
    },
    /// Revoke a token by its id (as `token list` shows it); a request with
    /// it gets 401 from then on.
    Revoke {
        /// The token's id: the first 12 hex characters of its SHA-256.
        id: String,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Add a device (or re-key it) and print its new MQTT credentials.
    Add {
        #[arg(long)]
        apr: String,
        #[arg(long)]
        device: String,
        /// Reporting interval, seconds.
        #[arg(long, default_value_t = device::DEFAULT_REPORT_INTERVAL_S)]
        interval: u32,
    },
}

/// Records an audit entry of a command-line action.
fn cli_audit(
    registry: &dyn apr_server::store::Registry,
    action: &str,
    apr: Option<&str>,
    target: &str,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    let entry = AuditEntry::now(
        &audit::cli_actor(),
        Via::Cli,
        action,
        apr,
        target,
        before,
        after,
    );
    audit::record(registry, entry)?;
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("APR_PASSWORD") {
        return Ok(p);
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading the password from standard input")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Command::Configfile = cli.command {
        print!("{}", config::configfile());
        return Ok(());
    }
    let mut config = Config::load(cli.config.as_deref())?;
    // Served over HTTPS, the session cookie is always Secure.
    if apr_tls::configured(&config.http.tls_cert).is_some() {
        config.ui.secure_cookies = true;
    }
    // These work on the store's file without opening it as a server would.
    match &cli.command {
        Command::Backup { out } => {
            let r = apr_server::backup::backup(&config.store.path, out)?;
            println!(
                "backup {}: {} bytes, {} readings, {} series, {} APRs, schema v{}, consistent ({:.1} s)",
                r.path.display(),
                r.bytes,
                r.consistency.readings,
                r.consistency.series,
                r.consistency.aprs,
                r.consistency.schema_version,
                r.seconds
            );
            return Ok(());
        }
        Command::Check { file } => {
            let path = file.clone().unwrap_or_else(|| config.store.path.clone());
            let c = apr_server::backup::check(&path)?;
            println!(
                "{}: consistent: {} readings, {} series, {} APRs, schema v{}",
                path.display(),
                c.readings,
                c.series,
                c.aprs,
                c.schema_version
            );
            return Ok(());
        }
        Command::Restore { from, force } => {
            let c = apr_server::backup::restore(from, &config.store.path, *force)?;
            println!(
                "restored {} into {}: {} readings",
                from.display(),
                config.store.path.display(),
                c.readings
            );
            return Ok(());
        }
        _ => {}
    }
    let state = apr_server::open(&config)
        .with_context(|| format!("opening the store {}", config.store.path.display()))?;
    let registry = state.registry();
    match cli.command {
        Command::Configfile
        | Command::Backup { .. }
        | Command::Check { .. }
        | Command::Restore { .. } => {}
        Command::Serve => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let listener = apr_server::listener::HttpListener::bind(&config.http).await?;
                apr_server::listener::serve(listener, state.clone(), shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
        }
        Command::ImportFleet { file } => {
            let r = fleet::import_file(registry, &file)?;
            let after = serde_json::json!({
                "regions": r.regions, "aprs": r.aprs, "changed": r.changed
            });
            let target = file.display().to_string();
            cli_audit(registry, "fleet.import", None, &target, None, Some(after))?;
            println!(
                "{}: {} regions, {} APRs, {} rows changed",
                file.display(),
                r.regions,
                r.aprs,
                r.changed
            );
        }
        Command::User {
            command:
                UserCommand::Add {
                    username,
                    role,
                    aprs,
                    region,
                },
        } => {
            let role: Role = role.parse()?;
            auth::check_username(&username)?;
            auth::check_scope(role, &aprs, region.as_deref())?;
            let password = match role {
                Role::Gateway => None,
                _ => Some(read_password()?),
            };
            if let Some(p) = &password {
                auth::check_password_for(&username, p)?;
            }
            auth::create_user(
                registry,
                &NewUser {
                    username: username.clone(),
                    role,
                    password,
                    aprs,
                    region,
                },
            )?;
            let after = registry.user(&username)?.map(|u| audit::user_view(&u));
            cli_audit(registry, "user.create", None, &username, None, after)?;
            println!("user '{username}' ({role}) added");
        }
        Command::User {
            command: UserCommand::Password { username },
        } => {
            let before = registry.user(&username)?.map(|u| audit::user_view(&u));
            auth::change_password(registry, &username, &read_password()?)?;
            let after = registry.user(&username)?.map(|u| audit::user_view(&u));
            cli_audit(registry, "user.password", None, &username, before, after)?;
            println!("password of '{username}' changed");
        }
        Command::User {
            command: UserCommand::Disable { username },
        } => {
            let before = auth::disable_user(registry, &username)?;
            let after = registry.user(&username)?.map(|u| audit::user_view(&u));
            let before = Some(audit::user_view(&before));
            cli_audit(registry, "user.disable", None, &username, before, after)?;
            println!("user '{username}' disabled: password cleared, tokens revoked");
        }
        Command::Token {
            command: TokenCommand::Create { username, label },
        } => {
            let token = auth::create_token(registry, &username, label.as_deref())?;
            let id = auth::token_id(&token);
            let after = registry.token(&id)?.map(|t| audit::token_view(&t));
            cli_audit(registry, "token.create", None, &id, None, after)?;
            println!("{token}");
        }
        Command::Token {
            command: TokenCommand::List { username },
        } => {
            let time = apr_server::alerting::rfc3339_ms;
            for t in registry.tokens(username.as_deref())? {
                let state = t
                    .revoked_ms
                    .map_or_else(|| "live".to_owned(), |r| format!("revoked {}", time(r)));
                println!(
                    "{}\t{}\t{}\t{}\t{state}",
                    t.id,
                    t.username,
                    t.label.as_deref().unwrap_or("-"),
                    time(t.created_ms),
                );
            }
        }
        Command::Token {
            command: TokenCommand::Revoke { id },
        } => {
            let before = registry.revoke_token(&id, chrono::Utc::now().timestamp_millis())?;
            let after = registry.token(&id)?.map(|t| audit::token_view(&t));
            let (target, user) = (before.id.clone(), before.username.clone());
            let before = Some(audit::token_view(&before));
            cli_audit(registry, "token.revoke", None, &target, before, after)?;
            println!("token {target} of '{user}' revoked");
        }
        Command::Device {
            command:
                DeviceCommand::Add {
                    apr,
                    device,
                    interval,
                },
        } => {
            let before = device::audit_view(registry, &apr, &device)?;
            let c = device::add_device(registry, &apr, &device, interval)?;
            let after = device::audit_view(registry, &apr, &device)?;
            let target = format!("{apr}/{device}");
            cli_audit(
                registry,
                "device.create",
                Some(&apr),
                &target,
                before,
                after,
            )?;
            println!(
                "mqtt_username={}\nmqtt_password={}",
                c.mqtt_username, c.mqtt_password
            );
        }
    }
    Ok(())
}
