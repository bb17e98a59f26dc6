//! Helpers shared by the end-to-end tests and the load tool: free ports, a
//! real mosquitto started on loopback, and API calls.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback address (bind port 0, read it, release it).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr")
}

/// Where Debian puts a program that may not be on PATH.
pub fn which(prog: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(prog);
        if p.exists() {
            return p;
        }
    }
    panic!("{prog} not found: run `bash tests/setup.sh` (installs it from Debian)");
}

/// A login for mosquitto's password file.
pub struct MqttUser {
    /// Username.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A real mosquitto on a free loopback port, killed on drop.
pub struct Mosquitto {
    /// Its address.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto with the project's ACL pattern file
    /// (`gateway/mosquitto/acl`, the gateway user renamed to `gateway_user`)
    /// and a password file for `users`. `anonymous` allows logins without
    /// credentials (the load tool only).
    pub fn start(users: &[MqttUser], gateway_user: &str, anonymous: bool) -> Mosquitto {
        Mosquitto::start_with(users, gateway_user, anonymous, None)
    }

    /// [`Mosquitto::start`] with MQTT over TLS only: the listener presents
    /// `tls = (certificate chain, key)` (PEM files).
    pub fn start_tls(users: &[MqttUser], gateway_user: &str, tls: (&Path, &Path)) -> Mosquitto {
        Mosquitto::start_with(users, gateway_user, false, Some(tls))
    }

    fn start_with(
        users: &[MqttUser],
        gateway_user: &str,
        anonymous: bool,
        tls: Option<(&Path, &Path)>,
    ) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let passwd = dir.path().join("passwd");
        // mosquitto_passwd -U hashes a plain "user:password" file in place.
        let plain: String = users
            .iter()
            .map(|u| format!("{}:{}\n", u.username, u.password))
            .collect();
        std::fs::write(&passwd, plain).expect("write passwd");
        let st = Command::new(which("mosquitto_passwd"))
            .arg("-U")
            .arg(&passwd)
            .status()
            .expect("run mosquitto_passwd");
        assert!(st.success(), "mosquitto_passwd -U failed");
        let acl_src = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway/mosquitto/acl"),
        )
        .expect("read gateway/mosquitto/acl");
        let acl = dir.path().join("acl");
        let mut acl_text = acl_src.replace("user gateway", &format!("user {gateway_user}"));
        if anonymous {
            acl_text = format!("topic readwrite apr/#\n{acl_text}");
        }
        std::fs::write(&acl, acl_text).expect("write acl");
        let addr = free_addr();
        let conf = dir.path().join("mosquitto.conf");
        let tls_conf = tls.map_or(String::new(), |(cert, key)| {
            format!("certfile {}\nkeyfile {}\n", cert.display(), key.display())
        });
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\n{tls_conf}allow_anonymous {anonymous}\npassword_file {}\nacl_file {}\n\
                 persistence false\nmessage_size_limit 262144\nmax_queued_messages 1000000\n\
                 max_inflight_messages 1000\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n",
                addr.port(),
                passwd.display(),
                acl.display()
            ),
        )
        .expect("write conf");
        let child = spawn_mosquitto(&conf, addr);
        Mosquitto { addr, child, dir }
    }

    /// Stops this mosquitto and starts it again on the same port with the
    /// files as they are now in [`Mosquitto::dir`] (after editing the ACL).
    pub fn restart_with_acl(mut self) -> Mosquitto {
        self.stop(false);
        self.start_again();
        self
    }

    /// The temp dir holding its config.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops this mosquitto: SIGTERM and wait (`graceful`), or SIGKILL.
    pub fn stop(&mut self, graceful: bool) {
        if graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same files (after [`Mosquitto::stop`]).
    pub fn start_again(&mut self) {
        self.child = spawn_mosquitto(&self.dir.path().join("mosquitto.conf"), self.addr);
    }
}

/// Starts mosquitto with `conf` and waits until it accepts on `addr`.
fn spawn_mosquitto(conf: &Path, addr: SocketAddr) -> Child {
    let child = Command::new(which("mosquitto"))
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not start on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real VictoriaMetrics (Debian's `victoria-metrics`) on a free loopback
/// port with its data in a temp dir, killed on drop. Started the way the
/// external series engine needs it: `-dedup.minScrapeInterval=1ms` (one
/// sample per series and millisecond, so a re-sent reading is stored once),
/// `-search.latencyOffset=0s` (a sample is searchable once indexed, not
/// 30 s later), and a retention long enough for any test's timestamps.
pub struct VictoriaMetrics {
    /// Its address.
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl VictoriaMetrics {
    /// Starts it and waits until `/health` answers.
    pub fn start() -> VictoriaMetrics {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = free_addr();
        let child = Command::new(which("victoria-metrics"))
            .arg(format!("-httpListenAddr={addr}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("data").display()
            ))
            .arg("-retentionPeriod=100y")
            .arg("-search.latencyOffset=0s")
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start victoria-metrics");
        let vm = VictoriaMetrics {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if vm.get_blocking("/health").is_some_and(|b| b.trim() == "OK") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "victoria-metrics did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        vm
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get_blocking(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.lines()
            .next()
            .is_some_and(|l| l.contains(" 200 "))
            .then(|| body.to_owned())
    }

    /// Makes every accepted sample searchable now.
    pub async fn flush(&self, http: &reqwest::Client) {
        let r = http
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .expect("force_flush");
        assert!(r.status().is_success(), "force_flush: {}", r.status());
    }

    /// Raw samples of the series matching `selector` between two times (ms),
    /// as `/api/v1/export` answers them: one JSON object per series.
    pub async fn export(
        &self,
        http: &reqwest::Client,
        selector: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<serde_json::Value> {
        let text = http
            .get(format!("{}/api/v1/export", self.url()))
            .query(&[
                ("match[]", selector.to_owned()),
                ("start", format!("{:.3}", from_ms as f64 / 1000.0)),
                ("end", format!("{:.3}", to_ms as f64 / 1000.0)),
            ])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("an export line is JSON"))
            .collect()
    }

    /// `/api/v1/query_range`'s `data.result` for `query`, or panics naming
    /// the query when VictoriaMetrics refuses it.
    pub async fn query_range(
        &self,
        http: &reqwest::Client,
        query: &str,
        start_s: i64,
        end_s: i64,
        step_s: i64,
    ) -> Vec<serde_json::Value> {
        let resp = http
            .get(format!("{}/api/v1/query_range", self.url()))
            .query(&[
                ("query", query.to_owned()),
                ("start", start_s.to_string()),
                ("end", end_s.to_string()),
                ("step", step_s.to_string()),
                ("nocache", "1".to_owned()),
            ])
            .send()
            .await
            .expect("query_range");
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.expect("query_range body");
        assert!(status.is_success(), "query_range {query}: {status} {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET a JSON document with a bearer token; returns status and body.
pub async fn get_json(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("HTTP body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, body)
}

/// GET a text document (for /metrics).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .send()
        .await
        .expect("HTTP request")
        .text()
        .await
        .expect("HTTP body")
}

/// Reads one sample from Prometheus text: the value of the line that starts
/// with `series` exactly (name and labels), or 0 when absent.
pub fn prom_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`
/// naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates gateway user `username` for `aprs` and returns its API token.
pub fn gateway_token<R: apr_server::store::Registry + ?Sized>(
    registry: &R,
    username: &str,
    aprs: Vec<String>,
) -> String {
    use apr_server::auth::{self, NewUser, Role};
    auth::create_user(
        registry,
        &NewUser {
            username: username.into(),
            role: Role::Gateway,
            password: None,
            aprs,
            region: None,
        },
    )
    .expect("gateway user");
    auth::create_token(registry, username, None).expect("gateway token")
}

/// Creates engineer `username` (reads every APR) and returns its API token.
pub fn reader_token<R: apr_server::store::Registry + ?Sized>(
    registry: &R,
    username: &str,
) -> String {
    use apr_server::auth::{self, NewUser, Role};
    auth::create_user(
        registry,
        &NewUser {
            username: username.into(),
            role: Role::Engineer,
            password: Some("a long enough password for tests".into()),
            aprs: vec![],
            region: None,
        },
    )
    .expect("engineer");
    auth::create_token(registry, username, None).expect("engineer token")
}
