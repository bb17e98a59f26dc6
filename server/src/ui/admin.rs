//! The admin page: users and their API tokens, devices and their MQTT
//! credentials, the APR registry and per-APR limit overrides, through the
//! same functions as the CLI and the API (`auth::create_user`,
//! `auth::create_token`, `device::add_device` / `upsert_device`,
//! `Registry::upsert_fleet`, the alert store's overrides and the alert
//! service's `set_limits`). A new secret (token, MQTT password) is shown
//! once, in the answer to the form that made it.
//!
//! Not yet possible (the registry has no operation for them): disabling a
//! user, revoking a token, recording an intervention; those forms answer
//! with the 400 page.

use std::collections::{BTreeMap, HashMap};

use apr_dashboards::model::{
    AdminActions, AdminPage, AprRegistryRow, DeviceRow, ErrorKind, NewSecret, OverrideRow,
    TokenRow, UserRow,
};
use axum::extract::Path;
use axum::response::Response;
use axum::Form;
use serde_json::Value;

use super::{apr_ref, blocking, local, Ctx, Page, Ui};
use crate::auth::{self, NewUser, Role};
use crate::device;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::store::AprRecord;

fn build(ui: &Ui, new_secret: Option<NewSecret>) -> Result<AdminPage> {
    let registry = ui.app().registry();
    let now = chrono::Utc::now().timestamp_millis();
    let regions = registry.regions()?;
    let tokens = ui.db().tokens()?;
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
    Ok(AdminPage {
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
        admin(ctx)?;
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
        blocking(move || auth::create_user(ui.app().registry(), &user))
            .await
            .map_err(|e| ctx.fail(e))?;
        Ok(ctx.see_other("/admin#users"))
    }
    inner(&ctx, &f).await.unwrap_or_else(|r| r)
}

/// `POST /admin/usuarios/{name}/token`: a new API token, shown once.
pub(super) async fn issue_token(ctx: Ctx, Path(name): Path<String>) -> Response {
    async fn inner(ctx: &Ctx, name: String) -> Page {
        admin(ctx)?;
        let ui = ctx.ui.clone();
        let n = name.clone();
        let token = blocking(move || {
            if ui.app().registry().user(&n)?.is_none() {
                return Err(Error::NotFound(format!("user '{n}' does not exist")));
            }
            auth::create_token(ui.app().registry(), &n, Some("admin"))
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
        admin(ctx)?;
        let (apr, dev) = (field(f, "apr").to_owned(), field(f, "device").to_owned());
        let ui = ctx.ui.clone();
        let creds = blocking(move || {
            if ui.app().registry().apr(&apr)?.is_none() {
                return Err(Error::Invalid(format!("APR '{apr}' is not registered")));
            }
            device::add_device(
                ui.app().registry(),
                &apr,
                &dev,
                device::DEFAULT_REPORT_INTERVAL_S,
            )
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
        admin(ctx)?;
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
        admin(ctx)?;
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
            registry.upsert_fleet(&[r], &[rec]).map(|_| ())
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
        match &value {
            Some(v) => merged.insert(key.clone(), v.clone()),
            None => merged.remove(&key),
        };
        let limits = Limits::with_overrides(merged.iter().map(|(k, v)| (k.as_str(), v)))?;
        let now = chrono::Utc::now().timestamp_millis();
        store.set_limit_overrides(&a, &[(key, value)], &p.user, now)?;
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

/// Forms whose operation the registry does not have yet.
pub(super) async fn not_yet(ctx: Ctx) -> Response {
    match admin(&ctx) {
        Ok(_) => {
            tracing::info!(path = %ctx.path, "admin action not available yet");
            ctx.error(ErrorKind::BadRequest)
        }
        Err(r) => r,
    }
}
