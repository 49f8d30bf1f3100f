//! Errors as the real API server reports them: a `metav1.Status` body with
//! an HTTP code and a machine-readable `reason` that clients switch on.

use http::StatusCode;
use serde_json::{Value, json};

/// A failed API request, rendered as a `metav1.Status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// The HTTP status code, repeated in the body's `code`.
    pub code: StatusCode,
    /// The `reason` field (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// The human-readable `message` field.
    pub message: String,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 404: the object (or the resource type itself) does not exist.
    pub fn not_found(resource: &str, name: &str) -> Self {
        let message = if name.is_empty() {
            "the server could not find the requested resource".to_string()
        } else {
            format!("{resource} \"{name}\" not found")
        };
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 409 on create: an object with this name exists.
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{resource} \"{name}\" already exists"),
        )
    }

    /// 409 on update: the client's resourceVersion is stale.
    pub fn conflict(resource: &str, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401: no or unknown bearer token.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 405: the resource does not support this verb.
    pub fn method_not_allowed(verb: &str, resource: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{verb} is not supported on resources of kind \"{resource}\""),
        )
    }

    /// 410: a continue token or resourceVersion older than the compaction point.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// 415: a PATCH with a content type this server does not know.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 422: the object is invalid (a missing name, a namespace mismatch).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    /// The `metav1.Status` JSON body.
    pub fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        })
    }
}
