//! The dead-letter panel's API: the processor owns dead letters (it records them, and replays
//! them onto their shards with publisher confirms), so the dashboard forwards these calls to
//! the processor's API rather than repeating that logic. Answers come back as the processor
//! gave them; an unreachable processor is a 503 naming it. Each call carries the signed-in
//! operator's key, so the processor checks it too.

use axum::{
    Router,
    body::Bytes,
    extract::{Extension, Path, RawQuery, State},
    http::{StatusCode, header},
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
    match request.send().await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            match answer.bytes().await {
                Ok(body) => {
                    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                Err(e) => unavailable(&e),
            }
        }
        Err(e) => unavailable(&e),
    }
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
