//! The caller behind `Authorization: Bearer <token>`, as an extractor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use super::{blocking, AppState};
use crate::auth::{self, Principal, Role};
use crate::error::{Error, Result};

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Principal> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(Error::Unauthenticated(
                "missing 'Authorization: Bearer <token>' header".into(),
            ));
        }
        let token = bearer(&parts.headers)
            .ok_or_else(|| {
                Error::Unauthenticated("the Authorization header is not 'Bearer <token>'".into())
            })?
            .to_owned();
        let registry = state.inner.registry.clone();
        blocking(move || auth::resolve_token(&*registry, &token))
            .await?
            .ok_or_else(|| Error::Unauthenticated("the bearer token is not known".into()))
    }
}

/// Refuses roles that do not read the registry and series (gateways).
pub(super) fn require_reader(p: &Principal) -> Result<()> {
    if p.role.reads() {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "a {} token may only use /api/v1/ingest and /api/v1/gateway/devices",
            p.role
        )))
    }
}

/// Refuses every role but `gateway`.
pub(super) fn require_gateway(p: &Principal, route: &str) -> Result<()> {
    if p.role == Role::Gateway {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "{route} takes gateway tokens only; this token is a {} user's",
            p.role
        )))
    }
}
