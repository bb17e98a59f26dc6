//! View models: what each page needs, as plain data. The server fills them
//! from its store, auth and KPI engine and hands them to the renderers in
//! [`crate::pages`]; nothing here knows about HTTP or the store.
//!
//! Conventions:
//! - times shown to people are `DateTime<FixedOffset>` already in local time
//!   (America/Santiago, converted by the server); chart points are
//!   `(unix seconds, value)` with the chart's UTC offset beside them;
//! - URLs (form actions, links) come from the server, except the few fixed
//!   paths in [`crate::paths`];
//! - codes that come from data (alert kinds, reason codes, KPI names) are
//!   strings, shown through the catalogue by code with the raw code (or the
//!   server's message) as fallback.

use chrono::{DateTime, FixedOffset};

use crate::i18n::Lang;

/// Local time as shown: the server converts from UTC to America/Santiago.
pub type LocalTime = DateTime<FixedOffset>;

/// A role, as in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Runs one or a few APRs.
    Operator,
    /// Programme engineer: every APR.
    Engineer,
    /// Regional government reviewer: the APRs of a region.
    Gore,
    /// Administers everything.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Operator, Role::Engineer, Role::Gore, Role::Admin];

    /// The role's name in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Engineer => "engineer",
            Role::Gore => "gore",
            Role::Admin => "admin",
        }
    }

    /// Its message id.
    pub const fn message_id(self) -> &'static str {
        match self {
            Role::Operator => "role-operator",
            Role::Engineer => "role-engineer",
            Role::Gore => "role-gore",
            Role::Admin => "role-admin",
        }
    }
}

/// The signed-in user, for the header.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionUser {
    /// Username.
    pub username: String,
    /// Role.
    pub role: Role,
}

/// What every page's frame needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The response's language.
    pub lang: Lang,
    /// The signed-in user; `None` on the login and some error pages.
    pub user: Option<SessionUser>,
    /// The session's (or, before login, the pre-session cookie's) CSRF
    /// token, put in a hidden `csrf_token` field of every POST form.
    pub csrf_token: String,
    /// The path (and query) of this page, where the language switch returns.
    pub current_path: String,
    /// Where the stylesheet is served as a cached asset
    /// ([`crate::STYLESHEET`]); `None` inlines it in a `<style>`.
    pub stylesheet_href: Option<String>,
    /// A CSP nonce for the inline script and style, if the server sends a
    /// `Content-Security-Policy` with nonces.
    pub csp_nonce: Option<String>,
}

impl Layout {
    /// A layout with the stylesheet inlined and no nonce.
    pub fn new(
        lang: Lang,
        user: Option<SessionUser>,
        csrf_token: &str,
        current_path: &str,
    ) -> Layout {
        Layout {
            lang,
            user,
            csrf_token: csrf_token.to_string(),
            current_path: current_path.to_string(),
            stylesheet_href: None,
            csp_nonce: None,
        }
    }
}

/// Why a login attempt is shown again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong username or password (never says which).
    BadCredentials,
    /// The session ended; sign in again.
    SessionExpired,
    /// Too many attempts; wait.
    TooManyAttempts,
}

impl LoginError {
    /// Every login error.
    pub const ALL: [LoginError; 3] = [
        LoginError::BadCredentials,
        LoginError::SessionExpired,
        LoginError::TooManyAttempts,
    ];

    /// Its message id.
    pub const fn message_id(self) -> &'static str {
        match self {
            LoginError::BadCredentials => "login-error-credentials",
            LoginError::SessionExpired => "login-error-expired",
            LoginError::TooManyAttempts => "login-error-throttled",
        }
    }
}

/// The login page.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginPage {
    /// Where the form posts (`paths::LOGIN`).
    pub action: String,
    /// The username to fill in again after a failed attempt.
    pub username: String,
    /// Where to go after signing in (a local path), sent back as a hidden field.
    pub next: Option<String>,
    /// Why the form is shown again.
    pub error: Option<LoginError>,
}

/// A measured quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Free residual chlorine, mg/L.
    Chlorine,
    /// Turbidity, NTU.
    Turbidity,
    /// Storage tank level, %.
    TankLevel,
    /// Production flow, L/s.
    Flow,
    /// Network pressure, m.c.a.
    Pressure,
    /// pH.
    Ph,
    /// Conductivity, µS/cm.
    Conductivity,
    /// Totaliser volume, m³.
    Volume,
    /// Supply voltage, V.
    Battery,
    /// Radio signal, dBm.
    Rssi,
}

impl Metric {
    /// Every metric (CONTRACT §2, less the boolean `pump`).
    pub const ALL: [Metric; 10] = [
        Metric::Chlorine,
        Metric::Turbidity,
        Metric::TankLevel,
        Metric::Flow,
        Metric::Pressure,
        Metric::Ph,
        Metric::Conductivity,
        Metric::Volume,
        Metric::Battery,
        Metric::Rssi,
    ];

    /// The SenML name (`n`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::Chlorine => "chlorine",
            Metric::Turbidity => "turbidity",
            Metric::TankLevel => "tank_level",
            Metric::Flow => "flow",
            Metric::Pressure => "pressure",
            Metric::Ph => "ph",
            Metric::Conductivity => "conductivity",
            Metric::Volume => "volume",
            Metric::Battery => "battery",
            Metric::Rssi => "rssi",
        }
    }

    /// Parses a SenML name.
    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The unit as people read it.
    pub const fn unit(self) -> &'static str {
        match self {
            Metric::Chlorine => "mg/L",
            Metric::Turbidity => "NTU",
            Metric::TankLevel => "%",
            Metric::Flow => "L/s",
            Metric::Pressure => "m.c.a.",
            Metric::Ph => "",
            Metric::Conductivity => "µS/cm",
            Metric::Volume => "m³",
            Metric::Battery => "V",
            Metric::Rssi => "dBm",
        }
    }

    /// Decimals worth showing.
    pub const fn decimals(self) -> usize {
        match self {
            Metric::Chlorine => 2,
            Metric::Turbidity | Metric::Flow | Metric::Pressure | Metric::Ph | Metric::Battery => 1,
            Metric::TankLevel | Metric::Conductivity | Metric::Volume | Metric::Rssi => 0,
        }
    }

    /// Its message id.
    pub fn message_id(self) -> String {
        format!("metric-{}", self.as_str().replace('_', "-"))
    }
}

/// How a value stands against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Within limits.
    Ok,
    /// Near or past a warning limit.
    Warning,
    /// Past a critical limit.
    Critical,
    /// No recent value.
    Unknown,
}

impl Level {
    /// Every level.
    pub const ALL: [Level; 4] = [Level::Ok, Level::Warning, Level::Critical, Level::Unknown];

    /// The CSS class (`lvl-ok`, …); pages also print the label, never colour alone.
    pub const fn class(self) -> &'static str {
        match self {
            Level::Ok => "lvl-ok",
            Level::Warning => "lvl-warning",
            Level::Critical => "lvl-critical",
            Level::Unknown => "lvl-unknown",
        }
    }

    /// Its message id.
    pub const fn message_id(self) -> &'static str {
        match self {
            Level::Ok => "level-ok",
            Level::Warning => "level-warning",
            Level::Critical => "level-critical",
            Level::Unknown => "level-unknown",
        }
    }

    /// Classifies `value` against `limits`: critical outside the critical
    /// bounds, warning outside the warning bounds, else ok; unknown without
    /// a value. Bounds are inclusive of the acceptable side (a value equal
    /// to `min` is ok).
    pub fn classify(value: Option<f64>, limits: &Limits) -> Level {
        let Some(v) = value.filter(|v| v.is_finite()) else {
            return Level::Unknown;
        };
        let below = |b: Option<f64>| b.is_some_and(|b| v < b);
        let above = |b: Option<f64>| b.is_some_and(|b| v > b);
        if below(limits.critical_min) || above(limits.critical_max) {
            Level::Critical
        } else if below(limits.min) || above(limits.max) {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// The limits a value is judged against (from the server's `Limits`, with
/// the APR's overrides applied). A missing bound does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    /// Below this: warning.
    pub min: Option<f64>,
    /// Above this: warning.
    pub max: Option<f64>,
    /// Below this: critical.
    pub critical_min: Option<f64>,
    /// Above this: critical.
    pub critical_max: Option<f64>,
}

/// One current value on the operator's page.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// What.
    pub metric: Metric,
    /// The latest value, if any is recent.
    pub value: Option<f64>,
    /// When it was measured.
    pub at: Option<LocalTime>,
    /// Its limits (shown as the acceptable range).
    pub limits: Limits,
    /// How it stands; usually `Level::classify(value, &limits)`, but the
    /// server may say more (e.g. critical while a critical alert is open).
    pub level: Level,
}

/// A device's state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStatus {
    /// Device id (`caseta`, `red`).
    pub device: String,
    /// Whether its MQTT status is `online`.
    pub online: bool,
    /// Last pack received.
    pub last_seen: Option<LocalTime>,
    /// Supply voltage, V.
    pub battery_v: Option<f64>,
    /// Radio signal, dBm.
    pub rssi_dbm: Option<f64>,
    /// Packs waiting in its outbox, when known.
    pub outbox: Option<u32>,
}

/// An alert's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention.
    Warning,
    /// Needs action now.
    Critical,
}

impl Severity {
    /// Every severity.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// CSS class.
    pub const fn class(self) -> &'static str {
        match self {
            Severity::Info => "sev-info",
            Severity::Warning => "sev-warning",
            Severity::Critical => "sev-critical",
        }
    }

    /// Its message id.
    pub const fn message_id(self) -> &'static str {
        match self {
            Severity::Info => "severity-info",
            Severity::Warning => "severity-warning",
            Severity::Critical => "severity-critical",
        }
    }
}

/// The alert kinds of CONTRACT §3 that the catalogue names
/// (`alert-kind-…`); other kinds show their code.
pub const ALERT_KINDS: [&str; 8] = [
    "chlorine_low",
    "chlorine_high",
    "turbidity_high",
    "ph_out_of_range",
    "tank_low",
    "pressure_low",
    "night_flow_high",
    "device_offline",
];

/// One open alert, with its acknowledge form.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// Alert id.
    pub id: String,
    /// Kind code (`chlorine_low`, …).
    pub kind: String,
    /// Severity.
    pub severity: Severity,
    /// Device that raised it.
    pub device: String,
    /// When it opened.
    pub opened_at: LocalTime,
    /// The value that raised it.
    pub value: Option<f64>,
    /// The threshold it crossed.
    pub threshold: Option<f64>,
    /// Unit of value and threshold.
    pub unit: String,
    /// Where the acknowledge form posts (`comment` and `csrf_token` fields).
    pub ack_action: String,
}

/// The operator's open alerts: a fragment of the operator page that the
/// server also renders alone ([`crate::pages::render_alert_list`]) for the
/// live refresh.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertList {
    /// Open alerts, most severe and newest first (as given).
    pub alerts: Vec<AlertRow>,
    /// CSRF token for the acknowledge forms (the fragment is rendered
    /// without a layout).
    pub csrf_token: String,
}

/// One series of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesView {
    /// Legend (a device id, "antes"/"después" …; data, not UI text).
    pub name: String,
    /// `(unix seconds, value)`, in time order; NaN marks a gap.
    pub points: Vec<(i64, f64)>,
}

/// A chart on a page.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartView {
    /// What is drawn: a metric name (`chlorine`) or KPI name
    /// (`chlorine_compliance`), shown through the catalogue (`metric-…`,
    /// `kpi-…`), else as given.
    pub quantity: String,
    /// Unit for the axis.
    pub unit: String,
    /// Series.
    pub series: Vec<SeriesView>,
    /// Window start, unix seconds.
    pub from: i64,
    /// Window end, unix seconds.
    pub to: i64,
    /// Offset of local time from UTC in seconds (America/Santiago: −10800
    /// in summer, −14400 in winter), for the time ticks.
    pub utc_offset_s: i32,
    /// A shaded acceptable band (e.g. chlorine 0.2–2.0 mg/L).
    pub band: Option<(f64, f64)>,
    /// Threshold lines.
    pub thresholds: Vec<f64>,
}

/// A manual DPD chlorine check already recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct DpdCheck {
    /// When the sample was taken.
    pub at: LocalTime,
    /// DPD kit reading, mg/L.
    pub dpd_mg_l: f64,
    /// The probe's reading at that time, mg/L, for comparison.
    pub probe_mg_l: Option<f64>,
    /// Who recorded it.
    pub by: String,
}

/// The DPD entry form and recent checks.
#[derive(Debug, Clone, PartialEq)]
pub struct DpdForm {
    /// Where it posts (`value_mg_l`, `taken_at`, `place`, `csrf_token`).
    pub action: String,
    /// Default for the "taken at" field (now, local).
    pub default_time: LocalTime,
    /// Recent checks, newest first.
    pub recent: Vec<DpdCheck>,
}

/// Live refresh of the alert list by server-sent events.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveAlerts {
    /// The EventSource URL; any event triggers a refresh.
    pub events_url: String,
    /// Where the alert-list fragment is served.
    pub fragment_url: String,
}

/// A short reference to an APR.
#[derive(Debug, Clone, PartialEq)]
pub struct AprRef {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Comuna.
    pub comuna: String,
    /// Region's name.
    pub region: String,
}

/// The operator's page: their APR now.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorPage {
    /// The APR.
    pub apr: AprRef,
    /// Current values: chlorine, turbidity, tank, flow, pressure (and any other).
    pub readings: Vec<Reading>,
    /// The newest reading of any metric.
    pub last_reading_at: Option<LocalTime>,
    /// Devices.
    pub devices: Vec<DeviceStatus>,
    /// Open alerts.
    pub alerts: AlertList,
    /// 7-day charts.
    pub charts: Vec<ChartView>,
    /// Manual DPD check.
    pub dpd: DpdForm,
    /// Live refresh of the alerts, if the server offers it.
    pub live: Option<LiveAlerts>,
    /// Other APRs of this operator (links), if more than one.
    pub other_aprs: Vec<(String, String)>,
}

/// The programme's four components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// Diagnosis.
    Diagnosis,
    /// Technology improvements.
    Technology,
    /// New engineering designs.
    Engineering,
    /// Operator training.
    Training,
}

impl Component {
    /// Every component, in the contract's order.
    pub const ALL: [Component; 4] = [
        Component::Diagnosis,
        Component::Technology,
        Component::Engineering,
        Component::Training,
    ];

    /// The API name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Component::Diagnosis => "diagnosis",
            Component::Technology => "technology",
            Component::Engineering => "engineering",
            Component::Training => "training",
        }
    }

    /// Its message id.
    pub const fn message_id(self) -> &'static str {
        match self {
            Component::Diagnosis => "component-diagnosis",
            Component::Technology => "component-technology",
            Component::Engineering => "component-engineering",
            Component::Training => "component-training",
        }
    }

    /// Parses the API name.
    pub fn parse(s: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Which components are flagged, in [`Component::ALL`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ComponentFlags(pub [bool; 4]);

impl ComponentFlags {
    /// Whether `c` is flagged.
    pub fn get(&self, c: Component) -> bool {
        self.0[c as usize]
    }

    /// How many are flagged.
    pub fn count(&self) -> usize {
        self.0.iter().filter(|f| **f).count()
    }
}

/// One APR in the engineer's table.
#[derive(Debug, Clone, PartialEq)]
pub struct AprKpiRow {
    /// The APR.
    pub apr: AprRef,
    /// People served.
    pub beneficiaries: u64,
    /// Share of chlorine readings within limits over the window, %.
    pub chlorine_compliance_pct: Option<f64>,
    /// Days in the window without a valid chlorine reading.
    pub days_without_chlorine: Option<u32>,
    /// Minimum night flow (02:00–04:00 local), L/s.
    pub min_night_flow_l_s: Option<f64>,
    /// Non-revenue water, litres per connection per day.
    pub nrw_l_conn_day: Option<f64>,
    /// Continuity of service, hours per day.
    pub continuity_h_day: Option<f64>,
    /// Open alerts.
    pub open_alerts: u32,
    /// Flagged components.
    pub flags: ComponentFlags,
    /// The APR's engineering page.
    pub detail_url: String,
}

/// Columns the engineer's table sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortKey {
    /// APR name.
    #[default]
    Name,
    /// Comuna.
    Comuna,
    /// Region.
    Region,
    /// Beneficiaries.
    Beneficiaries,
    /// Chlorine compliance.
    ChlorineCompliance,
    /// Minimum night flow.
    NightFlow,
    /// Non-revenue water.
    Nrw,
    /// Continuity.
    Continuity,
    /// Open alerts.
    OpenAlerts,
    /// Number of flagged components.
    Flags,
}

impl SortKey {
    /// Every key, in column order.
    pub const ALL: [SortKey; 10] = [
        SortKey::Name,
        SortKey::Comuna,
        SortKey::Region,
        SortKey::Beneficiaries,
        SortKey::ChlorineCompliance,
        SortKey::NightFlow,
        SortKey::Nrw,
        SortKey::Continuity,
        SortKey::OpenAlerts,
        SortKey::Flags,
    ];

    /// The `sort=` query value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::Comuna => "comuna",
            SortKey::Region => "region",
            SortKey::Beneficiaries => "beneficiaries",
            SortKey::ChlorineCompliance => "chlorine",
            SortKey::NightFlow => "night_flow",
            SortKey::Nrw => "nrw",
            SortKey::Continuity => "continuity",
            SortKey::OpenAlerts => "alerts",
            SortKey::Flags => "flags",
        }
    }

    /// Parses a `sort=` query value.
    pub fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The column header's message id.
    pub const fn message_id(self) -> &'static str {
        match self {
            SortKey::Name => "col-apr",
            SortKey::Comuna => "col-comuna",
            SortKey::Region => "col-region",
            SortKey::Beneficiaries => "col-beneficiaries",
            SortKey::ChlorineCompliance => "col-chlorine-compliance",
            SortKey::NightFlow => "col-night-flow",
            SortKey::Nrw => "col-nrw",
            SortKey::Continuity => "col-continuity",
            SortKey::OpenAlerts => "col-open-alerts",
            SortKey::Flags => "col-flags",
        }
    }
}

/// The engineer's table of every APR.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineerOverview {
    /// Rows, any order: the renderer sorts them.
    pub rows: Vec<AprKpiRow>,
    /// Sort column.
    pub sort: SortKey,
    /// Descending order.
    pub descending: bool,
    /// This page's path without query, for the sort links.
    pub base_url: String,
    /// The KPI window, for the caption.
    pub window_from: LocalTime,
    /// The KPI window's end.
    pub window_to: LocalTime,
    /// CSV of every row's KPIs.
    pub kpis_csv_url: String,
}

/// One piece of evidence behind a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// KPI name (`chlorine_compliance`, …).
    pub kpi: String,
    /// Its value.
    pub value: Option<f64>,
    /// Unit.
    pub unit: String,
    /// The threshold it was judged against.
    pub threshold: Option<f64>,
    /// How it compares (`<`, `>`, `≥` …), as text.
    pub comparison: String,
    /// The window it was computed over.
    pub window_from: LocalTime,
    /// End of the window.
    pub window_to: LocalTime,
}

/// Why a component is flagged (or a note on why not).
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// Code, shown through the catalogue (`reason-…`).
    pub code: String,
    /// The server's message, shown when the catalogue lacks the code.
    pub message: String,
    /// Evidence.
    pub evidence: Vec<Evidence>,
}

/// One component of an assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentAssessment {
    /// Which.
    pub component: Component,
    /// Whether the APR needs it.
    pub flagged: bool,
    /// Reasons.
    pub reasons: Vec<Reason>,
}

/// An APR's assessment.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// When computed.
    pub computed_at: LocalTime,
    /// The four components.
    pub components: Vec<ComponentAssessment>,
}

/// The series explorer: a GET form and its chart.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesExplorer {
    /// Where the form submits (GET: `metric`, `from`, `to`).
    pub action: String,
    /// Metrics to choose from.
    pub metrics: Vec<Metric>,
    /// Chosen metric.
    pub metric: Metric,
    /// Window start.
    pub from: LocalTime,
    /// Window end.
    pub to: LocalTime,
    /// The chart (the renderer downsamples it).
    pub chart: ChartView,
    /// Raw points in the window, for the caption.
    pub raw_points: u64,
}

/// Export links of an APR.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportLinks {
    /// CSV of the explorer's series.
    pub series_csv: String,
    /// CSV of the APR's KPIs.
    pub kpis_csv: String,
    /// EPANET `[PATTERNS]` of the measured demand.
    pub epanet_pattern: String,
}

/// The engineer's page of one APR.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineerAprPage {
    /// The APR.
    pub apr: AprRef,
    /// Its KPI row.
    pub kpis: AprKpiRow,
    /// Its assessment, once computed.
    pub assessment: Option<Assessment>,
    /// KPI history charts.
    pub kpi_charts: Vec<ChartView>,
    /// Series explorer.
    pub explorer: SeriesExplorer,
    /// Exports.
    pub exports: ExportLinks,
    /// Back to the table.
    pub back_url: String,
}

/// Totals over a region or the programme (CONTRACT §3 summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SummaryView {
    /// APRs.
    pub aprs: u64,
    /// Comunas.
    pub comunas: u64,
    /// Regions.
    pub regions: u64,
    /// Beneficiaries.
    pub beneficiaries: u64,
    /// GORE contribution, CLP.
    pub gore_contribution_clp: u64,
    /// Public investment, CLP.
    pub public_investment_clp: u64,
    /// Open alerts.
    pub open_alerts: u64,
    /// APRs with each component flagged, in [`Component::ALL`] order.
    pub flagged: [u64; 4],
}

/// One APR in the GORE table.
#[derive(Debug, Clone, PartialEq)]
pub struct GoreAprRow {
    /// The APR.
    pub apr: AprRef,
    /// Beneficiaries.
    pub beneficiaries: u64,
    /// GORE contribution, CLP.
    pub gore_contribution_clp: u64,
    /// Public investment, CLP.
    pub public_investment_clp: u64,
    /// Flagged components.
    pub flags: ComponentFlags,
    /// Open alerts.
    pub open_alerts: u32,
}

/// A KPI before and after an intervention.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// KPI name.
    pub kpi: String,
    /// Unit.
    pub unit: String,
    /// Before.
    pub before: Option<f64>,
    /// After.
    pub after: Option<f64>,
    /// Whether a higher value is better (compliance) or worse (night flow).
    pub higher_is_better: bool,
}

impl Outcome {
    /// Whether the change is an improvement; `None` without both values or
    /// without change.
    pub fn improved(&self) -> Option<bool> {
        let (b, a) = (self.before?, self.after?);
        if a == b {
            return None;
        }
        Some((a > b) == self.higher_is_better)
    }
}

/// An intervention and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct InterventionView {
    /// The APR.
    pub apr: AprRef,
    /// Component.
    pub component: Component,
    /// What was done (free text from the record).
    pub description: String,
    /// When it was completed.
    pub date: LocalTime,
    /// Cost, CLP.
    pub cost_clp: Option<u64>,
    /// Before/after KPIs.
    pub outcomes: Vec<Outcome>,
    /// A small chart of the main KPI around the date.
    pub chart: Option<ChartView>,
}

/// The GORE page (and printable report).
#[derive(Debug, Clone, PartialEq)]
pub struct GorePage {
    /// The region's name, or `None` for the whole programme (admins).
    pub region: Option<String>,
    /// Totals.
    pub summary: SummaryView,
    /// APRs.
    pub aprs: Vec<GoreAprRow>,
    /// Interventions.
    pub interventions: Vec<InterventionView>,
    /// When the figures were computed.
    pub generated_at: LocalTime,
    /// The printable report's URL.
    pub report_url: String,
}

/// A user in the admin page.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    /// Username.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Scope as text (APR ids or region).
    pub scope: String,
    /// Their API tokens.
    pub tokens: Vec<TokenRow>,
    /// Issue a token (POST).
    pub issue_token_action: String,
    /// Disable the user (POST).
    pub disable_action: String,
}

/// An API token (never its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRow {
    /// Token id / prefix.
    pub id: String,
    /// Created.
    pub created_at: LocalTime,
    /// Last used.
    pub last_used: Option<LocalTime>,
    /// Revoke (POST).
    pub revoke_action: String,
}

/// An audit log entry in the admin page (UTC time as stored; before and
/// after as compact JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// Through what (`api`, `ui`, `cli`).
    pub via: String,
    /// What.
    pub action: String,
    /// The APR concerned (empty when none).
    pub apr: String,
    /// The object acted on.
    pub target: String,
    /// State before (JSON, empty when none).
    pub before: String,
    /// State after (JSON, empty when none).
    pub after: String,
}

/// A device in the admin page.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    /// APR id.
    pub apr: String,
    /// Device id.
    pub device: String,
    /// MQTT username.
    pub mqtt_username: String,
    /// Last seen.
    pub last_seen: Option<LocalTime>,
    /// Online.
    pub online: bool,
    /// Rotate the MQTT password (POST).
    pub rotate_action: String,
}

/// An APR in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct AprRegistryRow {
    /// The APR.
    pub apr: AprRef,
    /// Beneficiaries.
    pub beneficiaries: u64,
    /// Connections.
    pub connections: u64,
    /// GORE contribution, CLP.
    pub gore_contribution_clp: u64,
    /// Public investment, CLP.
    pub public_investment_clp: u64,
}

/// A per-APR threshold override.
#[derive(Debug, Clone, PartialEq)]
pub struct OverrideRow {
    /// APR id.
    pub apr: String,
    /// Limit key (`chlorine_min_mg_l`, …).
    pub key: String,
    /// Value.
    pub value: f64,
    /// Who set it.
    pub set_by: String,
    /// When.
    pub set_at: LocalTime,
    /// Remove it (POST).
    pub delete_action: String,
}

/// An intervention record.
#[derive(Debug, Clone, PartialEq)]
pub struct InterventionRow {
    /// Id.
    pub id: String,
    /// APR id.
    pub apr: String,
    /// Component.
    pub component: Component,
    /// Completed on.
    pub date: LocalTime,
    /// Cost, CLP.
    pub cost_clp: Option<u64>,
    /// What was done.
    pub description: String,
}

/// A secret shown once, right after it was created.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSecret {
    /// What it is for (a username, a device).
    pub subject: String,
    /// The secret.
    pub secret: String,
}

/// Where the admin page's create forms post.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminActions {
    /// Create a user.
    pub create_user: String,
    /// Register a device.
    pub create_device: String,
    /// Add or update an APR.
    pub upsert_apr: String,
    /// Set a threshold override.
    pub set_override: String,
    /// Record an intervention.
    pub create_intervention: String,
}

/// The admin page.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminPage {
    /// Users with their tokens.
    pub users: Vec<UserRow>,
    /// Devices.
    pub devices: Vec<DeviceRow>,
    /// The APR registry.
    pub aprs: Vec<AprRegistryRow>,
    /// Threshold overrides.
    pub overrides: Vec<OverrideRow>,
    /// Limit keys an override may set.
    pub override_keys: Vec<String>,
    /// Intervention records.
    pub interventions: Vec<InterventionRow>,
    /// Form actions.
    pub actions: AdminActions,
    /// A secret to show once.
    pub new_secret: Option<NewSecret>,
    /// The latest audit log entries, newest first.
    pub audit: Vec<AuditRow>,
}

/// What went wrong, for the error page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: a malformed request.
    BadRequest,
    /// 403: the page is outside the user's scope.
    Forbidden,
    /// 403: a form without a valid CSRF token.
    CsrfRejected,
    /// 404.
    NotFound,
    /// 500: details are in the server's log, never on the page.
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::BadRequest,
        ErrorKind::Forbidden,
        ErrorKind::CsrfRejected,
        ErrorKind::NotFound,
        ErrorKind::Internal,
    ];

    /// The HTTP status.
    pub const fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Forbidden | ErrorKind::CsrfRejected => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Internal => 500,
        }
    }

    /// The message id of its title; the explanation is `{id}-detail`.
    pub const fn message_id(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "error-400",
            ErrorKind::Forbidden => "error-403",
            ErrorKind::CsrfRejected => "error-csrf",
            ErrorKind::NotFound => "error-404",
            ErrorKind::Internal => "error-500",
        }
    }
}

/// The error page.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorPage {
    /// What went wrong.
    pub kind: ErrorKind,
    /// A request id to quote to support (matches the server log), if any.
    pub request_id: Option<String>,
    /// Where "back" goes (the user's home page).
    pub home_url: String,
}
