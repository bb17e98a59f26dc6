//! The one place errors become HTTP answers:
//! `{"error":{"code":"...","message":"..."}}` with the status of the error's
//! kind, and `WWW-Authenticate: Bearer` on 401.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Error;

impl Error {
    /// The HTTP status and stable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            Error::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            Error::TooManyPoints(_) => (StatusCode::BAD_REQUEST, "too_many_points"),
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::WeakPassword(_) => (StatusCode::BAD_REQUEST, "weak_password"),
            Error::Fleet(_) => (StatusCode::BAD_REQUEST, "invalid_fleet"),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "config"),
            Error::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
            Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = self.to_string();
        if status.is_server_error() {
            tracing::error!(code, %message, "request failed");
        } else {
            tracing::debug!(code, %message, "request refused");
        }
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        Error::InvalidQuery(format!("path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::InvalidQuery(format!("query string: {}", r.body_text()))
    }
}

/// Answer for a path no route matches.
pub(super) async fn no_route(method: Method, uri: Uri) -> Error {
    Error::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Answer for a known path with a method it does not take.
pub(super) async fn method_not_allowed(method: Method, uri: Uri) -> Error {
    Error::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
}
