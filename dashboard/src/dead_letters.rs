//! The dead-letter panel's API: the processor owns dead letters (it records them, and replays
//! them onto their shards with publisher confirms), so the dashboard forwards these calls to
//! the processor's API rather than repeating that logic. Answers come back as the processor
//! gave them, of the type it gave; an unreachable processor is a 503 naming it. Each call
//! carries the signed-in operator's key, so the processor checks it too, and the dashboard's
//! request id (`X-Request-Id`), so the processor's log lines and problems name the same request;
//! a problem comes back as the dashboard's own: its `instance` the path the operator asked for.

use axum::{
    Router,
    body::Bytes,
    extract::{Extension, Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};

use crate::session::Operator;

/// Where the processor is.
#[derive(Clone)]
pub struct Processor {
    /// HTTP client.
    pub client: reqwest::Client,
    /// Its base URL.
    pub url: String,
}

pub(crate) fn routes(processor: Processor) -> Router {
    Router::new()
        .route("/api/v1/dead-letters", get(list))
        .route("/api/v1/dead-letters/replay", forward_post("replay"))
        .route("/api/v1/dead-letters/purge", forward_post("purge"))
        .route("/api/v1/dead-letters/replays/{id}", get(job))
        .route("/api/v1/dead-letters/{id}", get(show))
        .with_state(processor)
}

async fn forward(request: reqwest::RequestBuilder) -> Response {
    let asked = shared::http::request_id::current();
    let request = match &asked {
        Some(asked) => request.header(
            shared::http::request_id::CLIENT_REQUEST_ID.as_str(),
            &*asked.id,
        ),
        None => request,
    };
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return unavailable(&e),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => return unavailable(&e),
    };
    let body = match asked {
        Some(asked) if kind.starts_with(shared::api::PROBLEM_JSON) => as_ours(body, &asked),
        _ => body,
    };
    let kind = HeaderValue::from_str(&kind).unwrap_or(HeaderValue::from_static("application/json"));
    (status, [(header::CONTENT_TYPE, kind)], body).into_response()
}

/// The processor's problem as the answer to the dashboard's request: its `instance` the path
/// the operator asked for, its `request_id` the dashboard's (which the processor was sent, so
/// both services' log lines carry it). A body that is not a JSON object is left as it is.
fn as_ours(body: Bytes, asked: &shared::http::request_id::RequestContext) -> Bytes {
    let Ok(serde_json::Value::Object(mut problem)) = serde_json::from_slice(&body) else {
        return body;
    };
    problem.insert("instance".into(), (*asked.path).into());
    problem.insert("request_id".into(), (*asked.id).into());
    serde_json::Value::Object(problem).to_string().into()
}

fn unavailable(error: &reqwest::Error) -> Response {
    tracing::warn!(error = %error, "The processor's dead-letter API is unreachable.");
    shared::api::ApiError::unavailable("processor", error).into_response()
}

async fn list(
    State(processor): State<Processor>,
    Extension(operator): Extension<Operator>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    forward(
        processor
            .client
            .get(format!("{}/dead-letters{query}", processor.url))
            .bearer_auth(&operator.key),
    )
    .await
}

async fn show(
    State(processor): State<Processor>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    forward_get(&processor, &operator, &["dead-letters", &id]).await
}

async fn job(
    State(processor): State<Processor>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Response {
    forward_get(&processor, &operator, &["dead-letters", "replays", &id]).await
}

/// Forwards a `GET` of the processor's path made of `segments` (each escaped).
async fn forward_get(processor: &Processor, operator: &Operator, segments: &[&str]) -> Response {
    let mut url =
        reqwest::Url::parse(&processor.url).expect("PROCESSOR_URL was validated at start");
    url.path_segments_mut()
        .expect("an http URL has path segments")
        .pop_if_empty()
        .extend(segments);
    forward(processor.client.get(url).bearer_auth(&operator.key)).await
}

/// `POST` forwarded with its JSON body to the processor's `POST /dead-letters/{action}`.
fn forward_post(action: &'static str) -> MethodRouter<Processor> {
    post(
        move |State(processor): State<Processor>,
              Extension(operator): Extension<Operator>,
              body: Bytes| async move {
            let url = format!("{}/dead-letters/{action}", processor.url);
            let request = processor.client.post(url).bearer_auth(&operator.key);
            forward(
                request
                    .header(header::CONTENT_TYPE.as_str(), "application/json")
                    .body(body),
            )
            .await
        },
    )
}
