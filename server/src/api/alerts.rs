//! Alert routes (CONTRACT §3), per-APR limits and notification preferences.
//!
//! | route | who |
//! | --- | --- |
//! | `GET /api/v1/alerts` | readers, within their scope |
//! | `POST /api/v1/alerts/{id}/ack`, `/resolve` | operators of the alert's APR, admins |
//! | `GET /api/v1/aprs/{id}/limits` | readers of the APR |
//! | `PUT /api/v1/aprs/{id}/limits` | admins |
//! | `GET/PUT /api/v1/users/{username}/notifications` | the user itself, admins |

use std::collections::BTreeMap;

use apr_wire::id::is_valid_id;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::aprs::{checked_apr, limit_param, load, unique_params};
use super::principal::require_reader;
use super::{audit, blocking, AppState};
use crate::alerting::{AlertKind, AlertState};
use crate::auth::{Principal, Role, Scope};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::notify::NotificationPref;
use crate::store::AlertQuery;

/// Default and largest number of alerts one list answer carries.
const DEFAULT_ALERTS: usize = 500;
const MAX_ALERTS: usize = 5000;

/// `GET /api/v1/alerts?apr=ID&state=S&kind=K&device=D&limit=N`: newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<Value>>> {
    require_reader(&caller)?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["apr", "state", "kind", "device", "limit"])?;
    let bad = |name: &str, e: Error| Error::InvalidQuery(format!("query parameter '{name}': {e}"));
    let alert_state = p
        .get("state")
        .map(|s| s.parse::<AlertState>().map_err(|e| bad("state", e)))
        .transpose()?;
    let kind = p
        .get("kind")
        .map(|s| s.parse::<AlertKind>().map_err(|e| bad("kind", e)))
        .transpose()?;
    let device = p.get("device").map(|d| (*d).to_owned());
    if device.as_deref().is_some_and(|d| !is_valid_id(d)) {
        return Err(Error::InvalidQuery(
            "query parameter 'device' is not a device id".into(),
        ));
    }
    let limit = limit_param(&p, DEFAULT_ALERTS, MAX_ALERTS)?;
    let aprs = match (p.get("apr"), &caller.scope) {
        (Some(id), _) => Some(vec![checked_apr(&state, &caller, id).await?.id]),
        (None, Scope::All) => None,
        (None, Scope::Aprs(set)) => Some(set.iter().cloned().collect()),
        (None, Scope::Region(_)) => {
            let (all, _, _) = load(&state, None).await?;
            Some(
                all.into_iter()
                    .filter(|a| caller.scope.allows_apr(a))
                    .map(|a| a.id)
                    .collect(),
            )
        }
    };
    let store = state.inner.alerts.clone();
    let q = AlertQuery {
        aprs,
        state: alert_state,
        kind,
        device,
        limit,
    };
    let alerts = blocking(move || store.alerts(&q)).await?;
    Ok(Json(alerts.iter().map(|a| a.to_json()).collect()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    comment: Option<String>,
}

fn comment(body: &Bytes) -> Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let b: CommentBody = serde_json::from_slice(body).map_err(|e| {
        Error::InvalidBody(format!(
            "the body is optional; when given it is {{\"comment\": \"...\"}}: {e}"
        ))
    })?;
    if b.comment.as_ref().is_some_and(|c| c.chars().count() > 2000) {
        return Err(Error::InvalidBody(
            "'comment' is longer than 2000 characters".into(),
        ));
    }
    Ok(b.comment.filter(|c| !c.trim().is_empty()))
}

enum Step {
    Ack,
    Resolve,
}

async fn lifecycle(
    state: AppState,
    caller: Principal,
    path: Result<Path<i64>, PathRejection>,
    body: Bytes,
    step: Step,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    let verb = match step {
        Step::Ack => "acknowledge",
        Step::Resolve => "resolve",
    };
    if !matches!(caller.role, Role::Operator | Role::Admin) {
        return Err(Error::Forbidden(format!(
            "a {} user may read alerts but not {verb} them; operators of the APR and admins may",
            caller.role
        )));
    }
    let comment = comment(&body)?;
    let store = state.inner.alerts.clone();
    let alert = blocking(move || store.alert(id)).await?;
    let Some(alert) = alert.filter(|a| caller.scope.allows_apr_id(&a.apr) == Some(true)) else {
        // Operators cannot tell an alert of another APR from none.
        return Err(if caller.role == Role::Admin {
            Error::NotFound(format!("alert {id} does not exist"))
        } else {
            Error::Forbidden(format!("alert {id} is not an alert of this token's APRs"))
        });
    };
    if alert.state == AlertState::Resolved {
        return Err(Error::Conflict(format!(
            "alert {id} is resolved; it cannot be {verb}d"
        )));
    }
    let alerting = state
        .alerting()
        .cloned()
        .ok_or_else(|| Error::Unavailable("the alert service is not running".into()))?;
    let r = match step {
        Step::Ack => alerting.acknowledge(id, &caller.user, comment).await,
        Step::Resolve => alerting.resolve(id, &caller.user, comment).await,
    };
    match r {
        Ok(a) => {
            let action = match step {
                Step::Ack => "alert.acknowledge",
                Step::Resolve => "alert.resolve",
            };
            let (before, after) = (alert.to_json(), a.to_json());
            audit(
                &state,
                &caller,
                action,
                Some(&a.apr),
                id.to_string(),
                Some(before),
                Some(after),
            )
            .await?;
            Ok(Json(a.to_json()))
        }
        Err(Error::NotFound(m)) => Err(Error::Conflict(m)),
        Err(e) => Err(e),
    }
}

/// `POST /api/v1/alerts/{id}/ack` with an optional `{"comment": "..."}`.
pub(super) async fn acknowledge(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    lifecycle(state, caller, path, body, Step::Ack).await
}

/// `POST /api/v1/alerts/{id}/resolve` with an optional `{"comment": "..."}`.
pub(super) async fn resolve(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    lifecycle(state, caller, path, body, Step::Resolve).await
}

async fn limits_view(state: &AppState, apr: String) -> Result<Value> {
    let store = state.inner.alerts.clone();
    let key = apr.clone();
    let overrides = blocking(move || store.limit_overrides(Some(&key))).await?;
    let limits = Limits::with_overrides(overrides.iter().map(|(_, o)| (o.key.as_str(), &o.value)))?;
    Ok(json!({
        "apr": apr,
        "limits": limits,
        "defaults": Limits::default(),
        "overrides": overrides.iter().map(|(_, o)| json!({
            "key": o.key,
            "value": o.value,
            "set_by": o.set_by,
            "set_at": crate::alerting::rfc3339_ms(o.set_at_ms),
        })).collect::<Vec<_>>(),
    }))
}

/// `GET /api/v1/aprs/{id}/limits`: the limits in force, the defaults and
/// the overrides with who set them and when.
pub(super) async fn get_limits(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    let apr = checked_apr(&state, &caller, &id).await?;
    Ok(Json(limits_view(&state, apr.id).await?))
}

/// `PUT /api/v1/aprs/{id}/limits` with `{"key": value, ...}`; `null` removes
/// an override. Admins only.
pub(super) async fn put_limits(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    let Path(id) = path?;
    if caller.role != Role::Admin {
        return Err(Error::Forbidden(format!(
            "only admins may change limits; this token is a {} user's",
            caller.role
        )));
    }
    let apr = checked_apr(&state, &caller, &id).await?.id;
    let changes: BTreeMap<String, Value> = serde_json::from_slice(&body).map_err(|e| {
        Error::InvalidBody(format!(
            "the body is an object of limit names and values (null removes an override): {e}"
        ))
    })?;
    let store = state.inner.alerts.clone();
    let key = apr.clone();
    let current = blocking(move || store.limit_overrides(Some(&key))).await?;
    let mut merged: BTreeMap<String, Value> =
        current.into_iter().map(|(_, o)| (o.key, o.value)).collect();
    let before = json!(merged);
    for (k, v) in &changes {
        if v.is_null() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    for k in changes.keys() {
        if !Limits::keys().contains(k) {
            return Err(Error::InvalidBody(format!(
                "'{k}' is not a limit; the limits are {}",
                Limits::keys().join(", ")
            )));
        }
    }
    let limits = Limits::with_overrides(merged.iter().map(|(k, v)| (k.as_str(), v)))?;
    let store = state.inner.alerts.clone();
    let (key, by) = (apr.clone(), caller.user.clone());
    let list: Vec<(String, Option<Value>)> = changes
        .into_iter()
        .map(|(k, v)| (k, (!v.is_null()).then_some(v)))
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    blocking(move || store.set_limit_overrides(&key, &list, &by, now)).await?;
    let after = json!(merged);
    if let Some(a) = state.alerting() {
        a.set_limits(&apr, (!merged.is_empty()).then_some(limits))
            .await?;
    }
    audit(
        &state,
        &caller,
        "limits.set",
        Some(&apr),
        apr.clone(),
        Some(before),
        Some(after),
    )
    .await?;
    Ok(Json(limits_view(&state, apr).await?))
}

fn may_manage_notifications(caller: &Principal, username: &str) -> Result<()> {
    if caller.role == Role::Admin || (caller.role.reads() && caller.user == username) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "only admins and '{username}' may see or change '{username}''s notifications"
        )))
    }
}

async fn prefs_view(state: &AppState, username: String) -> Result<Value> {
    let store = state.inner.alerts.clone();
    let prefs = blocking(move || store.notification_prefs(Some(&username))).await?;
    Ok(json!(prefs
        .into_iter()
        .map(|(_, p)| {
            let mut v = json!(p);
            v["secret_set"] = json!(p.secret.is_some());
            v
        })
        .collect::<Vec<_>>()))
}

/// `GET /api/v1/users/{username}/notifications`.
pub(super) async fn get_notifications(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let Path(username) = path?;
    may_manage_notifications(&caller, &username)?;
    let registry = state.inner.registry.clone();
    let name = username.clone();
    if blocking(move || registry.user(&name)).await?.is_none() {
        return Err(Error::NotFound(format!("user '{username}' does not exist")));
    }
    Ok(Json(prefs_view(&state, username).await?))
}

/// `PUT /api/v1/users/{username}/notifications` with the whole list of
/// preferences, replacing the stored one.
pub(super) async fn put_notifications(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Json<Value>> {
    let Path(username) = path?;
    may_manage_notifications(&caller, &username)?;
    let prefs: Vec<NotificationPref> = serde_json::from_slice(&body).map_err(|e| {
        Error::InvalidBody(format!(
            "the body is a list of {{\"channel\": \"webhook\"|\"email\", \"address\", \
             \"secret\" (webhooks), \"min_severity\", \"aprs\"}}: {e}"
        ))
    })?;
    for (i, p) in prefs.iter().enumerate() {
        p.check()
            .map_err(|e| Error::InvalidBody(format!("preference {i}: {e}")))?;
        if let Some(bad) = p.aprs.iter().flatten().find(|a| !is_valid_id(a)) {
            return Err(Error::InvalidBody(format!(
                "preference {i}: '{bad}' is not an APR id"
            )));
        }
    }
    let registry = state.inner.registry.clone();
    let name = username.clone();
    let user = blocking(move || registry.user(&name))
        .await?
        .ok_or_else(|| Error::NotFound(format!("user '{username}' does not exist")))?;
    if !user.role.reads() {
        return Err(Error::InvalidBody(format!(
            "'{username}' is a {} user and cannot be notified",
            user.role
        )));
    }
    let before = prefs_view(&state, username.clone()).await?;
    let store = state.inner.alerts.clone();
    let name = username.clone();
    blocking(move || store.set_notification_prefs(&name, &prefs)).await?;
    let after = prefs_view(&state, username.clone()).await?;
    audit(
        &state,
        &caller,
        "notifications.set",
        None,
        username,
        Some(before),
        Some(after.clone()),
    )
    .await?;
    Ok(Json(after))
}
