//! The access rule of every route, declared where the route is registered.
//!
//! The API ([`crate::api`]) and the web UI ([`crate::ui`]) build their
//! routers only from tables of [`RouteRule`]: a route cannot be registered
//! without an [`Access`] rule. The handlers enforce the rule themselves (the
//! scope checks need what the handler loads, e.g. an alert's APR); the
//! authorisation matrix test (`server/tests/authz_matrix.rs`) enumerates the
//! same tables, builds a concrete request for each route × caller × in/out of
//! scope, and checks each answer against [`Access::expect`]. A handler that
//! forgets a check, or a route added without a case in the test, fails it.

use axum::http::Method;

use crate::auth::Role;

/// The roles that read the registry and series.
pub const READERS: &[Role] = &[Role::Operator, Role::Engineer, Role::Gore, Role::Admin];

/// Who may use a route, and what "in scope" means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, credentials or not (health, login page, stylesheet).
    Public,
    /// Loopback peers, or the configured scrape token (`/metrics`); "in
    /// scope" is a loopback peer.
    Scrape,
    /// Any authenticated caller, whatever its role.
    Authenticated,
    /// The reader roles; the answer holds only what is in the caller's
    /// scope (lists, the operator's home).
    Fleet,
    /// `roles`, on the APR named in the path, which must be in the caller's
    /// scope (operators: their APRs; GORE: their region; engineers and
    /// admins: all).
    Apr(&'static [Role]),
    /// `roles`, on the alert named in the path, whose APR must be in the
    /// caller's scope.
    Alert(&'static [Role]),
    /// `roles`, on the region named in the query (`?region=`): a GORE
    /// caller only its own; the others any.
    Region(&'static [Role]),
    /// `roles`, nothing scoped (admin pages, engineering overview).
    Roles(&'static [Role]),
    /// The user named in the path itself (a reader), or an admin.
    SelfOrAdmin,
    /// Gateway tokens, on the APRs of the request (packs outside the
    /// gateway's APRs are refused).
    Gateway,
    /// Gateway tokens, nothing scoped (the gateway's own device list).
    GatewayOwn,
}

/// What a caller should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The route runs.
    Allowed,
    /// 403.
    Forbidden,
    /// 401 (API) or a redirect to the login (UI).
    Unauthenticated,
}

/// The caller of a request in the matrix: a role's credentials, none, or
/// credentials that are not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A valid token or session of this role.
    Role(Role),
    /// No credentials.
    Anonymous,
    /// A token or session id that is not known.
    BadCredentials,
}

impl Access {
    /// Whether the rule has an in-scope and an out-of-scope variant.
    pub const fn scoped(self) -> bool {
        matches!(
            self,
            Access::Scrape
                | Access::Apr(_)
                | Access::Alert(_)
                | Access::Region(_)
                | Access::SelfOrAdmin
                | Access::Gateway
        )
    }

    /// The outcome for `caller` on a target in (`in_scope`) or out of its
    /// scope. Engineers and admins see everything, so "out of scope" is
    /// still allowed for them.
    pub fn expect(self, caller: Caller, in_scope: bool) -> Outcome {
        let role = match (self, caller) {
            (Access::Public, _) => return Outcome::Allowed,
            (Access::Scrape, _) if in_scope => return Outcome::Allowed,
            (Access::Scrape, _) => return Outcome::Forbidden,
            (_, Caller::Anonymous | Caller::BadCredentials) => return Outcome::Unauthenticated,
            (_, Caller::Role(r)) => r,
        };
        let all_seeing = matches!(role, Role::Engineer | Role::Admin);
        let ok = match self {
            Access::Public | Access::Scrape | Access::Authenticated => true,
            Access::Fleet => role.reads(),
            Access::Apr(roles) | Access::Alert(roles) => {
                roles.contains(&role) && (in_scope || all_seeing)
            }
            Access::Region(roles) => roles.contains(&role) && (in_scope || role != Role::Gore),
            Access::Roles(roles) => roles.contains(&role),
            Access::SelfOrAdmin => role == Role::Admin || (role.reads() && in_scope),
            Access::Gateway => role == Role::Gateway && in_scope,
            Access::GatewayOwn => role == Role::Gateway,
        };
        if ok {
            Outcome::Allowed
        } else {
            Outcome::Forbidden
        }
    }
}

/// One registered route: method, path template, rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// The method.
    pub method: Method,
    /// The path template (`/api/v1/aprs/{id}`).
    pub path: &'static str,
    /// Who may use it.
    pub access: Access,
}

/// Every route of the server (API and UI) with its rule.
pub fn all_routes() -> Vec<RouteRule> {
    let mut v = crate::api::route_rules();
    v.extend(crate::ui::route_rules());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_decide_as_documented() {
        let op = Caller::Role(Role::Operator);
        let eng = Caller::Role(Role::Engineer);
        let gore = Caller::Role(Role::Gore);
        let gw = Caller::Role(Role::Gateway);
        let writers = &[Role::Operator, Role::Admin][..];
        assert_eq!(Access::Apr(READERS).expect(op, false), Outcome::Forbidden);
        assert_eq!(Access::Apr(READERS).expect(eng, false), Outcome::Allowed);
        assert_eq!(Access::Apr(writers).expect(eng, true), Outcome::Forbidden);
        assert_eq!(Access::Apr(READERS).expect(gw, true), Outcome::Forbidden);
        assert_eq!(
            Access::Apr(READERS).expect(Caller::BadCredentials, true),
            Outcome::Unauthenticated
        );
        assert_eq!(
            Access::Region(READERS).expect(gore, false),
            Outcome::Forbidden
        );
        assert_eq!(Access::Region(READERS).expect(op, false), Outcome::Allowed);
        assert_eq!(Access::Gateway.expect(gw, false), Outcome::Forbidden);
        assert_eq!(
            Access::Public.expect(Caller::Anonymous, false),
            Outcome::Allowed
        );
        assert_eq!(
            Access::Scrape.expect(Caller::Anonymous, false),
            Outcome::Forbidden
        );
        assert_eq!(Access::SelfOrAdmin.expect(gw, true), Outcome::Forbidden);
    }
}
