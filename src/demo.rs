//! The whole stack in one process on embedded defaults (CONTRACT §1): the
//! server with its SQLite store, the embedded MQTT broker with its device gate,
//! one site gateway per APR, and the demo fleet of simulated sites publishing
//! through the broker with the firmware core's encoder.
//!
//! Startup order follows the data path backwards, so nothing published is
//! ever refused for lack of a consumer: store and API first, then the broker,
//! then the gateways (each waits for its subscription), then the devices.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use apr_gateway::{DeviceDirectory, EmbeddedBroker, Gateway, GatewayConfig, GatewayHandle};
use apr_server::auth::{self, NewUser, Role};
use apr_server::store::Registry;
use apr_server::AppState;
use apr_twin::fleet::{run_fleet, DeviceLogin as TwinLogin, FleetOptions, FleetProgress, SiteSpec};
use apr_twin::model::{DeviceRole, SiteProfile};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::credentials::{secret, Credentials, DeviceLogin, GatewayLogin, UserLogin};

/// The demo fleet (demonstration data; see the file's header).
pub const FLEET_CSV: &str = include_str!("../data/fleet.csv");

/// Which scenario of the site twin runs at which demo APR (demonstration data).
pub const SCENARIOS_CSV: &str = include_str!("../data/demo-scenarios.csv");

/// The scenario named for `apr` in [`SCENARIOS_CSV`], if any.
pub fn demo_scenario(apr: &str) -> Result<Option<apr_twin::Scenario>, DemoError> {
    for (i, line) in SCENARIOS_CSV.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "apr,scenario" {
            continue;
        }
        let Some((id, name)) = line.split_once(',') else {
            return Err(DemoError::Setup(format!(
                "data/demo-scenarios.csv line {}: expected apr,scenario",
                i + 1
            )));
        };
        if id == apr {
            return apr_twin::Scenario::builtin(name).map(Some).map_err(|e| {
                DemoError::Setup(format!("data/demo-scenarios.csv line {}: {e}", i + 1))
            });
        }
    }
    Ok(None)
}

/// The region of the demo's GORE reviewer.
pub const DEMO_REGION: &str = "biobio";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The server failed.
    #[error("server: {0}")]
    Server(#[from] apr_server::Error),
    /// A gateway or the broker failed.
    #[error("gateway: {0}")]
    Gateway(#[from] apr_gateway::Error),
    /// A file or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Something else about the setup.
    #[error("{0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
    let what = what.into();
    move |source| DemoError::Io { what, source }
}

/// `demo` options (CONTRACT §1).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Dashboards + API listen address (port 0: any free port).
    pub http: SocketAddr,
    /// Embedded broker listen address (port 0: any free port).
    pub mqtt: SocketAddr,
    /// Data dir; `None` for a fresh temp dir, removed on shutdown.
    pub data: Option<PathBuf>,
    /// Days of history to simulate and ingest before going live.
    pub history_days: u32,
    /// Where to write the demo logins as JSON.
    pub credentials_out: Option<PathBuf>,
    /// Live report interval of the simulated devices.
    pub report_interval: Duration,
    /// The series in VictoriaMetrics at this base URL (the registry, alerts
    /// and KPIs stay in the embedded store); `None`: the embedded store.
    pub series_url: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            mqtt: SocketAddr::from(([127, 0, 0, 1], 1883)),
            data: None,
            history_days: 30,
            credentials_out: None,
            report_interval: Duration::from_secs(60),
            series_url: None,
        }
    }
}

/// A running demo.
pub struct Demo {
    /// Where the API listens.
    pub http_addr: SocketAddr,
    /// Where devices connect.
    pub mqtt_addr: SocketAddr,
    /// Every login.
    pub credentials: Credentials,
    /// The data dir.
    pub data_dir: PathBuf,
    /// The fleet's progress (history acknowledged, packs, resends).
    pub progress: Arc<FleetProgress>,
    /// The server's state (store), for tests.
    pub state: AppState,
    temp_dir: bool,
    server: (
        oneshot::Sender<()>,
        JoinHandle<Result<(), apr_server::Error>>,
    ),
    broker: EmbeddedBroker,
    gateways: Vec<GatewayHandle>,
    fleet: (watch::Sender<bool>, JoinHandle<()>),
}

/// Device roles of every demo site and their report interval.
fn site_devices() -> [DeviceRole; 2] {
    DeviceRole::ALL
}

/// Starts the demo and returns once every part is up (the history backfill
/// goes on in the background; see [`Demo::progress`]).
pub async fn start(opts: DemoOptions) -> Result<Demo, DemoError> {
    let (data_dir, temp_dir) = match &opts.data {
        Some(d) => (d.clone(), false),
        None => (fresh_temp_dir()?, true),
    };
    std::fs::create_dir_all(&data_dir)
        .map_err(io_err(format!("creating data dir {}", data_dir.display())))?;

    // 1. Store, registry, logins.
    let mut config = apr_server::Config::default();
    config.store.path = data_dir.join("server.sqlite3");
    if let Some(url) = &opts.series_url {
        config.series.engine = apr_server::config::SeriesEngine::Victoriametrics;
        config.series.url = url.clone();
    }
    let state = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || apr_server::open(&config))
            .await
            .map_err(|e| DemoError::Setup(format!("store task: {e}")))??
    };
    let fleet = apr_server::fleet::parse(FLEET_CSV, "data/fleet.csv")
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let report_interval_s = u32::try_from(opts.report_interval.as_secs().max(1)).unwrap_or(60);
    let credentials = {
        let state = state.clone();
        let data_dir = data_dir.clone();
        tokio::task::spawn_blocking(move || {
            apr_server::fleet::import(state.registry(), &fleet)?;
            ensure_logins(state.registry(), &data_dir, report_interval_s)
        })
        .await
        .map_err(|e| DemoError::Setup(format!("setup task: {e}")))??
    };

    // 2. API.
    let listener = tokio::net::TcpListener::bind(opts.http)
        .await
        .map_err(io_err(format!("binding the HTTP address {}", opts.http)))?;
    let http_addr = listener
        .local_addr()
        .map_err(io_err("reading the HTTP address"))?;
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(apr_server::serve(listener, state.clone(), async move {
        let _ = server_stopped.await;
    }));

    // 3. Broker with the device directory from the registry.
    let devices = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || state.registry().devices(None))
            .await
            .map_err(|e| DemoError::Setup(format!("registry task: {e}")))??
    };
    let directory = Arc::new(DeviceDirectory::new(
        devices.iter().map(|d| d.to_gateway_device()).collect(),
    ));
    let broker = EmbeddedBroker::start(opts.mqtt, directory).await?;
    let mqtt_addr = broker.public_addr();

    // 4. One gateway per APR.
    let mut gateways = Vec::new();
    for gw in &credentials.gateways {
        let mut config = GatewayConfig {
            id: gw.gateway.clone(),
            aprs: vec![gw.apr.clone()],
            mqtt: broker.gateway_mqtt_config(&gw.gateway),
            ..GatewayConfig::default()
        };
        config.server.url = format!("http://{http_addr}");
        config.server.token = gw.token.clone();
        // Each gateway's durable spool lives in the data dir, as a site
        // gateway's would on its own disk.
        config.spool.dir = data_dir
            .join("gateways")
            .join(&gw.gateway)
            .to_string_lossy()
            .into_owned();
        gateways.push(Gateway::start_http(config).await?);
    }
    for g in &gateways {
        if !g.wait_ready(Duration::from_secs(20)).await {
            return Err(DemoError::Setup(
                "a gateway did not subscribe within 20 s".into(),
            ));
        }
    }

    // 5. The fleet.
    let aprs = state.registry().aprs()?;
    let refill = intervention_plan(opts.history_days);
    let mut sites: Vec<SiteSpec> = Vec::with_capacity(aprs.len());
    for a in &aprs {
        let mut scenario = demo_scenario(&a.id)?;
        if let (Some(plan), Some(s)) = (&refill, scenario.as_mut()) {
            if a.id == plan.apr {
                s.chlorination.refilled_after_days = Some(plan.refilled_after_days);
            }
        }
        sites.push(SiteSpec {
            scenario,
            profile: SiteProfile {
                apr: a.id.clone(),
                beneficiaries: u32::try_from(a.beneficiaries).unwrap_or(u32::MAX),
                capacity_l_s: a.capacity_l_s,
                storage_m3: a.storage_m3,
            },
            devices: site_devices()
                .iter()
                .filter_map(|role| {
                    let d = credentials
                        .devices
                        .iter()
                        .find(|d| d.apr == a.id && d.device == role.device_id())?;
                    Some(TwinLogin {
                        role: *role,
                        device: d.device.clone(),
                        username: d.mqtt_username.clone(),
                        password: d.mqtt_password.clone(),
                    })
                })
                .collect(),
        });
    }
    let progress = Arc::new(FleetProgress::default());
    let (stop_fleet, fleet_stopped) = watch::channel(false);
    let fleet_opts = FleetOptions {
        host: mqtt_addr.ip().to_string(),
        port: mqtt_addr.port(),
        history: Duration::from_secs(u64::from(opts.history_days) * 86_400),
        live_interval: opts.report_interval,
        ..FleetOptions::default()
    };
    let fleet = tokio::spawn(run_fleet(
        sites,
        fleet_opts,
        progress.clone(),
        fleet_stopped,
    ));
    if let Some(plan) = refill {
        tokio::spawn(record_intervention(
            state.clone(),
            progress.clone(),
            plan,
            opts.history_days,
        ));
    }

    if let Some(path) = &opts.credentials_out {
        credentials
            .save_contract(path)
            .map_err(io_err(format!("writing {}", path.display())))?;
    }
    info!(%http_addr, %mqtt_addr, data = %data_dir.display(), "demo running");
    Ok(Demo {
        http_addr,
        mqtt_addr,
        credentials,
        data_dir,
        progress,
        state,
        temp_dir,
        server: (stop_server, server),
        broker,
        gateways,
        fleet: (stop_fleet, fleet),
    })
}

/// The demo's recorded intervention: the operator's APR runs out of
/// hypochlorite early in the history window (scenario `chlorinator-empty`); the
/// programme refills it and installs a low-level alarm two weeks before now,
/// so the GORE view shows chlorine compliance before and after.
#[derive(Debug, Clone)]
pub struct InterventionPlan {
    /// The APR.
    pub apr: String,
    /// Days after the history start when dosing resumes.
    pub refilled_after_days: f64,
}

/// The APR whose chlorinator the demo's intervention repairs.
pub const INTERVENTION_APR: &str = "el-boldo";

/// The plan, when the history is long enough to show before and after.
pub fn intervention_plan(history_days: u32) -> Option<InterventionPlan> {
    (history_days >= 20).then(|| InterventionPlan {
        apr: INTERVENTION_APR.to_string(),
        refilled_after_days: f64::from(history_days) - 14.0,
    })
}

/// Once the history is acknowledged: records the intervention (started the
/// day before the refill, finished on its day) and computes the KPIs and
/// assessments of the history, so every view has them at once.
async fn record_intervention(
    state: AppState,
    progress: Arc<FleetProgress>,
    plan: InterventionPlan,
    history_days: u32,
) {
    use std::sync::atomic::Ordering;
    loop {
        let sites = progress.sites.load(Ordering::Relaxed);
        if sites > 0 && progress.sites_history_done.load(Ordering::Relaxed) >= sites {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let now = chrono::Utc::now();
    let refill = now - chrono::Duration::days(i64::from(history_days))
        + chrono::Duration::seconds((plan.refilled_after_days * 86_400.0) as i64);
    // Local (Chile) calendar days, at UTC−4 as the twin's winter offset.
    let finished = (refill - chrono::Duration::hours(4)).date_naive();
    let started = finished - chrono::Duration::days(1);
    let record = apr_server::store::InterventionRecord {
        id: 0,
        apr: plan.apr.clone(),
        component: "technology".into(),
        description: "Recarga del clorador y alarma de nivel bajo de hipoclorito \
                      (datos de demostración)"
            .into(),
        cost_clp: 1_850_000,
        funder: "GORE Biobío".into(),
        started: started.to_string(),
        finished: finished.to_string(),
    };
    let done = tokio::task::spawn_blocking(move || {
        let exists = state
            .analysis()
            .interventions(&record.apr)?
            .iter()
            .any(|i| i.description == record.description);
        if !exists {
            state.analysis().insert_intervention(record)?;
        }
        apr_server::api::refresh_analysis(&state)
    })
    .await;
    match done {
        Ok(Ok(())) => {
            info!(apr = %plan.apr, "demo intervention recorded; KPIs and assessments computed")
        }
        Ok(Err(e)) => warn!(error = %e, "demo intervention or KPI pass failed"),
        Err(e) => warn!(error = %e, "demo intervention task failed"),
    }
}

fn fresh_temp_dir() -> Result<PathBuf, DemoError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("apr-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Creates the demo's users, tokens, devices and gateways once per data dir,
/// and reuses them (from `demo-credentials.json`) when the store already has
/// them.
fn ensure_logins(
    registry: &dyn Registry,
    data_dir: &Path,
    report_interval_s: u32,
) -> Result<Credentials, DemoError> {
    let path = data_dir.join("demo-credentials.json");
    if let Ok(saved) = Credentials::load(&path) {
        let valid = saved
            .user("admin")
            .map(|u| auth::resolve_token(registry, &u.token))
            .transpose()?
            .flatten()
            .is_some();
        if valid {
            return Ok(saved);
        }
        warn!(path = %path.display(), "saved demo logins do not match the store; making new ones");
    }
    let aprs = registry.aprs()?;
    let operator_apr = aprs
        .iter()
        .find(|a| a.region == DEMO_REGION)
        .or(aprs.first())
        .map(|a| a.id.clone())
        .ok_or_else(|| DemoError::Setup("the fleet is empty".into()))?;
    let people = [
        ("operator", "operador", Some(vec![operator_apr]), None),
        ("engineer", "ingeniera", None, None),
        ("gore", "gore-biobio", None, Some(DEMO_REGION.to_string())),
        ("admin", "admin", None, None),
    ];
    let mut users = Vec::new();
    for (role, username, aprs, region) in people {
        let password = secret(16);
        let role_v = match role {
            "operator" => Role::Operator,
            "engineer" => Role::Engineer,
            "gore" => Role::Gore,
            _ => Role::Admin,
        };
        upsert_user(
            registry,
            &NewUser {
                username: username.into(),
                role: role_v,
                password: Some(password.clone()),
                aprs: aprs.clone().unwrap_or_default(),
                region: region.clone(),
            },
        )?;
        let token = auth::create_token(registry, username, Some("demo"))?;
        users.push(UserLogin {
            role: role.into(),
            username: username.into(),
            password,
            token,
            aprs,
            region,
        });
    }
    let mut devices = Vec::new();
    let mut gateways = Vec::new();
    for a in &aprs {
        for role in site_devices() {
            let device = role.device_id();
            let username = apr_server::device::mqtt_username(&a.id, device);
            let password = secret(24);
            apr_server::device::upsert_device(
                registry,
                &a.id,
                device,
                &username,
                &password,
                report_interval_s,
                apr_server::device::default_config(report_interval_s),
            )?;
            devices.push(DeviceLogin {
                apr: a.id.clone(),
                device: device.into(),
                mqtt_username: username,
                mqtt_password: password,
            });
        }
        let gateway = format!("gw-{}", a.id);
        upsert_user(
            registry,
            &NewUser {
                username: gateway.clone(),
                role: Role::Gateway,
                password: None,
                aprs: vec![a.id.clone()],
                region: None,
            },
        )?;
        let token = auth::create_token(registry, &gateway, Some("demo gateway"))?;
        gateways.push(GatewayLogin {
            gateway,
            apr: a.id.clone(),
            token,
        });
    }
    let creds = Credentials {
        users,
        devices,
        gateways,
    };
    creds
        .save(&path)
        .map_err(io_err(format!("writing {}", path.display())))?;
    Ok(creds)
}

/// Creates a user, or, when it exists (a data dir whose logins file was
/// lost), keeps it: new tokens are issued either way.
fn upsert_user(registry: &dyn Registry, user: &NewUser) -> Result<(), DemoError> {
    if registry.user(&user.username)?.is_none() {
        auth::create_user(registry, user)?;
    }
    Ok(())
}

impl Demo {
    /// What the demo prints: the URL and the logins, in Spanish then English.
    pub fn banner(&self) -> String {
        let mut s = format!(
            "\nDemo APR en marcha / APR demo running\n  \
             Panel y API / Dashboards and API: http://{}/\n  \
             Broker MQTT: {}\n  Datos / Data: {}\n\n  Accesos / Logins:\n",
            self.http_addr,
            self.mqtt_addr,
            self.data_dir.display()
        );
        for u in &self.credentials.users {
            let scope = match (&u.aprs, &u.region) {
                (Some(a), _) => format!(" APR {}", a.join(",")),
                (_, Some(r)) => format!(" región {r}"),
                _ => String::new(),
            };
            s.push_str(&format!(
                "    {:<9} usuario {:<12} clave {}  token {}{}\n",
                u.role, u.username, u.password, u.token, scope
            ));
        }
        if let Some(d) = self.credentials.devices.first() {
            s.push_str(&format!(
                "\n  Equipo de ejemplo / Example device: apr/{}/{}/up  usuario {}  clave {}\n",
                d.apr, d.device, d.mqtt_username, d.mqtt_password
            ));
        }
        s.push_str("\n  Ctrl-C para detener / to stop\n");
        s
    }

    /// Whether every site's history is at the server: acknowledged to the
    /// devices (which, with the gateways' durable spools, means on a
    /// gateway's disk) and forwarded since (every spool empty).
    pub fn history_stored(&self) -> bool {
        use std::sync::atomic::Ordering;
        let sites = self.progress.sites.load(Ordering::Relaxed);
        sites > 0
            && self.progress.sites_history_done.load(Ordering::Relaxed) >= sites
            && self.gateways.iter().all(|g| g.stats().spool.packs == 0)
    }

    /// Gateways' counters summed.
    pub fn gateway_stats(&self) -> Vec<apr_gateway::GatewayStats> {
        self.gateways.iter().map(GatewayHandle::stats).collect()
    }

    /// The broker's gate counters.
    pub fn gate_stats(&self) -> apr_gateway::GateStats {
        self.broker.stats()
    }

    /// Stops everything in order: devices, gateways (flushing to the server),
    /// broker, server; removes a temp data dir.
    pub async fn shutdown(self) -> Result<(), DemoError> {
        let _ = self.fleet.0.send(true);
        if tokio::time::timeout(Duration::from_secs(10), self.fleet.1)
            .await
            .is_err()
        {
            warn!("the fleet did not stop within 10 s");
        }
        for g in self.gateways {
            if let Err(e) = g.shutdown().await {
                warn!(error = %e, "gateway shutdown");
            }
        }
        self.broker.shutdown().await;
        let _ = self.server.0.send(());
        match self.server.1.await {
            Ok(r) => r?,
            Err(e) => return Err(DemoError::Setup(format!("server task: {e}"))),
        }
        if self.temp_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
        info!("demo stopped");
        Ok(())
    }
}
