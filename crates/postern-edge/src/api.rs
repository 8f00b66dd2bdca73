//! What the edge's JSON APIs (control plane and admin) share: the error answer and a JSON body
//! extractor whose rejections are answered in that same shape.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use postern_proto::api::{ApiError, ApiErrorBody};
use postern_store::StoreError;

/// An API call that failed: a status, a stable code and a message naming the fix.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Filled in by the API's request-ID layer, which also sets `X-Request-Id`.
    pub request_id: Option<String>,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status,
            code,
            message: message.into(),
            request_id: None,
        }
    }

    /// `code: message`, as the audit log records a failure.
    pub fn detail(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiFailure {
        ApiFailure::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn internal(err: impl std::fmt::Display) -> ApiFailure {
        tracing::error!(error = %err, "internal error in API call");
        ApiFailure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the edge failed to complete the call; see its log",
        )
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> ApiFailure {
        match e {
            StoreError::NotFound { .. } => {
                ApiFailure::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            StoreError::Conflict(m) => ApiFailure::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::InUse(m) => ApiFailure::new(StatusCode::CONFLICT, "in_use", m),
            other => ApiFailure::internal(other),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: ApiErrorBody {
                code: self.code.to_owned(),
                message: self.message.clone(),
                request_id: self.request_id.clone(),
            },
        };
        let status = self.status;
        let mut resp = (status, axum::Json(body)).into_response();
        // Kept so an outer layer can render it again with the request ID.
        resp.extensions_mut().insert(self);
        resp
    }
}

/// `axum::Json`, with malformed, oversized or mistyped bodies answered as an [`ApiFailure`].
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiFailure::new(
                rejection.status(),
                match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
                    _ => "bad_json",
                },
                rejection.body_text(),
            )),
        }
    }
}
