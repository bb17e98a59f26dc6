//! The GORE page and its printable report: a region (GORE reviewers, their
//! own; engineers and admins any with `?region=`, or the whole programme)
//! with the figures of `GET /api/v1/summary` computed the same way
//! ([`crate::summary::summarize`] plus the open alerts of the alert store),
//! its APRs, and the interventions (none recorded yet: the page says so).

use std::collections::HashMap;

use apr_dashboards::model::{ComponentFlags, ErrorKind, GoreAprRow, GorePage, SummaryView};
use axum::extract::Query;
use axum::response::Response;

use super::{apr_ref, blocking, local, Ctx, Page};
use crate::auth::{Role, Scope};
use crate::error::{Error, Result};
use crate::store::AprRecord;
use crate::summary::summarize;

const READERS: [Role; 3] = [Role::Gore, Role::Engineer, Role::Admin];

async fn build(ctx: &Ctx, q: &HashMap<String, String>) -> std::result::Result<GorePage, Response> {
    let p = ctx.principal()?.clone();
    ctx.require(&p, &READERS)?;
    let region = match (&p.scope, q.get("region").filter(|r| !r.is_empty())) {
        (Scope::Region(own), Some(r)) if r != own => return Err(ctx.error(ErrorKind::Forbidden)),
        (Scope::Region(own), _) => Some(own.clone()),
        (_, r) => r.cloned(),
    };
    let ui = ctx.ui.clone();
    let report_q = region
        .as_ref()
        .map(|r| format!("?region={r}"))
        .unwrap_or_default();
    let page = blocking(move || -> Result<GorePage> {
        let registry = ui.app().registry();
        let regions = registry.regions()?;
        let region_name = match &region {
            Some(r) => Some(
                regions
                    .iter()
                    .find(|x| x.id == *r)
                    .map(|x| x.name.clone())
                    .ok_or_else(|| Error::NotFound(format!("region '{r}' does not exist")))?,
            ),
            None => None,
        };
        let open: HashMap<String, u64> = ui
            .app()
            .alerts()
            .open_alerts_by_apr()?
            .into_iter()
            .collect();
        let mut aprs: Vec<AprRecord> = registry
            .aprs()?
            .into_iter()
            .filter(|a| p.scope.allows_apr(a) && region.as_ref().is_none_or(|r| a.region == *r))
            .collect();
        aprs.sort_by_key(|a| a.name.to_lowercase());
        let s = summarize(&aprs);
        let open_alerts = aprs
            .iter()
            .map(|a| open.get(&a.id).copied().unwrap_or(0))
            .sum();
        Ok(GorePage {
            region: region_name,
            summary: SummaryView {
                aprs: s.aprs,
                comunas: s.comunas,
                regions: s.regions,
                beneficiaries: s.beneficiaries,
                gore_contribution_clp: s.gore_contribution_clp,
                public_investment_clp: s.public_investment_clp,
                open_alerts,
                flagged: [0; 4],
            },
            aprs: aprs
                .iter()
                .map(|a| GoreAprRow {
                    apr: apr_ref(a, &regions),
                    beneficiaries: a.beneficiaries,
                    gore_contribution_clp: a.gore_contribution_clp,
                    public_investment_clp: a.public_investment_clp,
                    flags: ComponentFlags::default(),
                    open_alerts: u32::try_from(open.get(&a.id).copied().unwrap_or(0))
                        .unwrap_or(u32::MAX),
                })
                .collect(),
            interventions: Vec::new(),
            generated_at: local(chrono::Utc::now().timestamp_millis()),
            report_url: format!("/gore/informe{report_q}"),
        })
    })
    .await
    .map_err(|e| ctx.fail(e))?;
    Ok(page)
}

/// `GET /gore[?region=…]`.
pub(super) async fn page(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    async fn inner(ctx: &Ctx, q: &HashMap<String, String>) -> Page {
        let page = build(ctx, q).await?;
        Ok(ctx.page(apr_dashboards::render_gore(&ctx.layout(), &page)))
    }
    inner(&ctx, &q).await.unwrap_or_else(|r| r)
}

/// `GET /gore/informe[?region=…]`: the printable report.
pub(super) async fn report(ctx: Ctx, Query(q): Query<HashMap<String, String>>) -> Response {
    async fn inner(ctx: &Ctx, q: &HashMap<String, String>) -> Page {
        let page = build(ctx, q).await?;
        Ok(ctx.page(apr_dashboards::render_gore_report(&ctx.layout(), &page)))
    }
    inner(&ctx, &q).await.unwrap_or_else(|r| r)
}
