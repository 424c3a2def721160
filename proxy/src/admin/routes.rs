//! The admin endpoints: map a request's method and path to a small response. No request body
//! is ever read.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use super::StatusSource;
use crate::metrics::Metrics;

/// What every request handler shares.
pub(super) struct State {
    pub(super) metrics: Metrics,
    pub(super) source: Arc<dyn StatusSource>,
    /// `[proxy] admin_token_file`: required on everything but `/healthz` and `/readyz`.
    pub(super) token: Option<super::AdminToken>,
}

/// A response with a complete, in-memory body.
pub(super) type Reply = Response<Full<Bytes>>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Answer one request. Unknown paths get 404; known paths with another method get 405.
pub(super) async fn handle<B>(state: &State, request: Request<B>) -> Reply {
    let path = request.uri().path();
    if path == "/reload" {
        if request.method() != Method::POST {
            let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "use POST\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        return reload(state).await;
    }
    if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/status") {
        return reply(StatusCode::NOT_FOUND, TEXT, "not found\n");
    }
    if request.method() != Method::GET {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let open = matches!(path, "/healthz" | "/readyz");
    if let (false, Some(token)) = (open, &state.token) {
        let presented = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if !token.accepts(presented) {
            let mut response = reply(
                StatusCode::UNAUTHORIZED,
                TEXT,
                "unauthorized: send Authorization: Bearer <admin token>\n",
            );
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    match path {
        "/metrics" => metrics(state),
        "/readyz" => ready(state).await,
        "/status" => status(state),
        _ => reply(StatusCode::OK, TEXT, "ok\n"),
    }
}

/// `/metrics`: refresh sampled gauges, then the Prometheus text format.
fn metrics(state: &State) -> Reply {
    state.source.collect(&state.metrics);
    reply(
        StatusCode::OK,
        prometheus::TEXT_FORMAT,
        state.metrics.encode(),
    )
}

/// `/readyz`: 200 when the source says the proxy can serve, else 503 with the reason.
async fn ready(state: &State) -> Reply {
    let source = state.source.clone();
    match tokio::task::spawn_blocking(move || source.ready()).await {
        Ok(Ok(())) => reply(StatusCode::OK, TEXT, "ready\n"),
        Ok(Err(reason)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!("not ready: {reason}\n"),
        ),
        Err(err) => {
            tracing::warn!(%err, "admin: readiness check failed");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                "not ready: readiness check failed\n",
            )
        }
    }
}

/// `POST /reload`: 200 with what changed, 400 with why nothing did.
async fn reload(state: &State) -> Reply {
    let source = state.source.clone();
    match tokio::task::spawn_blocking(move || source.reload()).await {
        Ok(Ok(report)) => reply(StatusCode::OK, TEXT, format!("{report}\n")),
        Ok(Err(reason)) => reply(StatusCode::BAD_REQUEST, TEXT, format!("{reason}\n")),
        Err(err) => {
            tracing::warn!(%err, "admin: reload task failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "reload failed\n")
        }
    }
}

/// `/status`: the source's JSON snapshot.
fn status(state: &State) -> Reply {
    match serde_json::to_vec_pretty(&state.source.status()) {
        Ok(mut body) => {
            body.push(b'\n');
            reply(StatusCode::OK, JSON, body)
        }
        Err(err) => {
            tracing::warn!(%err, "admin: encoding status failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "internal error\n")
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
