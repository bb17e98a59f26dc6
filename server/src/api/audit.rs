//! The audit log and API tokens (extensions of CONTRACT §3).
//!
//! | route | who |
//! | --- | --- |
//! | `GET /api/v1/audit?apr=&action=&actor=&since=&limit=` | admins (everything); GORE (entries about the APRs of its region) |
//! | `GET /api/v1/tokens?username=` | admins |
//! | `DELETE /api/v1/tokens/{id}` | admins: revokes the token at once |

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::aprs::{checked_apr, limit_param, load, unique_params};
use super::{blocking, AppState};
use crate::audit::{self, AuditEntry, AuditQuery, Via};
use crate::auth::{Principal, Role, Scope};
use crate::error::{Error, Result};

/// Default and largest number of entries one answer carries.
const DEFAULT_ENTRIES: usize = 200;
const MAX_ENTRIES: usize = 5000;

fn require(caller: &Principal, roles: &[Role], what: &str) -> Result<()> {
    if roles.contains(&caller.role) {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{what} is not open to {} users",
            caller.role
        )))
    }
}

/// `GET /api/v1/audit`: newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<Value>>> {
    require(&caller, &[Role::Admin, Role::Gore], "the audit log")?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["apr", "action", "actor", "since", "limit"])?;
    let limit = limit_param(&p, DEFAULT_ENTRIES, MAX_ENTRIES)?;
    let since_ms = p
        .get("since")
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.timestamp_millis())
                .map_err(|_| {
                    Error::InvalidQuery(format!(
                        "query parameter 'since': '{s}' is not an RFC 3339 time"
                    ))
                })
        })
        .transpose()?;
    let aprs = match (p.get("apr"), &caller.scope) {
        (Some(id), _) => Some(vec![checked_apr(&state, &caller, id).await?.id]),
        (None, Scope::All) => None,
        (None, _) => {
            let (all, _, _) = load(&state, None).await?;
            Some(
                all.into_iter()
                    .filter(|a| caller.scope.allows_apr(a))
                    .map(|a| a.id)
                    .collect(),
            )
        }
    };
    let q = AuditQuery {
        aprs,
        action: p.get("action").map(|s| (*s).to_owned()),
        actor: p.get("actor").map(|s| (*s).to_owned()),
        since_ms,
        limit,
    };
    let registry = state.inner.registry.clone();
    let rows = blocking(move || registry.audit(&q)).await?;
    Ok(Json(rows.into_iter().map(|r| json!(r)).collect()))
}

/// `GET /api/v1/tokens[?username=]`: every token (id, user, label, created,
/// revoked), never the token itself.
pub(super) async fn tokens(
    State(state): State<AppState>,
    caller: Principal,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<Value>>> {
    require(&caller, &[Role::Admin], "the token list")?;
    let Query(pairs) = query?;
    let p = unique_params(&pairs, &["username"])?;
    let username = p.get("username").map(|s| (*s).to_owned());
    let registry = state.inner.registry.clone();
    let rows = blocking(move || registry.tokens(username.as_deref())).await?;
    Ok(Json(rows.iter().map(audit::token_view).collect()))
}

/// `DELETE /api/v1/tokens/{id}`: revokes the token; the next request with
/// it gets 401.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    caller: Principal,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    require(&caller, &[Role::Admin], "revoking tokens")?;
    let Path(id) = path?;
    let registry = state.inner.registry.clone();
    let actor = caller.user.clone();
    let after = blocking(move || {
        let now = chrono::Utc::now().timestamp_millis();
        let before = registry.revoke_token(&id, now)?;
        let after = registry
            .token(&id)?
            .ok_or_else(|| Error::NotFound(format!("no token has the id '{id}'")))?;
        audit::record(
            &*registry,
            AuditEntry::now(
                &actor,
                Via::Api,
                "token.revoke",
                None,
                id,
                Some(audit::token_view(&before)),
                Some(audit::token_view(&after)),
            ),
        )?;
        Ok(after)
    })
    .await?;
    tracing::info!(token = %after.id, user = %after.username, "API token revoked");
    Ok(Json(audit::token_view(&after)))
}
