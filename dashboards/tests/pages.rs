//! The pages as a browser gets them: escaping, CSRF fields, size, language,
//! and the catalogue behind every word.

mod fixtures;

use std::path::Path;

use apr_dashboards::i18n::has_message;
use apr_dashboards::pages::{nav_for, LIVE_ALERTS_JS};
use apr_dashboards::*;
use fixtures::*;

/// Every `<form …>…</form>` in `html`, as (opening tag, whole form).
fn forms(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<form") {
        let after = &rest[i..];
        let end = after.find("</form>").expect("an unclosed form") + "</form>".len();
        let open_end = after.find('>').unwrap() + 1;
        out.push((after[..open_end].to_string(), after[..end].to_string()));
        rest = &after[end..];
    }
    out
}

#[test]
fn a_name_containing_markup_renders_as_text_on_every_page() {
    for (page, html) in all_pages(EVIL) {
        assert!(!html.contains(EVIL), "{page}: raw markup from a name");
        assert!(!html.contains("<script>alert"), "{page}: raw script");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
                || html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{page}: the name is not shown escaped"
        );
    }
    let fragment = render_alert_list(
        Lang::EsCl,
        &AlertList {
            alerts: vec![AlertRow {
                kind: EVIL.into(),
                device: EVIL.into(),
                ..alerts(1).alerts[0].clone()
            }],
            csrf_token: TOKEN.into(),
        },
    );
    assert!(!fragment.contains(EVIL));
}

#[test]
fn every_post_form_carries_the_csrf_token_and_only_the_explorer_uses_get() {
    let mut pages = all_pages("ana");
    pages.push(("alert_fragment", render_alert_list(Lang::EsCl, &alerts(3))));
    let field = format!(r#"<input type="hidden" name="csrf_token" value="{TOKEN}">"#);
    let mut posts = 0;
    for (page, html) in &pages {
        for (open, form) in forms(html) {
            if open.contains(r#"method="post""#) {
                posts += 1;
                assert!(
                    form.contains(&field),
                    "{page}: a POST form without the token: {open}"
                );
            } else {
                assert!(
                    open.contains(r#"method="get""#),
                    "{page}: a form without an explicit method: {open}"
                );
                assert_eq!(*page, "engineer_apr", "{page}: unexpected GET form {open}");
                assert!(
                    !form.contains("csrf_token"),
                    "a token in a GET form leaks into URLs"
                );
            }
        }
    }
    // login, a language switch on 8 pages, logout on 7, 6 + 2 acks, DPD, admin's 8.
    assert!(posts > 30, "only {posts} POST forms found");
}

#[test]
fn each_main_page_with_the_56_apr_fleet_is_under_100_kb() {
    let mut report = Vec::new();
    for (page, html) in all_pages("ana") {
        report.push(format!("{page}: {} B", html.len()));
        assert!(html.len() < 100 * 1024, "{page} is {} bytes", html.len());
    }
    eprintln!("page sizes: {}", report.join(", "));
}

#[test]
fn spanish_is_the_default_and_english_is_selectable() {
    let es = render_operator(
        &layout(Role::Operator, "ana", "/operador"),
        &operator("ana"),
    );
    assert!(es.starts_with("<!doctype html>\n<html lang=\"es-CL\">"));
    assert!(es.contains("Alertas abiertas") && es.contains("Acusar recibo"));
    let mut l = layout(Role::Operator, "ana", "/operador");
    l.lang = Lang::En;
    let en = render_operator(&l, &operator("ana"));
    assert!(
        en.contains("<html lang=\"en\">")
            && en.contains("Open alerts")
            && en.contains("Acknowledge")
    );
    assert!(!en.contains("Acusar recibo"));
}

#[test]
fn the_operator_sees_levels_as_text_as_well_as_colour() {
    let html = render_operator(
        &layout(Role::Operator, "ana", "/operador"),
        &operator("ana"),
    );
    // chlorine 0.15 < 0.2 (warning), tank 18 % < 30 (warning), pressure unknown.
    assert!(html.contains(r#"<div class="tile lvl-warning">"#));
    assert!(html.contains(r#"<div class="tile lvl-unknown">"#));
    assert!(
        html.contains("Atención") && html.contains("Sin dato reciente") && html.contains("Normal")
    );
    assert!(html.contains("0,15") && html.contains("0,20 – 2,00 mg/L"));
}

#[test]
fn the_live_refresh_script_is_small_and_reads_its_urls_from_escaped_attributes() {
    let html = render_operator(
        &layout(Role::Operator, "ana", "/operador"),
        &operator("ana"),
    );
    assert!(
        LIVE_ALERTS_JS.len() < 2048,
        "{} bytes",
        LIVE_ALERTS_JS.len()
    );
    assert!(html.contains(r#"data-events="/operador/apr-00/eventos""#));
    assert!(html.contains(r#"data-fragment="/operador/apr-00/alertas""#));
    assert!(html.contains("new EventSource"));
    let mut page = operator("ana");
    page.live = None;
    let quiet = render_operator(&layout(Role::Operator, "ana", "/operador"), &page);
    assert!(!quiet.contains("<script"), "no script without live updates");
}

#[test]
fn the_alert_fragment_alone_is_the_list_with_its_forms() {
    let html = render_alert_list(Lang::EsCl, &alerts(2));
    assert!(!html.contains("<html") && !html.contains("<header"));
    assert_eq!(forms(&html).len(), 2);
    assert!(html.contains(r#"action="/operador/alertas/al-1/ack""#));
    assert!(html.contains("Cloro libre alto"));
    let none = render_alert_list(Lang::EsCl, &alerts(0));
    assert!(none.contains("No hay alertas abiertas."));
}

#[test]
fn the_gore_page_shows_the_programme_figures_in_chilean_notation() {
    let html = render_gore(&layout(Role::Admin, "ana", "/gore"), &gore("ana", None));
    for figure in ["56", "48", "21.092", "$ 5.071.159.500", "$ 52.740.058.800"] {
        assert!(
            html.contains(&format!("<b>{figure}</b>")),
            "missing {figure}"
        );
    }
    assert!(html.contains("Programa completo"));
    assert!(html.contains("Mejoró") && html.contains("96,50 %"));
    let report = render_gore_report(
        &layout(Role::Gore, "ana", "/gore/informe"),
        &gore("ana", Some("Biobío")),
    );
    assert!(report.contains("Región de Biobío") && report.contains("@media print"));
    assert!(!report.contains("<header") && forms(&report).is_empty());
}

#[test]
fn the_engineer_table_sorts_on_the_server_and_links_toggle_the_direction() {
    let page = engineer_overview("ana");
    let html = render_engineer_overview(&layout(Role::Engineer, "ana", "/ingenieria"), &page);
    assert!(html.contains(r#"aria-sort="ascending""#));
    assert!(
        html.contains(r#"href="/ingenieria?sort=chlorine&#38;dir=desc""#),
        "current column toggles"
    );
    assert!(html.contains(r#"href="/ingenieria?sort=name&#38;dir=asc""#));
    let sorted = apr_dashboards::pages::sort_rows(&page.rows, SortKey::ChlorineCompliance, false);
    let values: Vec<Option<f64>> = sorted.iter().map(|r| r.chlorine_compliance_pct).collect();
    let known: Vec<f64> = values.iter().flatten().copied().collect();
    assert!(known.windows(2).all(|w| w[0] <= w[1]));
    assert!(
        values.iter().skip(known.len()).all(Option::is_none),
        "missing values last"
    );
    // The rendered order follows the sort.
    let first = sorted[0].apr.name.clone();
    let last = sorted[55].apr.name.clone();
    assert!(html.find(&first).unwrap() < html.find(&last).unwrap());
}

#[test]
fn an_operator_outside_their_apr_gets_a_spanish_403_without_internals() {
    let html = render_error(
        &layout(Role::Operator, "ana", "/operador/apr-09"),
        &ErrorPage {
            kind: ErrorKind::Forbidden,
            request_id: None,
            home_url: "/operador".into(),
        },
    );
    assert!(html.contains("No tiene acceso a esta APR"));
    assert_eq!(ErrorKind::Forbidden.status(), 403);
    let plain = render_error_plain(ErrorKind::Internal);
    assert!(plain.contains("Error del servidor") && !plain.contains("panicked"));
}

#[test]
fn the_explorer_draws_a_year_of_minutes_within_two_points_per_pixel_column() {
    let page = engineer_apr("ana");
    let html = render_engineer_apr(&layout(Role::Engineer, "ana", "/ingenieria/apr-03"), &page);
    assert!(page.explorer.raw_points > 500_000);
    let caption_start = html.find("lecturas en el período").unwrap();
    let caption = &html[caption_start - 40..caption_start + 60];
    let drawn: usize = caption
        .split("; ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .replace('.', "")
        .parse()
        .unwrap();
    assert!(drawn <= 2 * 744 + 4, "{drawn} points drawn: {caption}");
}

/// Message ids written literally in the code and templates.
fn literal_ids() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["templates", "src", "src/pages"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    let mut ids = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for call in ["t.t(\"", "t.t1(\"", "t.t2(\"", "t.tn(\"", "t.code(\""] {
            for (i, _) in text.match_indices(call) {
                let rest = &text[i + call.len()..];
                let id = &rest[..rest.find('"').unwrap()];
                if call == "t.code(\"" {
                    continue; // a prefix; its keys are checked below
                }
                ids.push(id.to_string());
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn every_message_id_used_exists_in_both_catalogues() {
    let mut ids = literal_ids();
    assert!(ids.len() > 120, "the scan found only {} ids", ids.len());
    for r in Role::ALL {
        ids.push(r.message_id().into());
        ids.extend(nav_for(r).iter().map(|(_, id)| id.to_string()));
    }
    ids.extend(Severity::ALL.map(|s| s.message_id().to_string()));
    ids.extend(Level::ALL.map(|l| l.message_id().to_string()));
    ids.extend(LoginError::ALL.map(|e| e.message_id().to_string()));
    ids.extend(SortKey::ALL.map(|k| k.message_id().to_string()));
    ids.extend(Metric::ALL.map(|m| m.message_id()));
    for c in Component::ALL {
        ids.push(c.message_id().into());
        ids.push(format!("{}-short", c.message_id()));
    }
    for e in ErrorKind::ALL {
        ids.push(e.message_id().into());
        ids.push(format!("{}-detail", e.message_id()));
    }
    ids.extend(ALERT_KINDS.map(|k| format!("alert-kind-{}", k.replace('_', "-"))));
    let mut missing = Vec::new();
    for id in &ids {
        for lang in Lang::ALL {
            if !has_message(lang, id) {
                missing.push(format!("{}: {id}", lang.tag()));
            }
        }
    }
    assert!(missing.is_empty(), "missing messages: {missing:?}");
}

#[test]
fn both_catalogues_define_the_same_ids() {
    fn ids(ftl: &str) -> Vec<&str> {
        let mut v: Vec<&str> = ftl
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .filter_map(|l| l.split(" =").next())
            .collect();
        v.sort_unstable();
        v
    }
    assert_eq!(ids(i18n::ES_CL_FTL), ids(i18n::EN_FTL));
    assert_eq!(Lang::default(), Lang::EsCl);
}

#[test]
#[ignore = "writes every page to target/tmp/pages for a look in a browser; .ci/run runs it"]
fn every_page_is_written_to_target_tmp_for_a_look_in_a_browser() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages");
    std::fs::create_dir_all(&dir).unwrap();
    for (page, html) in all_pages("ana") {
        std::fs::write(dir.join(format!("{page}.html")), html).unwrap();
    }
    eprintln!("{}", dir.display());
}
