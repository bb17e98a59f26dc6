//! The dashboards in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver, `fantoccini`) against the demo started
//! in-process, every part real (broker, gateways, server, alert engine).
//!
//! One scenario per role, in one demo: the operator signs in, sees a
//! chlorine alert raised by packs published over MQTT appear live (SSE),
//! acknowledges it with a comment and the API shows it acknowledged; the
//! operator is refused another APR's page with a Spanish error page; the
//! engineer exports the series CSV and the EPANET pattern and both parse;
//! the GORE view shows the programme figures of CONTRACT §3; an APR name
//! with markup renders as text; a form without the CSRF token is refused.
//! Screenshots of each role's main page at 360 and 1280 px go to
//! `artifacts/screenshots/`, and each main page's weight (transferred
//! bytes, measured in the browser) is asserted ≤ 100 KB.
//!
//! Needs `chromium` and `chromium-driver` (`bash tests/setup.sh`). Run:
//! `cargo test --release --test ui_browser -- --nocapture`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apr::demo::{start, Demo, DemoOptions};
use fantoccini::{Client, ClientBuilder, Locator};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Value};
use support::{eventually, free_addr, get_json, which};

/// Most bytes a main page may transfer (HTML, stylesheet, script).
const MAX_PAGE_BYTES: f64 = 100.0 * 1024.0;
const COMMENT: &str = "Revisado en terreno: se reinició la bomba dosificadora";

/// chromedriver on a free loopback port, killed on drop.
struct Chromedriver {
    url: String,
    child: Child,
    profile: tempfile::TempDir,
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        let port = free_addr().port();
        let child = Command::new(which("chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{url}/status");
        eventually(Duration::from_secs(20), "chromedriver ready", || {
            let (http, status) = (http.clone(), status.clone());
            async move {
                let r = http.get(&status).send().await.ok()?;
                let v: Value = r.json().await.ok()?;
                (v["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        Chromedriver {
            url,
            child,
            profile: tempfile::tempdir().expect("profile dir"),
        }
    }

    async fn browser(&self) -> Client {
        let profile = self.profile.path().join(format!("p{}", nanos()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium").to_string_lossy(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.display()),
                    "--window-size=1280,1000",
                ],
            },
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session with Chromium")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn now_s() -> f64 {
    nanos() as f64 / 1e9
}

fn screenshots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/screenshots");
    std::fs::create_dir_all(&d).expect("artifacts/screenshots");
    d
}

/// Signs in through the login form and waits for the role's home.
async fn sign_in(c: &Client, base: &str, username: &str, password: &str, home: &str) {
    c.goto(&format!("{base}/login")).await.expect("login page");
    c.find(Locator::Id("username"))
        .await
        .expect("username field")
        .send_keys(username)
        .await
        .expect("type username");
    c.find(Locator::Id("password"))
        .await
        .expect("password field")
        .send_keys(password)
        .await
        .expect("type password");
    c.find(Locator::Css("main form button"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("sign in");
    let want = home.to_owned();
    eventually(Duration::from_secs(15), "the home page after login", || {
        let (c, want) = (c.clone(), want.clone());
        async move {
            let u = c.current_url().await.ok()?;
            u.path().starts_with(&want).then_some(())
        }
    })
    .await;
}

async fn sign_out(c: &Client, base: &str) {
    c.delete_all_cookies().await.expect("clear cookies");
    c.goto(&format!("{base}/login")).await.expect("login page");
}

async fn session_cookie(c: &Client) -> String {
    let v = c
        .get_named_cookie("apr_session")
        .await
        .expect("the session cookie");
    format!("apr_session={}", v.value())
}

/// Screenshots of the current page at 360 and 1280 px; answers the
/// viewport widths the browser reported.
async fn screenshots(c: &Client, name: &str) -> Vec<i64> {
    let mut widths = Vec::new();
    for w in [360u32, 1280] {
        c.set_window_size(w, 1400).await.expect("window size");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let inner = c
            .execute("return window.innerWidth;", vec![])
            .await
            .expect("innerWidth");
        widths.push(inner.as_i64().unwrap_or(0));
        let png = c.screenshot().await.expect("screenshot");
        std::fs::write(screenshots_dir().join(format!("{name}-{w}.png")), png)
            .expect("write screenshot");
    }
    c.set_window_size(1280, 1000).await.expect("window size");
    widths
}

/// The bytes a page load transferred (document, stylesheet, scripts), from
/// the browser's Resource Timing entries; a cached or not yet finished
/// entry counts with its decoded size.
async fn page_weight(c: &Client, url: &str) -> f64 {
    // A fresh load with the cache bypassed for the document; the stylesheet
    // counts whole even when the cache served it.
    c.goto(url).await.expect("load");
    let v = c
        .execute(
            "const n = performance.getEntriesByType('navigation')[0];\
             let total = n.transferSize || n.decodedBodySize || document.documentElement.outerHTML.length;\
             for (const r of performance.getEntriesByType('resource')) {\
               if (r.initiatorType === 'other' || r.name.includes('/eventos')) continue;\
               total += Math.max(r.transferSize, r.encodedBodySize, r.decodedBodySize);\
             }\
             return total;",
            vec![],
        )
        .await
        .expect("performance entries");
    v.as_f64().expect("a number")
}

async fn text_of(c: &Client) -> String {
    c.source().await.expect("page source")
}

async fn publish_chlorine_alert(demo: &Demo, apr: &str) -> String {
    // The network device measures no chlorine, so the simulated site sends
    // nothing on this series that would clear the condition.
    let dev = demo
        .credentials
        .devices
        .iter()
        .find(|d| d.apr == apr && d.device == "red")
        .expect("the network device of the operator's APR")
        .clone();
    let mut o = MqttOptions::new(
        format!("ui-test-{}", nanos() % 1_000_000),
        demo.mqtt_addr.ip().to_string(),
        demo.mqtt_addr.port(),
    );
    o.set_credentials(dev.mqtt_username.clone(), dev.mqtt_password.clone());
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // The engine raises a level alert only after the condition held for
    // the APR's `min_duration_s` of device time (600 s by default,
    // `limits::Limits`): three packs of 0.05 mg/l spanning 700 s.
    let now = now_s().floor();
    let topic = format!("apr/{apr}/{}/up", dev.device);
    for back in [700.0, 350.0, 0.0] {
        let pack = json!([{"bn": format!("urn:apr:{apr}:{}:", dev.device), "bt": now - back,
            "n": "chlorine", "u": "mg/l", "v": 0.05}]);
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, pack.to_string())
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    dev.device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_engineers_gore_reviewers_and_admins_use_the_dashboards_in_chromium() {
    let demo = start(DemoOptions {
        http: "127.0.0.1:0".parse().unwrap(),
        mqtt: "127.0.0.1:0".parse().unwrap(),
        history_days: 2,
        ..DemoOptions::default()
    })
    .await
    .expect("demo starts");
    let base = format!("http://{}", demo.http_addr);
    let http = reqwest::Client::new();
    let progress = demo.progress.clone();
    eventually(
        Duration::from_secs(120),
        "two days of history stored",
        || {
            let p = progress.clone();
            async move {
                (p.sites_history_done
                    .load(std::sync::atomic::Ordering::Relaxed)
                    == 56)
                    .then_some(())
            }
        },
    )
    .await;
    let user = |role: &str| demo.credentials.user(role).expect(role).clone();
    let (operator, engineer, gore, admin) = (
        user("operator"),
        user("engineer"),
        user("gore"),
        user("admin"),
    );
    let apr = operator.aprs.clone().expect("operator APRs")[0].clone();
    let other_apr = {
        let (_, list) = get_json(&http, &format!("{base}/api/v1/aprs"), Some(&admin.token)).await;
        list.as_array()
            .expect("APRs")
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .find(|id| *id != apr)
            .expect("another APR")
    };

    let driver = Chromedriver::start().await;
    let c = driver.browser().await;
    let mut weights = Vec::new();

    // ── Operator ─────────────────────────────────────────────────────────
    sign_in(
        &c,
        &base,
        &operator.username,
        &operator.password,
        "/operador",
    )
    .await;
    let html = text_of(&c).await;
    assert!(html.contains("lang=\"es-CL\""), "Spanish by default");
    assert!(
        html.contains("Sin alertas abiertas") || html.contains("alerts"),
        "{html}"
    );
    let w = screenshots(&c, "operator").await;
    assert_eq!(w, [360, 1280], "viewport widths");
    weights.push((
        "operator /operador",
        page_weight(&c, &format!("{base}/operador")).await,
    ));

    // An alert raised over MQTT shows up on the open page by itself (SSE).
    c.goto(&format!("{base}/operador"))
        .await
        .expect("operator page");
    let device = publish_chlorine_alert(&demo, &apr).await;
    let alerts_url = format!("{base}/api/v1/alerts?apr={apr}&kind=chlorine_low");
    let alert_id = eventually(
        Duration::from_secs(30),
        "a chlorine_low alert in the API",
        || {
            let (http, url, token) = (http.clone(), alerts_url.clone(), operator.token.clone());
            async move {
                let (_, v) = get_json(&http, &format!("{url}&state=open"), Some(&token)).await;
                v.as_array()?.first()?["id"].as_i64()
            }
        },
    )
    .await;
    let form_action = format!("/alertas/{alert_id}/reconocer");
    eventually(
        Duration::from_secs(30),
        "the alert on the page (live update)",
        || {
            let (c, action) = (c.clone(), form_action.clone());
            async move {
                let src = c.source().await.ok()?;
                src.contains(&action).then_some(())
            }
        },
    )
    .await;
    let html = text_of(&c).await;
    assert!(
        html.contains("Cloro") || html.contains("cloro"),
        "the alert names chlorine"
    );
    screenshots(&c, "operator-alert").await;

    // CSRF: the same form without its token is refused (403, Spanish page).
    let cookie = session_cookie(&c).await;
    let r = http
        .post(format!("{base}{form_action}"))
        .header("cookie", &cookie)
        .form(&[("comment", "sin token")])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("El formulario expiró"), "{body}");

    // Acknowledge with a comment, in the browser.
    let form = c
        .find(Locator::Css(&format!("form[action^='{form_action}']")))
        .await
        .expect("the acknowledge form");
    form.find(Locator::Css("input[name='comment']"))
        .await
        .expect("comment field")
        .send_keys(COMMENT)
        .await
        .expect("type comment");
    form.find(Locator::Css("button"))
        .await
        .expect("acknowledge button")
        .click()
        .await
        .expect("acknowledge");
    let acked = eventually(
        Duration::from_secs(15),
        "the alert acknowledged in the API",
        || {
            let (http, url, token) = (http.clone(), alerts_url.clone(), operator.token.clone());
            async move {
                let (_, v) = get_json(&http, &url, Some(&token)).await;
                v.as_array()?
                    .iter()
                    .find(|a| a["id"] == alert_id && a["state"] == "acknowledged")
                    .cloned()
            }
        },
    )
    .await;
    assert_eq!(acked["acknowledged_by"], operator.username);
    assert_eq!(acked["acknowledged_comment"], COMMENT);
    assert_eq!(acked["device"], device);
    let html = text_of(&c).await;
    assert!(
        !html.contains(&form_action),
        "the acknowledged alert left the open list"
    );

    // Another APR's page: the Spanish 403 page, no stack trace.
    c.goto(&format!("{base}/operador/{other_apr}"))
        .await
        .expect("goto");
    let html = text_of(&c).await;
    assert!(html.contains("No tiene acceso a esta APR"), "{html}");
    for leak in ["panicked", "RUST_BACKTRACE", "src/", "stack backtrace"] {
        assert!(!html.contains(leak), "{leak} on the error page");
    }
    let r = http
        .get(format!("{base}/operador/{other_apr}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    screenshots(&c, "operator-forbidden").await;
    sign_out(&c, &base).await;

    // ── Engineer ─────────────────────────────────────────────────────────
    // An APR name with markup (not the operator's) renders as text.
    let mut rec = demo
        .state
        .registry()
        .apr(&other_apr)
        .unwrap()
        .expect("the other APR");
    rec.name = "APR <script>alert('xss')</script> <b>Prueba</b>".into();
    let region = demo
        .state
        .registry()
        .regions()
        .unwrap()
        .into_iter()
        .find(|r| r.id == rec.region)
        .unwrap();
    demo.state
        .registry()
        .upsert_fleet(&[region], &[rec])
        .unwrap();

    sign_in(
        &c,
        &base,
        &engineer.username,
        &engineer.password,
        "/ingenieria",
    )
    .await;
    let html = text_of(&c).await;
    assert!(
        !html.contains("<script>alert('xss')"),
        "markup in a name is escaped"
    );
    assert!(
        !html.contains("<b>Prueba</b>"),
        "markup in a name is escaped"
    );
    assert!(
        html.contains("&lt;script&gt;") || html.contains("&#60;script&#62;"),
        "the escaped name is on the page"
    );
    assert!(
        c.get_alert_text().await.is_err(),
        "no script from a name ran (no alert dialog)"
    );
    let shown = c
        .find(Locator::Css(&format!("a[href='/ingenieria/{other_apr}']")))
        .await
        .expect("the APR's row")
        .text()
        .await
        .unwrap();
    assert!(shown.contains("<script>"), "shown as text: {shown}");
    screenshots(&c, "engineer").await;
    weights.push((
        "engineer /ingenieria",
        page_weight(&c, &format!("{base}/ingenieria")).await,
    ));

    c.goto(&format!("{base}/ingenieria/{apr}?metric=flow"))
        .await
        .expect("APR page");
    screenshots(&c, "engineer-apr").await;
    let cookie = session_cookie(&c).await;
    let csv_href = c
        .find(Locator::Css("a[href*='serie.csv']"))
        .await
        .expect("the CSV export link")
        .attr("href")
        .await
        .unwrap()
        .expect("href");
    let r = http
        .get(format!("{base}{csv_href}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().await.unwrap();
    let rows = apr_dashboards::export::parse_csv(&csv).expect("the CSV parses");
    assert_eq!(rows[0], apr_dashboards::export::SERIES_CSV_HEADER);
    assert!(
        rows.len() > 100,
        "a week of flow readings: {} rows",
        rows.len()
    );
    for row in &rows[1..] {
        assert_eq!(row[0], apr);
        assert_eq!(row[1], "flow");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&row[3]).is_ok(),
            "{row:?}"
        );
        assert!(row[4].parse::<f64>().is_ok(), "{row:?}");
    }
    let inp_href = c
        .find(Locator::Css("a[href*='patron.inp']"))
        .await
        .expect("the EPANET export link")
        .attr("href")
        .await
        .unwrap()
        .expect("href");
    let r = http
        .get(format!("{base}{inp_href}"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inp = r.text().await.unwrap();
    let patterns = apr_dashboards::export::parse_epanet_patterns(&inp).expect("[PATTERNS] parses");
    assert_eq!(patterns.len(), 1, "{inp}");
    let (id, m) = &patterns[0];
    assert_eq!(id, &apr);
    assert_eq!(m.len(), 24);
    let mean = m.iter().sum::<f64>() / 24.0;
    assert!((mean - 1.0).abs() < 0.01, "multipliers average 1: {mean}");
    assert!(m.iter().all(|x| *x >= 0.0));
    let kpis = http
        .get(format!("{base}/ingenieria/{apr}/indicadores.csv"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let kpi_rows = apr_dashboards::export::parse_csv(&kpis).expect("the KPI CSV parses");
    assert_eq!(kpi_rows[0], apr_dashboards::export::KPI_CSV_HEADER);
    sign_out(&c, &base).await;

    // ── GORE reviewer (region) ───────────────────────────────────────────
    sign_in(&c, &base, &gore.username, &gore.password, "/gore").await;
    let (_, summary) = get_json(
        &http,
        &format!(
            "{base}/api/v1/summary?region={}",
            gore.region.clone().unwrap()
        ),
        Some(&gore.token),
    )
    .await;
    let html = text_of(&c).await;
    let n = |v: &Value| apr_dashboards::format::int(v.as_i64().unwrap());
    let pesos = |v: &Value| apr_dashboards::format::clp(v.as_u64().unwrap());
    for fig in [
        n(&summary["beneficiaries"]),
        pesos(&summary["gore_contribution_clp"]),
        pesos(&summary["public_investment_clp"]),
    ] {
        assert!(html.contains(&fig), "{fig} on the GORE page");
    }
    screenshots(&c, "gore").await;
    weights.push(("gore /gore", page_weight(&c, &format!("{base}/gore")).await));
    c.goto(&format!("{base}/gore?region=maule")).await.unwrap();
    assert!(text_of(&c).await.contains("No tiene acceso"));
    sign_out(&c, &base).await;

    // ── Admin: the whole programme (CONTRACT §3) ─────────────────────────
    sign_in(&c, &base, &admin.username, &admin.password, "/ingenieria").await;
    screenshots(&c, "admin-home").await;
    weights.push((
        "admin /ingenieria",
        page_weight(&c, &format!("{base}/ingenieria")).await,
    ));
    c.goto(&format!("{base}/gore")).await.unwrap();
    let html = text_of(&c).await;
    for fig in ["56", "48", "21.092", "$ 5.071.159.500", "$ 52.740.058.800"] {
        assert!(
            html.contains(&format!("<b>{fig}</b>")),
            "{fig} on the programme page"
        );
    }
    screenshots(&c, "gore-programme").await;
    weights.push((
        "admin /gore",
        page_weight(&c, &format!("{base}/gore")).await,
    ));
    c.goto(&format!("{base}/admin")).await.unwrap();
    screenshots(&c, "admin").await;
    weights.push((
        "admin /admin",
        page_weight(&c, &format!("{base}/admin")).await,
    ));

    for (page, bytes) in &weights {
        eprintln!("page weight {page}: {:.1} KB", bytes / 1024.0);
    }
    for (page, bytes) in &weights {
        assert!(*bytes <= MAX_PAGE_BYTES, "{page} weighs {bytes} bytes");
    }
    c.close().await.expect("close the browser");
    drop(driver);
    demo.shutdown().await.expect("clean shutdown");
}
