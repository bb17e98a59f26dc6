//! The admin page: users and their API tokens, devices and their MQTT
//! credentials, the APR registry and per-APR limit overrides, through the
//! same functions as the CLI and the API (`auth::create_user`,
//! `auth::create_token`, `device::add_device` / `upsert_device`,
//! `Registry::upsert_fleet`, the alert store's overrides and the alert
//! service's `set_limits`). A new secret (token, MQTT password) is shown
//! once, in the answer to the form that made it.
//!
//! Disabling a user clears its password and revokes its tokens; revoking a
//! token takes effect on its next request. Every change is written to the
//! audit log (`crate::audit`, via `ui`), whose latest entries the page
//! shows. Not yet possible: recording an intervention (the API has it);
//! that form answers with the 400 page.

use std::collections::{BTreeMap, HashMap};

use apr_dashboards::model::{
    AdminActions, AdminPage, AprRegistryRow, AuditRow, DeviceRow, ErrorKind, NewSecret,
    OverrideRow, TokenRow, UserRow,
};
use axum::extract::Path;
use axum::response::Response;
use axum::Form;
use serde_json::Value;

use super::{apr_ref, blocking, local, Ctx, Page, Ui};
use crate::audit::{self, AuditEntry, AuditQuery, Via};
use crate::auth::{self, NewUser, Role};
use crate::device;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::store::AprRecord;

/// Audit entries the page shows (the API lists them all).
const AUDIT_ROWS: usize = 50;

/// Records an audit entry of an admin-page action.
fn record(
    ui: &Ui,
    actor: &str,
    action: &str,
    apr: Option<&str>,
    target: impl Into<String>,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<()> {
    audit::record(
        ui.app().registry(),
        AuditEntry::now(actor, Via::Ui, action, apr, target, before, after),
    )
}

fn build(ui: &Ui, new_secret: Option<NewSecret>) -> Result<AdminPage> {
    let registry = ui.app().registry();
    let now = chrono::Utc::now().timestamp_millis();
    let regions = registry.regions()?;
    let revoked: std::collections::HashSet<String> = registry
        .tokens(None)?
        .into_iter()
        .filter(|t| t.revoked_ms.is_some())
        .map(|t| t.id)
        .collect();
    let tokens: Vec<_> = ui
        .db()
        .tokens()?
        .into_iter()
        .filter(|t| !revoked.contains(&t.id))
        .collect();
    let users = ui
        .db()
        .users()?
        .into_iter()
        .filter_map(|u| {
            let role: Role = u.role.parse().ok()?;
            let role = super::view_role(role)?;
            Some(UserRow {
                scope: match (&u.region, u.aprs.is_empty()) {
                    (Some(r), _) => r.clone(),
                    (None, false) => u.aprs.join(", "),
                    (None, true) => "—".into(),
                },
                tokens: tokens
                    .iter()
                    .filter(|t| t.username == u.username)
                    .map(|t| TokenRow {
                        id: t.id.clone(),
                        created_at: local(t.created_ms),
                        last_used: None,
                        revoke_action: format!("/admin/tokens/{}/revocar", t.id),
                    })
                    .collect(),
                issue_token_action: format!("/admin/usuarios/{}/token", u.username),
                disable_action: format!("/admin/usuarios/{}/desactivar", u.username),
                username: u.username,
                role,
            })
        })
        .collect();
    let devices = registry
        .devices(None)?
        .into_iter()
        .map(|d| DeviceRow {
            online: d.online(now),
            last_seen: d.last_seen_ms.map(local),
            rotate_action: format!("/admin/equipos/{}/{}/clave", d.apr, d.device),
            mqtt_username: d.mqtt_username,
            apr: d.apr,
            device: d.device,
        })
        .collect();
    let aprs = registry
        .aprs()?
        .iter()
        .map(|a| AprRegistryRow {
            apr: apr_ref(a, &regions),
            beneficiaries: a.beneficiaries,
            connections: a.connections,
            gore_contribution_clp: a.gore_contribution_clp,
            public_investment_clp: a.public_investment_clp,
        })
        .collect();
    let overrides = ui
        .app()
        .alerts()
        .limit_overrides(None)?
        .into_iter()
        .filter_map(|(apr, o)| {
            Some(OverrideRow {
                delete_action: format!("/admin/umbrales/{apr}/{}/eliminar", o.key),
                value: o.value.as_f64()?,
                key: o.key,
                set_by: o.set_by,
                set_at: local(o.set_at_ms),
                apr,
            })
        })
        .collect();
    let audit = registry
        .audit(&AuditQuery {
            limit: AUDIT_ROWS,
            ..AuditQuery::default()
        })?
        .into_iter()
        .map(|r| AuditRow {
            at: r.at,
            actor: r.actor,
            via: r.via,
            action: r.action,
            apr: r.apr.unwrap_or_default(),
            target: r.target,
            before: r.before.map(|v| v.to_string()).unwrap_or_default(),
            after: r.after.map(|v| v.to_string()).unwrap_or_default(),
        })
        .collect();
    Ok(AdminPage {
        audit,
        users,
        devices,
        aprs,
        overrides,
        override_keys: Limits::keys(),
        interventions: Vec::new(),
        actions: AdminActions {
            create_user: "/admin/usuarios".into(),
            create_device: "/admin/equipos".into(),
            upsert_apr: "/admin/aprs".into(),
            set_override: "/admin/umbrales".into(),
            create_intervention: "/admin/intervenciones".into(),
        },
        new_secret,
    })
}

async fn render(ctx: &Ctx, new_secret: Option<NewSecret>) -> Page {
    let ui = ctx.ui.clone();
    let page = blocking(move || build(&ui, new_secret))
        .await
        .map_err(|e| ctx.fail(e))?;
    Ok(ctx.page(apr_dashboards::render_admin(&ctx.layout(), &page)))
}

fn admin(ctx: &Ctx) -> std::result::Result<crate::auth::Principal, Response> {
    let p = ctx.principal()?.clone();
    ctx.require(&p, &[Role::Admin])?;
    Ok(p)
}

/// `GET /admin`.
pub(super) async fn page(ctx: Ctx) -> Response {
    async fn inner(ctx: &Ctx) -> Page {
        admin(ctx)?;
        render(ctx, None).await
    }
    inner(&ctx).await.unwrap_or_else(|r| r)
}

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or_default()
}

/// `POST /admin/usuarios`: `username`, `role`, `password`, `scope` (APR
/// ids separated by commas for operators, the region for GORE users).
pub(super) async fn create_user(ctx: Ctx, Form(f): Form<HashMap<String, String>>) -> Response {
    async fn inner(ctx: &Ctx, f: &HashMap<String, String>) -> Page {
        let p = admin(ctx)?;
        let role: Role = field(f, "role").parse().map_err(|e| ctx.fail(e))?;
        let scope = field(f, "scope");
        let list: Vec<String> = scope
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let user = NewUser {
            username: field(f, "username").to_owned(),
            role,
            password: f.get("password").cloned(),
            aprs: if matches!(role, Role::Operator | Role::Gateway) {
                list
            } else {
                Vec::new()
            },
            region: (role == Role::Gore && !scope.is_empty()).then(|| scope.to_owned()),
        };
        let ui = ctx.ui.clone();
        blocking(move || {
            let registry = ui.app().registry();
            auth::create_user(registry, &user)?;
            let after = registry.user(&user.username)?.map(|u| audit::user_view(&u));
            record(
                &ui,
                &p.user,
                "user.create",
                None,
                user.username.clone(),
                None,
                after,
            )
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other("/admin#users"))
    }
    inner(&ctx, &f).await.unwrap_or_else(|r| r)
}

/// `POST /admin/usuarios/{name}/token`: a new API token, shown once.
pub(super) async fn issue_token(ctx: Ctx, Path(name): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, name: String) -> Page {
        let p = admin(ctx)?;
        let ui = ctx.ui.clone();
        let n = name.clone();
        let token = blocking(move || {
            let registry = ui.app().registry();
            if registry.user(&n)?.is_none() {
                return Err(Error::NotFound(format!("user '{n}' does not exist")));
            }
            let token = auth::create_token(registry, &n, Some("admin"))?;
            let id = auth::token_id(&token);
            let after = registry.token(&id)?.map(|t| audit::token_view(&t));
            record(&ui, &p.user, "token.create", None, id, None, after)?;
            Ok(token)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        render(
            ctx,
            Some(NewSecret {
                subject: name,
                secret: token,
            }),
        )
        .await
    }
    inner(&ctx, name).await.unwrap_or_else(|r| r)
}

/// `POST /admin/equipos`: `apr`, `device`; the MQTT password is shown once.
pub(super) async fn create_device(ctx: Ctx, Form(f): Form<HashMap<String, String>>) -> Response {
    async fn inner(ctx: &Ctx, f: &HashMap<String, String>) -> Page {
        let p = admin(ctx)?;
        let (apr, dev) = (field(f, "apr").to_owned(), field(f, "device").to_owned());
        let ui = ctx.ui.clone();
        let creds = blocking(move || {
            let registry = ui.app().registry();
            if registry.apr(&apr)?.is_none() {
                return Err(Error::Invalid(format!("APR '{apr}' is not registered")));
            }
            let before = device::audit_view(registry, &apr, &dev)?;
            let creds =
                device::add_device(registry, &apr, &dev, device::DEFAULT_REPORT_INTERVAL_S)?;
            let after = device::audit_view(registry, &apr, &dev)?;
            let target = format!("{apr}/{dev}");
            record(
                &ui,
                &p.user,
                "device.create",
                Some(&apr),
                target,
                before,
                after,
            )?;
            Ok(creds)
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        render(
            ctx,
            Some(NewSecret {
                subject: format!("MQTT {}", creds.mqtt_username),
                secret: creds.mqtt_password,
            }),
        )
        .await
    }
    inner(&ctx, &f).await.unwrap_or_else(|r| r)
}

/// `POST /admin/equipos/{apr}/{device}/clave`: a new MQTT password (the
/// device's interval and config are kept), shown once.
pub(super) async fn rotate_device(ctx: Ctx, Path((apr, dev)): Path<(String, String)>) -> Response {
    async fn inner(ctx: &Ctx, apr: String, dev: String) -> Page {
        let p = admin(ctx)?;
        let ui = ctx.ui.clone();
        let (username, password) = blocking(move || {
            let registry = ui.app().registry();
            let d = registry
                .devices(Some(std::slice::from_ref(&apr)))?
                .into_iter()
                .find(|d| d.device == dev)
                .ok_or_else(|| {
                    Error::NotFound(format!("device '{dev}' of '{apr}' does not exist"))
                })?;
            let password = device::generate_password();
            device::upsert_device(
                registry,
                &apr,
                &dev,
                &d.mqtt_username,
                &password,
                d.report_interval_s,
                d.config,
            )?;
            let view = device::audit_view(registry, &apr, &dev)?;
            let target = format!("{apr}/{dev}");
            record(
                &ui,
                &p.user,
                "device.rotate",
                Some(&apr),
                target,
                view.clone(),
                view,
            )?;
            Ok((d.mqtt_username, password))
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        render(
            ctx,
            Some(NewSecret {
                subject: format!("MQTT {username}"),
                secret: password,
            }),
        )
        .await
    }
    inner(&ctx, apr, dev).await.unwrap_or_else(|r| r)
}

/// `POST /admin/aprs`: adds or updates an APR of an existing region (the
/// fields the form does not carry are kept, or default for a new APR).
pub(super) async fn upsert_apr(ctx: Ctx, Form(f): Form<HashMap<String, String>>) -> Response {
    async fn inner(ctx: &Ctx, f: &HashMap<String, String>) -> Page {
        let p = admin(ctx)?;
        let bad = || ctx.error(ErrorKind::BadRequest);
        let num = |k: &str| -> std::result::Result<u64, Response> {
            match field(f, k) {
                "" => Ok(0),
                v => v.parse().map_err(|_| bad()),
            }
        };
        let id = field(f, "id").to_owned();
        if !apr_wire::id::is_valid_id(&id) {
            return Err(bad());
        }
        let (name, comuna, region) = (
            field(f, "name").to_owned(),
            field(f, "comuna").to_owned(),
            field(f, "region").to_owned(),
        );
        if name.is_empty() || comuna.is_empty() || region.is_empty() {
            return Err(bad());
        }
        let (beneficiaries, connections) = (num("beneficiaries")?, num("connections")?);
        let (gore, investment) = (num("gore_contribution_clp")?, num("public_investment_clp")?);
        let ui = ctx.ui.clone();
        blocking(move || {
            let registry = ui.app().registry();
            let r = registry
                .regions()?
                .into_iter()
                .find(|r| r.id == region)
                .ok_or_else(|| Error::Invalid(format!("region '{region}' does not exist")))?;
            let old = registry.apr(&id)?;
            let rec = AprRecord {
                id,
                name,
                comuna,
                region,
                beneficiaries,
                connections,
                source: old
                    .as_ref()
                    .map_or_else(|| "pozo".into(), |o| o.source.clone()),
                capacity_l_s: old.as_ref().map_or(0.0, |o| o.capacity_l_s),
                storage_m3: old.as_ref().map_or(0.0, |o| o.storage_m3),
                gore_contribution_clp: gore,
                public_investment_clp: investment,
            };
            let target = rec.id.clone();
            registry.upsert_fleet(&[r], &[rec])?;
            let after = registry.apr(&target)?;
            record(
                &ui,
                &p.user,
                "apr.upsert",
                Some(&target),
                target.clone(),
                old.map(|o| serde_json::json!(o)),
                after.map(|a| serde_json::json!(a)),
            )
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other("/admin#aprs"))
    }
    inner(&ctx, &f).await.unwrap_or_else(|r| r)
}

/// Sets (`Some`) or removes (`None`) one override, checked like
/// `PUT /api/v1/aprs/{id}/limits`, and tells the alert engine.
async fn change_override(ctx: &Ctx, apr: String, key: String, value: Option<Value>) -> Page {
    let p = admin(ctx)?;
    if !Limits::keys().contains(&key) {
        return Err(ctx.error(ErrorKind::BadRequest));
    }
    let ui = ctx.ui.clone();
    let a = apr.clone();
    let limits = blocking(move || {
        if ui.app().registry().apr(&a)?.is_none() {
            return Err(Error::NotFound(format!("APR '{a}' does not exist")));
        }
        let store = ui.app().alerts();
        let mut merged: BTreeMap<String, Value> = store
            .limit_overrides(Some(&a))?
            .into_iter()
            .map(|(_, o)| (o.key, o.value))
            .collect();
        let before = serde_json::json!(merged);
        match &value {
            Some(v) => merged.insert(key.clone(), v.clone()),
            None => merged.remove(&key),
        };
        let limits = Limits::with_overrides(merged.iter().map(|(k, v)| (k.as_str(), v)))?;
        let now = chrono::Utc::now().timestamp_millis();
        store.set_limit_overrides(&a, &[(key, value)], &p.user, now)?;
        let after = serde_json::json!(merged);
        record(
            &ui,
            &p.user,
            "limits.set",
            Some(&a),
            a.clone(),
            Some(before),
            Some(after),
        )?;
        Ok((!merged.is_empty()).then_some(limits))
    })
    .await
    .map_err(|e| ctx.fail(e))?;
    if let Some(alerting) = ctx.ui.app().alerting() {
        alerting
            .set_limits(&apr, limits)
            .await
            .map_err(|e| ctx.fail(e))?;
    }
    Ok(ctx.see_other("/admin#overrides"))
}

/// `POST /admin/umbrales`: `apr`, `key`, `value` (a number, `,` or `.`;
/// or any JSON value the limit takes).
pub(super) async fn set_override(ctx: Ctx, Form(f): Form<HashMap<String, String>>) -> Response {
    let raw = field(&f, "value");
    let value = raw
        .replace(',', ".")
        .parse::<f64>()
        .ok()
        .and_then(|v| serde_json::Number::from_f64(v).map(Value::Number))
        .or_else(|| serde_json::from_str(raw).ok());
    let Some(value) = value else {
        return ctx.error(ErrorKind::BadRequest);
    };
    let (apr, key) = (field(&f, "apr").to_owned(), field(&f, "key").to_owned());
    change_override(&ctx, apr, key, Some(value))
        .await
        .unwrap_or_else(|r| r)
}

/// `POST /admin/umbrales/{apr}/{key}/eliminar`.
pub(super) async fn delete_override(
    ctx: Ctx,
    Path((apr, key)): Path<(String, String)>,
) -> Response {
    change_override(&ctx, apr, key, None)
        .await
        .unwrap_or_else(|r| r)
}

/// `POST /admin/usuarios/{name}/desactivar`: clears the user's password
/// and revokes its tokens (a new password through `apr-server user
/// password` brings it back).
pub(super) async fn disable_user(ctx: Ctx, Path(name): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, name: String) -> Page {
        let p = admin(ctx)?;
        if p.user == name {
            // An admin cannot lock itself out of the page it is on.
            return Err(ctx.error(ErrorKind::BadRequest));
        }
        let ui = ctx.ui.clone();
        blocking(move || {
            let before = auth::disable_user(ui.app().registry(), &name)?;
            let after = ui
                .app()
                .registry()
                .user(&name)?
                .map(|u| audit::user_view(&u));
            record(
                &ui,
                &p.user,
                "user.disable",
                None,
                name,
                Some(audit::user_view(&before)),
                after,
            )
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other("/admin#users"))
    }
    inner(&ctx, name).await.unwrap_or_else(|r| r)
}

/// `POST /admin/tokens/{id}/revocar`: revokes the token at once.
pub(super) async fn revoke_token(ctx: Ctx, Path(id): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, id: String) -> Page {
        let p = admin(ctx)?;
        let ui = ctx.ui.clone();
        blocking(move || {
            let registry = ui.app().registry();
            let before = registry.revoke_token(&id, chrono::Utc::now().timestamp_millis())?;
            let after = registry.token(&id)?.map(|t| audit::token_view(&t));
            record(
                &ui,
                &p.user,
                "token.revoke",
                None,
                id,
                Some(audit::token_view(&before)),
                after,
            )
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other("/admin#users"))
    }
    inner(&ctx, id).await.unwrap_or_else(|r| r)
}

/// `POST /admin/intervenciones`: `apr`, `component`, `date` (the day it
/// was completed), `cost_clp`, `description`; stored like
/// `POST /api/v1/aprs/{id}/interventions` (one day, funder not given).
pub(super) async fn create_intervention(
    ctx: Ctx,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    async fn inner(ctx: &Ctx, f: &HashMap<String, String>) -> Page {
        let p = admin(ctx)?;
        let bad = || ctx.error(ErrorKind::BadRequest);
        let apr = field(f, "apr").to_owned();
        let component = field(f, "component").to_owned();
        let date = field(f, "date").to_owned();
        let description = field(f, "description").to_owned();
        if !crate::assessment::COMPONENTS.contains(&component.as_str())
            || chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").is_err()
            || description.is_empty()
            || description.chars().count() > 2000
        {
            return Err(bad());
        }
        let cost_clp = match field(f, "cost_clp") {
            "" => 0,
            v => v.parse::<u64>().map_err(|_| bad())?,
        };
        let ui = ctx.ui.clone();
        blocking(move || {
            if ui.app().registry().apr(&apr)?.is_none() {
                return Err(Error::Invalid(format!("APR '{apr}' is not registered")));
            }
            let mut rec = crate::store::InterventionRecord {
                id: 0,
                apr: apr.clone(),
                component,
                description,
                cost_clp,
                funder: "—".into(),
                started: date.clone(),
                finished: date,
            };
            rec.id = ui.app().analysis().insert_intervention(rec.clone())?;
            let after = serde_json::to_value(&rec).ok();
            record(
                &ui,
                &p.user,
                "intervention.create",
                Some(&apr),
                rec.id.to_string(),
                None,
                after,
            )
        })
        .await
        .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other("/admin#interventions"))
    }
    inner(&ctx, &f).await.unwrap_or_else(|r| r)
}
