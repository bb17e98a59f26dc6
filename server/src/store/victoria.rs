//! [`VictoriaSeries`]: the series in an external time-series engine
//! (VictoriaMetrics), the registry and everything else in SQLite.
//!
//! # Writes: the InfluxDB v2 write API
//! A batch's readings are posted as InfluxDB line protocol to
//! `{url}/api/v2/write?org=..&bucket=..&precision=ms` with
//! `Authorization: Token ..`, which InfluxDB 2, InfluxDB 3 and
//! VictoriaMetrics all accept. One line per (APR, device, device time):
//!
//! ```text
//! apr,apr=<apr>,device=<device>,region=<region> chlorine=0.41,turbidity=0.8 1764064800000
//! ```
//!
//! Measurement `apr`, tags `apr`, `device` and `region` (the APR's region in
//! the registry, so a Grafana dashboard can count per region; an APR's
//! region does not change, so neither does its series' identity), one
//! field per metric named as
//! in CONTRACT §2, always a float (the pump's state is 1 or 0; a bare number
//! is a float in line protocol, so a field's type never changes), the
//! device's time in ms. VictoriaMetrics names a series
//! `{measurement}_{field}`, so Grafana sees `apr_chlorine{apr="..",
//! device="..",region=".."}`. (VictoriaMetrics ignores `org` and `bucket`; InfluxDB
//! needs them.)
//!
//! The line protocol is written here over the `reqwest` client the server
//! already has, not through the `influxdb2` crate: influxdb2 0.5.2 brings a
//! second HTTP stack (reqwest 0.11, hyper 0.14) and, on its write path,
//! drops a path prefix of the base URL and treats any status but 204 as a
//! failure. The wire format is the same, so any InfluxDB v2 compatible
//! engine still accepts these writes. Here the URL keeps its path prefix
//! (an engine behind a reverse proxy at `/tsdb/` works) and any 2xx is
//! success.
//!
//! # Ack and idempotency
//! [`SeriesStore::write_batch`] answers only after the engine accepted the
//! readings (2xx; VictoriaMetrics answers 204) and SQLite committed the rest
//! of the batch: the quarantine, the devices' statuses and last-seen times
//! (the same batch with its readings taken out, through [`SqliteStore`]).
//! A gateway that retries a batch re-sends readings the engine holds
//! already: VictoriaMetrics keeps one sample per series and millisecond
//! only when started with `-dedup.minScrapeInterval=1ms` (it must be; see
//! the README), so a retried reading is stored once, but the engine does not
//! say which readings were new. The ack therefore counts every reading the
//! engine accepted as `stored` and reports no `duplicates`.
//! [`SeriesStore::readings_stored`] is the running count of readings
//! accepted by the engine, retries included, kept in SQLite's `counts`
//! table (row `readings_external`), so it survives restarts.
//!
//! # Precision
//! VictoriaMetrics keeps a value to about 14 significant decimal digits
//! (written 0.123456789012345, read 0.12345678901234). Readings with fewer
//! digits (every probe's real resolution, the tests' known sets) read back
//! bit for bit; a full-precision f64 from the site twin reads back within
//! 1e-14 relative, so the same batch's figures on SQLite and on
//! VictoriaMetrics agree to that, and exactly when values have ≤ 14 digits.
//!
//! # Reads: the Prometheus-style query API
//! - Raw readings come from `/api/v1/export` (JSON lines, exact samples);
//!   bucket means (`step`) are computed here from the raw samples, buckets
//!   starting at `floor(t / step) * step` like the SQLite store's, the mean
//!   of the raw points summed in time order.
//! - `latest` and `coverage` are instant queries (`tlast_over_time`,
//!   `last_over_time`, `tfirst_over_time`, `count_over_time`) over the last
//!   [`LOOKBEHIND`], so a series silent for longer is not listed.
//! - Every query is sent with `nocache=1`, and VictoriaMetrics must run with
//!   `-search.latencyOffset=0s`, so a sample is searchable once flushed, not
//!   30 s later. With `flush_after_write` (the default) each write is
//!   followed by `/internal/force_flush`, so a sample of a known series is
//!   searchable when the ack goes out. A brand-new series (a new device or
//!   metric, or the first write since the server started) takes the engine
//!   about a second to index, more on a loaded machine: the write then asks
//!   `/api/v1/series` until every new series is listed ([`unseen_series`],
//!   [`series_selectors`]), so what a batch wrote is searchable when its ack
//!   goes out, new series included. Past the request timeout (at most
//!   [`LISTING_WAIT_MAX`]) it acks anyway (the engine holds the readings) and
//!   logs a warning.
//!
//! No InfluxDB 2 server can be installed where this is tested, so there is
//! no Flux reader: with InfluxDB as the engine, writes work, but the
//! server's own views need a Prometheus-style read API (VictoriaMetrics).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use apr_wire::ingest::{IngestAck, IngestBatch};
use apr_wire::Metric;
use rusqlite::OptionalExtension;
use serde::Deserialize;

use super::{Coverage, Latest, Point, QuarantineEntry, SeriesQuery, SeriesStore, SqliteStore};
use crate::error::{Error, Result};

/// How far back `latest` and `coverage` look.
pub const LOOKBEHIND: &str = "3650d";

/// The measurement every reading is written to.
pub const MEASUREMENT: &str = "apr";

/// The `counts` row holding the readings accepted by the engine.
const COUNT_ROW: &str = "readings_external";

/// Where and how to reach the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VictoriaSettings {
    /// Base URL, e.g. `http://127.0.0.1:8428` (a path prefix is kept).
    pub url: String,
    /// InfluxDB organisation (`org` of the write API).
    pub org: String,
    /// InfluxDB bucket (`bucket` of the write API; VictoriaMetrics stores it
    /// as the label `db`).
    pub bucket: String,
    /// API token, sent as `Authorization: Token ..` when set.
    pub token: Option<String>,
    /// Longest one request may take.
    pub timeout: Duration,
    /// Call `/internal/force_flush` after each write, and wait until the
    /// engine lists the series it had not seen, so what a batch wrote is
    /// searchable when its ack goes out (read-your-writes, as with SQLite:
    /// the KPI task reads the days a batch touched right after it).
    pub flush_after_write: bool,
}

/// The series in VictoriaMetrics; registry, quarantine and device state in
/// the [`SqliteStore`] it wraps.
pub struct VictoriaSeries {
    sqlite: Arc<SqliteStore>,
    settings: VictoriaSettings,
    http: reqwest::blocking::Client,
    readings_total: AtomicU64,
    /// Region of each APR written so far (from the registry).
    regions: Mutex<HashMap<String, String>>,
    /// Series this process has seen listed by the engine (searchable).
    searchable: Mutex<KnownSeries>,
}

/// A series as the engine names it: APR, device, metric.
pub type SeriesKey = (String, String, Metric);

/// A set of series, looked up by borrowed names (no allocation per reading
/// on the write path): the metrics of each APR and device as a bit set.
#[derive(Debug, Default)]
pub struct KnownSeries(HashMap<String, HashMap<String, u32>>);

// Every metric has its bit.
const _: () = assert!(Metric::ALL.len() <= 32);

impl KnownSeries {
    fn bit(metric: Metric) -> u32 {
        1 << metric.index()
    }

    /// Whether the set holds the series.
    pub fn contains(&self, apr: &str, device: &str, metric: Metric) -> bool {
        self.0
            .get(apr)
            .and_then(|devices| devices.get(device))
            .is_some_and(|bits| bits & Self::bit(metric) != 0)
    }

    /// Adds a series.
    pub fn insert(&mut self, (apr, device, metric): SeriesKey) {
        *self.0.entry(apr).or_default().entry(device).or_default() |= Self::bit(metric);
    }
}

impl Extend<SeriesKey> for KnownSeries {
    fn extend<I: IntoIterator<Item = SeriesKey>>(&mut self, keys: I) {
        for key in keys {
            self.insert(key);
        }
    }
}

/// Most selectors sent in one `/api/v1/series` request.
const SELECTORS_PER_REQUEST: usize = 256;

/// Longest a write waits for its new series to be listed (or the request
/// timeout, when shorter): well inside a gateway's request timeout (10 s by
/// default), so a slow index does not turn into retried batches.
pub const LISTING_WAIT_MAX: Duration = Duration::from_secs(5);

impl std::fmt::Debug for VictoriaSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VictoriaSeries")
            .field("url", &self.settings.url)
            .field("bucket", &self.settings.bucket)
            .finish_non_exhaustive()
    }
}

fn engine_error(what: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("time-series engine: {what}"))
}

impl VictoriaSeries {
    /// Wraps `sqlite` (which keeps the quarantine, device state and the
    /// running count) and checks that the engine answers.
    pub fn open(sqlite: Arc<SqliteStore>, settings: VictoriaSettings) -> Result<VictoriaSeries> {
        let http = reqwest::blocking::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(engine_error)?;
        let counted = sqlite.read(|c| {
            Ok(
                c.prepare_cached("SELECT value FROM counts WHERE name = ?1")?
                    .query_row([COUNT_ROW], |r| r.get::<_, i64>(0))
                    .optional()?,
            )
        })?;
        let store = VictoriaSeries {
            sqlite,
            settings,
            http,
            readings_total: AtomicU64::new(
                counted.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            ),
            regions: Mutex::new(HashMap::new()),
            searchable: Mutex::new(KnownSeries::default()),
        };
        store.health()?;
        Ok(store)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.settings.url.trim_end_matches('/'))
    }

    fn authorized(
        &self,
        req: reqwest::blocking::RequestBuilder,
    ) -> reqwest::blocking::RequestBuilder {
        match &self.settings.token {
            Some(t) => req.header("Authorization", format!("Token {t}")),
            None => req,
        }
    }

    /// Whether the engine answers `/health`.
    pub fn health(&self) -> Result<()> {
        let resp = self
            .authorized(self.http.get(self.url("/health")))
            .send()
            .map_err(|e| engine_error(format!("{} does not answer: {e}", self.settings.url)))?;
        check_status(resp).map(|_| ())
    }

    /// Makes every accepted sample searchable now (`/internal/force_flush`).
    pub fn flush(&self) -> Result<()> {
        let resp = self
            .authorized(self.http.get(self.url("/internal/force_flush")))
            .send()
            .map_err(engine_error)?;
        check_status(resp).map(|_| ())
    }

    fn get(&self, path: &str, params: &[(&str, String)]) -> Result<String> {
        let resp = self
            .authorized(
                self.http
                    .get(self.url(path))
                    .query(params)
                    .query(&[("nocache", "1")]),
            )
            .send()
            .map_err(engine_error)?;
        check_status(resp)?.text().map_err(engine_error)
    }

    /// Raw samples of the series matching `selector` in `[from_ms, to_ms]`,
    /// as (labels, points) per series.
    pub fn export(&self, selector: &str, from_ms: i64, to_ms: i64) -> Result<Vec<ExportedSeries>> {
        let body = self.get(
            "/api/v1/export",
            &[
                ("match[]", selector.to_owned()),
                ("start", seconds(from_ms)),
                ("end", seconds(to_ms)),
            ],
        )?;
        parse_export(&body)
    }

    /// An instant query's result as (labels, value) per series.
    fn instant(&self, query: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        let body = self.get("/api/v1/query", &[("query", query.to_owned())])?;
        parse_instant(&body)
    }

    /// The regions of the batch's APRs, from the registry (cached).
    fn regions_of(&self, batch: &IngestBatch) -> Result<HashMap<String, String>> {
        use super::Registry;
        let mut known = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        for pack in &batch.packs {
            if pack.readings.is_empty() || known.contains_key(&pack.apr) {
                continue;
            }
            if let Some(apr) = self.sqlite.apr(&pack.apr)? {
                known.insert(apr.id, apr.region);
            }
        }
        Ok(batch
            .packs
            .iter()
            .filter_map(|p| Some((p.apr.clone(), known.get(&p.apr)?.clone())))
            .collect())
    }

    /// Waits until the engine lists every series of `unseen` (written in
    /// `[from_ms, to_ms]`), flushing between tries; past the request
    /// timeout (at most [`LISTING_WAIT_MAX`]) it logs a warning and returns.
    /// The listed ones are remembered, so a series is waited for once per
    /// process.
    fn wait_searchable(&self, unseen: BTreeSet<SeriesKey>, from_ms: i64, to_ms: i64) -> Result<()> {
        let started = Instant::now();
        let deadline = started + listing_wait(self.settings.timeout);
        let mut missing = unseen.clone();
        let mut pause = Duration::from_millis(20);
        loop {
            let selectors = series_selectors(&missing);
            for chunk in selectors.chunks(SELECTORS_PER_REQUEST) {
                let mut form: Vec<(&str, String)> =
                    chunk.iter().map(|s| ("match[]", s.clone())).collect();
                form.push(("start", seconds(from_ms)));
                form.push(("end", seconds(to_ms)));
                form.push(("nocache", "1".into()));
                let resp = self
                    .authorized(self.http.post(self.url("/api/v1/series")).form(&form))
                    .send()
                    .map_err(engine_error)?;
                let body = check_status(resp)?.text().map_err(engine_error)?;
                for key in parse_series_list(&body)? {
                    missing.remove(&key);
                }
            }
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    missing = missing.len(),
                    waited_ms = started.elapsed().as_millis() as u64,
                    "new series written but not yet searchable; acknowledging anyway"
                );
                break;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
            self.flush()?;
        }
        let mut known = self
            .searchable
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        known.extend(unseen.into_iter().filter(|k| !missing.contains(k)));
        Ok(())
    }

    fn apr_selector(apr: &str) -> String {
        format!(
            "{{__name__=~\"{MEASUREMENT}_.+\",{MEASUREMENT}=\"{}\"}}",
            label_value(apr)
        )
    }
}

fn check_status(resp: reqwest::blocking::Response) -> Result<reqwest::blocking::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body: String = resp.text().unwrap_or_default().chars().take(300).collect();
    Err(engine_error(format!("answered {status}: {body}")))
}

/// `ms` as seconds with three decimals, as the query API takes times.
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    format!("{sign}{}.{:03}", a / 1000, a % 1000)
}

/// A label value quoted for a PromQL selector.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Escapes a tag key or value for line protocol (commas, equals, spaces).
fn escape_tag(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A line's identity: APR, device, device time (ms).
type LineKey<'a> = (&'a str, &'a str, i64);

/// The batch's readings as line protocol: one line per (APR, device, time),
/// one float field per metric, the APR's region (when `regions` knows it)
/// as a tag. Answers the text and the number of readings.
pub fn line_protocol(
    batch: &IngestBatch,
    regions: &HashMap<String, String>,
) -> Result<(String, u64)> {
    // (apr, device, t) -> fields, so a device's readings of one instant
    // share a line.
    let mut lines: BTreeMap<LineKey<'_>, Vec<(Metric, f64)>> = BTreeMap::new();
    let mut n = 0u64;
    for pack in &batch.packs {
        for r in &pack.readings {
            if !r.value.is_finite() {
                return Err(Error::Invalid(format!(
                    "reading {} of {}/{} at {} is not a finite number",
                    r.metric.name(),
                    pack.apr,
                    pack.device,
                    r.t_ms
                )));
            }
            let fields = lines
                .entry((pack.apr.as_str(), pack.device.as_str(), r.t_ms))
                .or_default();
            // A metric twice at the same instant: the last one wins, as the
            // engine would keep one of them anyway.
            fields.retain(|(m, _)| *m != r.metric);
            fields.push((r.metric, r.value));
            n += 1;
        }
    }
    let mut out = String::new();
    for ((apr, device, t), fields) in lines {
        out.push_str(MEASUREMENT);
        out.push_str(",apr=");
        out.push_str(&escape_tag(apr));
        out.push_str(",device=");
        out.push_str(&escape_tag(device));
        if let Some(region) = regions.get(apr) {
            out.push_str(",region=");
            out.push_str(&escape_tag(region));
        }
        for (i, (m, v)) in fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            out.push_str(m.name());
            out.push('=');
            // Rust prints the shortest text that reads back to the same f64,
            // and a number without an `i` suffix is a float.
            out.push_str(&v.to_string());
        }
        out.push(' ');
        out.push_str(&t.to_string());
        out.push('\n');
    }
    Ok((out, n))
}

/// How long a write waits for its new series to be listed, given the
/// request timeout.
pub fn listing_wait(request_timeout: Duration) -> Duration {
    request_timeout.min(LISTING_WAIT_MAX)
}

/// The series of `batch` not in `known`, and the span of times (ms) their
/// readings cover; `None` when every series is known.
pub fn unseen_series(
    batch: &IngestBatch,
    known: &KnownSeries,
) -> Option<(BTreeSet<SeriesKey>, i64, i64)> {
    let mut unseen = BTreeSet::new();
    let (mut from, mut to) = (i64::MAX, i64::MIN);
    for pack in &batch.packs {
        for r in &pack.readings {
            if known.contains(&pack.apr, &pack.device, r.metric) {
                continue;
            }
            from = from.min(r.t_ms);
            to = to.max(r.t_ms);
            unseen.insert((pack.apr.clone(), pack.device.clone(), r.metric));
        }
    }
    (!unseen.is_empty()).then_some((unseen, from, to))
}

/// Selectors naming exactly the metrics of `series`, one per (APR, device):
/// `{__name__=~"apr_(chlorine|flow)",apr="..",device=".."}`.
pub fn series_selectors(series: &BTreeSet<SeriesKey>) -> Vec<String> {
    let mut by_device: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for (apr, device, metric) in series {
        by_device
            .entry((apr.as_str(), device.as_str()))
            .or_default()
            .push(metric.name());
    }
    by_device
        .into_iter()
        .map(|((apr, device), metrics)| {
            format!(
                "{{__name__=~\"{MEASUREMENT}_({})\",{MEASUREMENT}=\"{}\",device=\"{}\"}}",
                metrics.join("|"),
                label_value(apr),
                label_value(device)
            )
        })
        .collect()
}

#[derive(Deserialize)]
struct SeriesListAnswer {
    data: Vec<BTreeMap<String, String>>,
}

/// The series an `/api/v1/series` answer lists (others, of names that are
/// not a metric of ours, are left out).
pub fn parse_series_list(body: &str) -> Result<Vec<SeriesKey>> {
    let a: SeriesListAnswer = serde_json::from_str(body)
        .map_err(|e| engine_error(format!("a series list is not understood: {e}")))?;
    Ok(a.data
        .into_iter()
        .filter_map(|labels| {
            let metric = metric_of(&labels)?;
            Some((
                labels.get(MEASUREMENT)?.clone(),
                labels.get("device")?.clone(),
                metric,
            ))
        })
        .collect())
}

/// One series as `/api/v1/export` answers it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ExportedSeries {
    /// Labels, `__name__` included.
    pub metric: BTreeMap<String, String>,
    /// Values.
    pub values: Vec<f64>,
    /// Times, ms.
    pub timestamps: Vec<i64>,
}

/// Parses `/api/v1/export`'s JSON lines.
pub fn parse_export(body: &str) -> Result<Vec<ExportedSeries>> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let s: ExportedSeries = serde_json::from_str(l)
                .map_err(|e| engine_error(format!("an export line is not understood: {e}")))?;
            if s.values.len() != s.timestamps.len() {
                return Err(engine_error(
                    "an export line has unequal values and timestamps",
                ));
            }
            Ok(s)
        })
        .collect()
}

#[derive(Deserialize)]
struct InstantAnswer {
    data: InstantData,
}

#[derive(Deserialize)]
struct InstantData {
    result: Vec<InstantSeries>,
}

#[derive(Deserialize)]
struct InstantSeries {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

fn parse_instant(body: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
    let a: InstantAnswer = serde_json::from_str(body)
        .map_err(|e| engine_error(format!("a query answer is not understood: {e}")))?;
    a.data
        .result
        .into_iter()
        .map(|s| {
            let v: f64 = s
                .value
                .1
                .parse()
                .map_err(|e| engine_error(format!("a query value is not a number: {e}")))?;
            Ok((s.metric, v))
        })
        .collect()
}

/// The metric a series name stands for (`apr_chlorine` → chlorine).
fn metric_of(labels: &BTreeMap<String, String>) -> Option<Metric> {
    labels
        .get("__name__")?
        .strip_prefix(MEASUREMENT)?
        .strip_prefix('_')
        .and_then(Metric::from_name)
}

/// A running sum as SQLite's `SUM`/`AVG` keep it (since 3.43): Kahan-Babuska-
/// Neumaier compensated summation, so the means here are SQLite's to the bit.
#[derive(Debug, Clone, Copy, Default)]
struct CompensatedSum {
    sum: f64,
    err: f64,
    n: u64,
}

impl CompensatedSum {
    fn add(&mut self, r: f64) {
        let s = self.sum;
        let t = s + r;
        if s.abs() > r.abs() {
            self.err += (s - t) + r;
        } else {
            self.err += (r - t) + s;
        }
        self.sum = t;
        self.n += 1;
    }

    fn mean(&self) -> f64 {
        let total = if self.err.is_finite() {
            self.sum + self.err
        } else {
            self.sum
        };
        total / self.n as f64
    }
}

/// Bucket means of time-ordered points: one per bucket starting at
/// `floor(t / step) * step`, the mean of the bucket's points summed in time
/// order as SQLite's `AVG` sums them. The same buckets and means as the
/// SQLite store's `step` query.
pub fn bucket_means(points: &[Point], step_ms: i64) -> Vec<Point> {
    let step = step_ms.max(1);
    let mut out: Vec<Point> = Vec::new();
    let mut current: Option<(i64, CompensatedSum)> = None;
    for p in points {
        let bucket = p.t_ms.div_euclid(step) * step;
        match &mut current {
            Some((b, sum)) if *b == bucket => sum.add(p.v),
            _ => {
                if let Some((b, sum)) = current.take() {
                    out.push(Point {
                        t_ms: b,
                        v: sum.mean(),
                    });
                }
                let mut sum = CompensatedSum::default();
                sum.add(p.v);
                current = Some((bucket, sum));
            }
        }
    }
    if let Some((b, sum)) = current {
        out.push(Point {
            t_ms: b,
            v: sum.mean(),
        });
    }
    out
}

impl SeriesStore for VictoriaSeries {
    fn write_batch(&self, mut batch: IngestBatch) -> Result<IngestAck> {
        let regions = self.regions_of(&batch)?;
        let (body, n) = line_protocol(&batch, &regions)?;
        if n > 0 {
            let resp = self
                .authorized(
                    self.http
                        .post(self.url("/api/v2/write"))
                        .query(&[
                            ("org", self.settings.org.as_str()),
                            ("bucket", self.settings.bucket.as_str()),
                            ("precision", "ms"),
                        ])
                        .header("Content-Type", "text/plain; charset=utf-8")
                        .body(body),
                )
                .send()
                .map_err(engine_error)?;
            check_status(resp)?;
            if self.settings.flush_after_write {
                self.flush()?;
                let unseen = {
                    let known = self
                        .searchable
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    unseen_series(&batch, &known)
                };
                if let Some((unseen, from_ms, to_ms)) = unseen {
                    self.wait_searchable(unseen, from_ms, to_ms)?;
                }
            }
        }
        // The engine holds the readings; SQLite stores the rest (quarantine,
        // statuses, last-seen times: the packs stay, emptied of readings).
        for pack in &mut batch.packs {
            pack.readings.clear();
        }
        let rest = self.sqlite.write_batch(batch)?;
        if n > 0 {
            let add = i64::try_from(n).unwrap_or(i64::MAX);
            self.sqlite.write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO counts(name, value) VALUES (?1, ?2) \
                     ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                )?
                .execute(rusqlite::params![COUNT_ROW, add])?;
                Ok(())
            })?;
            self.readings_total.fetch_add(n, Ordering::Relaxed);
        }
        Ok(IngestAck {
            stored: n,
            duplicates: 0,
            quarantined: rest.quarantined,
        })
    }

    fn readings(&self, q: &SeriesQuery<'_>) -> Result<Vec<Point>> {
        let mut selector = format!(
            "{{__name__=\"{MEASUREMENT}_{}\",{MEASUREMENT}=\"{}\"",
            q.metric.name(),
            label_value(q.apr)
        );
        if let Some(d) = q.device {
            selector.push_str(&format!(",device=\"{}\"", label_value(d)));
        }
        selector.push('}');
        let mut raw: Vec<(i64, String, f64)> = Vec::new();
        for s in self.export(&selector, q.from_ms, q.to_ms)? {
            let device = s.metric.get("device").cloned().unwrap_or_default();
            for (t, v) in s.timestamps.iter().zip(&s.values) {
                if (q.from_ms..=q.to_ms).contains(t) {
                    raw.push((*t, device.clone(), *v));
                }
            }
        }
        raw.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let points: Vec<Point> = raw
            .into_iter()
            .map(|(t_ms, _, v)| Point { t_ms, v })
            .collect();
        let mut points = match q.step_ms {
            None => points,
            Some(step) => bucket_means(&points, step),
        };
        points.truncate(q.limit);
        Ok(points)
    }

    fn latest(&self, apr: &str) -> Result<Vec<Latest>> {
        let sel = Self::apr_selector(apr);
        let times = self.instant(&format!(
            "tlast_over_time({sel}[{LOOKBEHIND}]) keep_metric_names"
        ))?;
        let values = self.instant(&format!(
            "last_over_time({sel}[{LOOKBEHIND}]) keep_metric_names"
        ))?;
        let key = |l: &BTreeMap<String, String>| {
            metric_of(l).map(|m| (m.index(), l.get("device").cloned().unwrap_or_default()))
        };
        let mut at: BTreeMap<(u8, String), i64> = BTreeMap::new();
        for (l, t_s) in &times {
            if let Some(k) = key(l) {
                at.insert(k, (t_s * 1000.0).round() as i64);
            }
        }
        let mut out = Vec::new();
        for (l, v) in &values {
            let (Some(metric), Some(k)) = (metric_of(l), key(l)) else {
                continue;
            };
            if let Some(t_ms) = at.get(&k) {
                out.push(Latest {
                    device: k.1.clone(),
                    metric,
                    t_ms: *t_ms,
                    v: *v,
                });
            }
        }
        out.sort_by(|a, b| {
            a.metric
                .index()
                .cmp(&b.metric.index())
                .then_with(|| a.device.cmp(&b.device))
        });
        Ok(out)
    }

    fn coverage(&self, apr: &str) -> Result<Vec<Coverage>> {
        let sel = Self::apr_selector(apr);
        let q = |f: &str| self.instant(&format!("{f}({sel}[{LOOKBEHIND}]) keep_metric_names"));
        let mut by_metric: BTreeMap<u8, Coverage> = BTreeMap::new();
        let ms = |s: f64| (s * 1000.0).round() as i64;
        for (l, first) in q("tfirst_over_time")? {
            if let Some(metric) = metric_of(&l) {
                let c = by_metric.entry(metric.index()).or_insert(Coverage {
                    metric,
                    first_ms: i64::MAX,
                    last_ms: i64::MIN,
                    count: 0,
                });
                c.first_ms = c.first_ms.min(ms(first));
            }
        }
        for (l, last) in q("tlast_over_time")? {
            if let Some(c) = metric_of(&l).and_then(|m| by_metric.get_mut(&m.index())) {
                c.last_ms = c.last_ms.max(ms(last));
            }
        }
        for (l, count) in q("count_over_time")? {
            if let Some(c) = metric_of(&l).and_then(|m| by_metric.get_mut(&m.index())) {
                c.count += count.max(0.0) as u64;
            }
        }
        Ok(by_metric
            .into_values()
            .filter(|c| c.count > 0 && c.last_ms >= c.first_ms)
            .collect())
    }

    fn quarantine(&self, apr: &str, limit: usize) -> Result<Vec<QuarantineEntry>> {
        self.sqlite.quarantine(apr, limit)
    }

    fn readings_stored(&self) -> u64 {
        self.readings_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apr_wire::ingest::IngestPack;
    use apr_wire::validate::Reading;

    fn pack(apr: &str, device: &str, readings: Vec<Reading>) -> IngestPack {
        IngestPack {
            apr: apr.into(),
            device: device.into(),
            bt: None,
            received_ms: 0,
            readings,
            refusals: Vec::new(),
            raw: None,
        }
    }

    #[test]
    fn readings_of_one_instant_share_a_line_with_float_fields_and_ms_times() {
        let batch = IngestBatch {
            gateway: "g".into(),
            seq: 1,
            packs: vec![pack(
                "apr-1",
                "dev-1",
                vec![
                    Reading {
                        metric: Metric::Chlorine,
                        t_ms: 1_764_064_800_000,
                        value: 0.41,
                    },
                    Reading {
                        metric: Metric::Pump,
                        t_ms: 1_764_064_800_000,
                        value: 1.0,
                    },
                    Reading {
                        metric: Metric::Flow,
                        t_ms: 1_764_064_860_123,
                        value: 2.5,
                    },
                ],
            )],
            statuses: Vec::new(),
        };
        let regions = HashMap::from([("apr-1".to_string(), "maule".to_string())]);
        let (text, n) = line_protocol(&batch, &regions).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            text,
            "apr,apr=apr-1,device=dev-1,region=maule chlorine=0.41,pump=1 1764064800000\n\
             apr,apr=apr-1,device=dev-1,region=maule flow=2.5 1764064860123\n"
        );
    }

    #[test]
    fn unseen_series_are_those_not_known_with_the_span_of_their_readings() {
        let r = |metric, t_ms| Reading {
            metric,
            t_ms,
            value: 1.0,
        };
        let batch = IngestBatch {
            gateway: "g".into(),
            seq: 1,
            statuses: Vec::new(),
            packs: vec![
                pack(
                    "a",
                    "d1",
                    vec![r(Metric::Chlorine, 500), r(Metric::Ph, 900)],
                ),
                pack("a", "d2", vec![r(Metric::Flow, 100)]),
                pack("b", "d1", vec![r(Metric::Chlorine, 2_000)]),
            ],
        };
        let mut known = KnownSeries::default();
        known.insert(("a".into(), "d1".into(), Metric::Ph));
        known.insert(("b".into(), "d1".into(), Metric::Chlorine));
        let (unseen, from, to) = unseen_series(&batch, &known).expect("two unseen");
        let want: BTreeSet<SeriesKey> = [
            ("a".to_string(), "d1".to_string(), Metric::Chlorine),
            ("a".to_string(), "d2".to_string(), Metric::Flow),
        ]
        .into_iter()
        .collect();
        assert_eq!(unseen, want);
        assert_eq!(
            (from, to),
            (100, 500),
            "the span of the unseen readings only"
        );
        known.extend(want);
        assert_eq!(unseen_series(&batch, &known), None);
    }

    #[test]
    fn the_listing_wait_is_the_request_timeout_up_to_five_seconds() {
        assert_eq!(listing_wait(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(listing_wait(Duration::from_secs(30)), LISTING_WAIT_MAX);
        assert!(
            LISTING_WAIT_MAX < Duration::from_secs(10),
            "inside the gateway's timeout"
        );
    }

    #[test]
    fn series_selectors_name_each_devices_new_metrics_and_parse_back() {
        let series: BTreeSet<SeriesKey> = [
            ("a".to_string(), "d1".to_string(), Metric::Chlorine),
            ("a".to_string(), "d1".to_string(), Metric::Ph),
            ("b\"x".to_string(), "d2".to_string(), Metric::Flow),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            series_selectors(&series),
            vec![
                r#"{__name__=~"apr_(chlorine|ph)",apr="a",device="d1"}"#.to_string(),
                r#"{__name__=~"apr_(flow)",apr="b\"x",device="d2"}"#.to_string(),
            ]
        );
        let body = r#"{"status":"success","data":[
            {"__name__":"apr_chlorine","apr":"a","device":"d1","db":"apr","region":"Maule"},
            {"__name__":"apr_ph","apr":"a","device":"d1"},
            {"__name__":"other_metric","apr":"a","device":"d1"},
            {"__name__":"apr_flow","device":"d2"}]}"#;
        assert_eq!(
            parse_series_list(body).expect("parses"),
            vec![
                ("a".to_string(), "d1".to_string(), Metric::Chlorine),
                ("a".to_string(), "d1".to_string(), Metric::Ph),
            ]
        );
        let err = parse_series_list("<html>proxy error</html>").expect_err("not JSON");
        assert!(err.to_string().contains("series list"), "{err}");
    }

    #[test]
    fn tags_are_escaped_for_line_protocol() {
        assert_eq!(escape_tag("a b,c=d"), "a\\ b\\,c\\=d");
    }

    #[test]
    fn buckets_start_on_multiples_of_the_step_and_hold_the_mean() {
        let p = |t_ms, v| Point { t_ms, v };
        let got = bucket_means(&[p(-1, 4.0), p(0, 1.0), p(999, 3.0), p(1000, 5.0)], 1000);
        assert_eq!(got, vec![p(-1000, 4.0), p(0, 2.0), p(1000, 5.0)]);
    }

    #[test]
    fn bucket_means_are_sqlites_avg_to_the_bit() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE r(t INTEGER NOT NULL, v REAL NOT NULL)")
            .unwrap();
        let points: Vec<Point> = (0..20_000i64)
            .map(|i| Point {
                t_ms: i * 7_919 - 50_000_000,
                v: 1e3 * (i as f64 / 7.0).sin() + 0.1 * i as f64 + 1e-7,
            })
            .collect();
        for p in &points {
            conn.execute(
                "INSERT INTO r(t, v) VALUES (?1, ?2)",
                rusqlite::params![p.t_ms, p.v],
            )
            .unwrap();
        }
        for step in [60_000i64, 900_000, 3_600_000] {
            let sqlite: Vec<Point> = conn
                .prepare(
                    "SELECT t - (((t % ?1) + ?1) % ?1) AS b, AVG(v) FROM r GROUP BY b ORDER BY b",
                )
                .unwrap()
                .query_map([step], |r| {
                    Ok(Point {
                        t_ms: r.get(0)?,
                        v: r.get(1)?,
                    })
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(bucket_means(&points, step), sqlite, "step {step}");
        }
    }

    #[test]
    fn export_lines_parse_and_name_their_metric() {
        let s = parse_export(
            "{\"metric\":{\"__name__\":\"apr_chlorine\",\"apr\":\"a\",\"device\":\"d\"},\
             \"values\":[0.5,0.25],\"timestamps\":[1000,2000]}\n",
        )
        .unwrap();
        assert_eq!(s[0].timestamps, vec![1000, 2000]);
        assert_eq!(metric_of(&s[0].metric), Some(Metric::Chlorine));
    }

    #[test]
    fn times_are_sent_as_seconds_with_milliseconds() {
        assert_eq!(seconds(1_764_064_800_123), "1764064800.123");
        assert_eq!(seconds(-1), "-0.001");
    }
}
