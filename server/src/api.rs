//! The HTTP edge: routes of protocol v1, each handler thin (decode,
//! authorize, call the database, encode), errors as JSON
//! `{ "error": { "code", "message" } }` with the status of their code.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use eventstore_wasm::sync::protocol::{
    self, ErrorCode, ErrorResponse, ForgetFilter, InfoResponse, ProtocolError, PullRequest,
    PullResponse, PushResponse, PROTOCOL,
};
use eventstore_wasm::sync::rules::{self, Scope, Tokens};
use serde::Serialize;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::db::{Database, DbError, ForgetOutcome, PushOutcome};

/// How often a long poll looks at the database for writes of other
/// server instances (writes of this one wake it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What the handlers share.
pub struct AppState {
    pub db: Box<dyn Database>,
    /// `None`: no auth file, everyone may do everything.
    pub tokens: Option<Tokens>,
    /// The last position this process wrote; long polls wait on it.
    pub head: watch::Sender<u64>,
    /// Turns true when the server shuts down, so that long polls answer at once.
    pub closing: watch::Receiver<bool>,
}

/// The router of protocol v1, with CORS for `origins` (none: no CORS headers).
pub fn router(state: Arc<AppState>, origins: &[HeaderValue]) -> Router {
    let router = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/push", post(push))
        .route("/v1/pull", get(pull))
        .route("/v1/forget", post(forget))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            protocol::MAX_BODY_BYTES,
        ))
        .with_state(state);
    if origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([AUTHORIZATION, CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
}

/// A failed request, answered as JSON.
pub struct ApiError {
    error: ProtocolError,
    log: Option<String>,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl std::fmt::Display) -> Self {
        ProtocolError::new(code, message).into()
    }
}

impl From<ProtocolError> for ApiError {
    fn from(error: ProtocolError) -> Self {
        ApiError { error, log: None }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!(error = %e, "database");
        match e {
            DbError::Unavailable(_) => ApiError::new(
                ErrorCode::Unavailable,
                "the database is unreachable or the server is stopping; retry later",
            ),
            // The details stay in the server's log.
            DbError::Internal(_) => ApiError::new(
                ErrorCode::Internal,
                "the server failed (see its log); retry the request unchanged: ids make retries safe",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(self.error.code);
        let body = ErrorResponse {
            log: self.log,
            error: self.error,
        };
        (status, Json(body)).into_response()
    }
}

fn status(code: ErrorCode) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

type ApiResult<T> = Result<T, ApiError>;

/// The token's scope (everything without an auth file).
fn scope(state: &AppState, headers: &HeaderMap) -> ApiResult<Scope> {
    let Some(tokens) = &state.tokens else {
        return Ok(Scope::everything());
    };
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = rules::bearer(header)?;
    tokens
        .scope(token)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown token"))
}

/// The body of a POST: JSON, within the size limit.
fn body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ));
    }
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::TooLarge,
                format!("body over {} bytes", protocol::MAX_BODY_BYTES),
            )
        } else {
            ApiError::new(ErrorCode::BadRequest, e.body_text())
        }
    })
}

/// Refuses a request naming another log than the server's.
fn check_log(state: &AppState, log: Option<&str>) -> ApiResult<()> {
    match log {
        Some(log) if log != state.db.log() => Err(ApiError {
            error: ProtocolError::new(
                ErrorCode::LogMismatch,
                format!(
                    "this server's log is {}, not {log}: the server was reset or replaced; do not mix the two logs",
                    state.db.log()
                ),
            ),
            log: Some(state.db.log().to_owned()),
        }),
        _ => Ok(()),
    }
}

/// Wakes the long polls after a write that moved the head to `head`.
fn advance(state: &AppState, head: u64) {
    state.head.send_if_modified(|h| {
        let newer = head > *h;
        if newer {
            *h = head;
        }
        newer
    });
}

/// A JSON answer with a status.
fn answer<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, Json(body)).into_response()
}

async fn info_inner(state: Arc<AppState>) -> ApiResult<Response> {
    let head = state.db.head().await?;
    Ok(answer(
        StatusCode::OK,
        &InfoResponse {
            protocol: PROTOCOL,
            log: state.db.log().to_owned(),
            head,
        },
    ))
}

async fn push_inner(
    state: Arc<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let scope = scope(&state, &headers)?;
    let bytes = body(&headers, raw)?;
    let request = protocol::decode_push(&bytes)?;
    check_log(&state, request.log.as_deref())?;
    let log = state.db.log().to_owned();
    let forbidden = rules::forbidden(&request.events, &scope);
    if let Some(&first) = forbidden.first() {
        let aggregate = request.events[first].aggregate.0.as_str();
        return Ok(answer(
            StatusCode::FORBIDDEN,
            &PushResponse {
                log,
                results: rules::forbidden_results(&request.events, &forbidden),
                conflicts: Vec::new(),
                error: Some(ProtocolError::new(
                    ErrorCode::Forbidden,
                    format!("this token may not push aggregate {aggregate}: nothing was written"),
                )),
            },
        ));
    }
    match state.db.push(&request.events, &scope).await? {
        PushOutcome::Written { results, head } => {
            advance(&state, head);
            tracing::debug!(events = results.len(), head, "push");
            Ok(answer(
                StatusCode::OK,
                &PushResponse {
                    log,
                    results,
                    conflicts: Vec::new(),
                    error: None,
                },
            ))
        }
        PushOutcome::Conflict { results, conflicts } => {
            let names: Vec<&str> = conflicts.iter().map(|c| c.aggregate.0.as_str()).collect();
            let message = format!(
                "aggregates moved on: {}; nothing was written",
                names.join(", ")
            );
            Ok(answer(
                StatusCode::CONFLICT,
                &PushResponse {
                    log,
                    results,
                    conflicts,
                    error: Some(ProtocolError::new(ErrorCode::Conflict, message)),
                },
            ))
        }
    }
}

async fn pull_inner(
    state: Arc<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let scope = scope(&state, &headers)?;
    let query = query.unwrap_or_default();
    let request = PullRequest::decode(&query)?;
    check_log(&state, protocol::pull_log(&query))?;
    if scope.pull.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this token may not pull any aggregate",
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(request.wait);
    let mut woken = state.head.subscribe();
    let mut closing = state.closing.clone();
    let mut after = request.after;
    loop {
        woken.borrow_and_update();
        let head = state.db.head().await?;
        let page = state.db.pull(after, request.limit, &scope).await?;
        let done = !page.items.is_empty()
            || page.more
            || *closing.borrow()
            || tokio::time::Instant::now() >= deadline;
        if done {
            return Ok(answer(
                StatusCode::OK,
                &PullResponse {
                    log: state.db.log().to_owned(),
                    items: page.items,
                    cursor: page.cursor,
                    more: page.more,
                    head: head.max(page.cursor),
                },
            ));
        }
        after = page.cursor;
        tokio::select! {
            _ = woken.changed() => {}
            _ = closing.changed() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn forget_inner(
    state: Arc<AppState>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let scope = scope(&state, &headers)?;
    let bytes = body(&headers, raw)?;
    let request = protocol::decode_forget(&bytes)?;
    check_log(&state, request.log.as_deref())?;
    let filter = ForgetFilter::from(&request.filter);
    match state.db.forget(&request.id, &filter, &scope).await? {
        ForgetOutcome::Done { answer: body, head } => {
            advance(&state, head);
            tracing::debug!(id = %body.id, erased = body.events.len(), "forget");
            Ok(answer(StatusCode::OK, &body))
        }
        ForgetOutcome::Forbidden { aggregate } => Err(ApiError {
            error: ProtocolError::new(
                ErrorCode::Forbidden,
                format!("this token may not forget aggregate {aggregate}, which the filter matches: nothing was erased"),
            ),
            log: Some(state.db.log().to_owned()),
        }),
        ForgetOutcome::TooLarge { count } => Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "the filter matches {count} events, at most {} per forget: split it by position ranges",
                protocol::MAX_FORGET_EVENTS
            ),
        )),
    }
}

/// Every answer carries the log's id, errors included.
fn with_log(state: &AppState, result: ApiResult<Response>) -> Response {
    result.unwrap_or_else(|mut e| {
        e.log = Some(state.db.log().to_owned());
        e.into_response()
    })
}

async fn info(State(state): State<Arc<AppState>>) -> Response {
    with_log(&state, info_inner(state.clone()).await)
}

async fn push(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    with_log(&state, push_inner(state.clone(), headers, raw).await)
}

async fn pull(State(state): State<Arc<AppState>>, headers: HeaderMap, query: RawQuery) -> Response {
    with_log(&state, pull_inner(state.clone(), headers, query).await)
}

async fn forget(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    with_log(&state, forget_inner(state.clone(), headers, raw).await)
}

async fn not_found(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    with_log(&state, Err(not_found_error(&uri)))
}

fn not_found_error(uri: &Uri) -> ApiError {
    let path = uri.path();
    let other_version = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split('/').next())
        .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) && v != "1");
    if other_version {
        ApiError::new(
            ErrorCode::UnsupportedProtocol,
            format!("{path}: this server speaks protocol version {PROTOCOL} (/v{PROTOCOL}/…)"),
        )
    } else {
        ApiError::new(ErrorCode::NotFound, format!("no such path {path}"))
    }
}

async fn method_not_allowed(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
) -> Response {
    let e = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    );
    with_log(&state, Err(e))
}
