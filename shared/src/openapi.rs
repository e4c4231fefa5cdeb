//! What every service's OpenAPI document shares: the bearer security scheme, the answers any
//! protected operation may give (401, 403, 408, 429, 503; 400 wherever a parameter or a body is
//! read; 404 wherever the path names a resource; 413 and 415 wherever a body is), the error body
//! (an RFC 9457 problem), and the open operational endpoints
//! (`/health`, `/ready`, `/metrics`, `/openapi.json`, `/docs`). [`finish`] adds them to a
//! service's document, so each service only describes its own routes.

use serde::Serialize;
use utoipa::{
    ToSchema,
    openapi::{
        ContentBuilder, HttpMethod, ObjectBuilder, OpenApi, PathItem, Ref, RefOr, Response,
        ResponseBuilder, Type,
        header::HeaderBuilder,
        path::OperationBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

/// Every error, an RFC 9457 problem (`application/problem+json`): its type and stable code, a
/// sentence, the request it answers, and, where it applies, which field, scope or dependency.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The problem type: `/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, in a sentence.
    pub detail: String,
    /// A stable name of the problem a program can act on (`invalid`, `not_found`,
    /// `missing_key`, `rate_limited`, `unavailable`, ... listed in the API reference).
    pub code: String,
    /// The path of the request it answers.
    pub instance: Option<String>,
    /// The request's id (also the `Request-Id` header).
    pub request_id: Option<String>,
    /// `detail` again, for clients written before problems were adopted.
    #[deprecated = "read `detail`"]
    pub error: String,
    /// The body field, header, path or query parameter at fault (400).
    pub field: Option<String>,
    /// The scope the key lacks (403).
    pub scope: Option<String>,
    /// The dependency that is down (503).
    pub dependency: Option<String>,
    /// `unknown` when a publish was not confirmed in time: it may have been accepted (503).
    pub outcome: Option<String>,
}

/// `GET /openapi.json`, the document `document` makes (with [`finish`] applied by it), and
/// `GET /docs`, its [`page`].
pub fn route(document: fn() -> OpenApi) -> axum::Router {
    axum::Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(move || async move { axum::Json(document()) }),
        )
        .route(
            "/docs",
            axum::routing::get(move || async move { page(document()) }),
        )
}

/// The API reference page of `document`: Scalar's (utoipa-scalar), the document carried in the
/// page, titled as the document is; the reader's browser loads Scalar's script from jsDelivr.
pub fn page(document: OpenApi) -> axum::response::Html<String> {
    let title = format!("<title>{}</title>", document.info.title);
    axum::response::Html(utoipa_scalar::Scalar::new(document).to_html().replacen(
        "<title>Scalar</title>",
        &title,
        1,
    ))
}

/// The name of the security scheme.
pub const BEARER: &str = "api_key";

/// An error answer (an `ErrorBody`) with its `headers` (name, description).
pub fn error(description: &str, headers: &[(&str, &str)]) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        crate::api::PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    for (name, about) in headers {
        response = response.header(
            *name,
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(*about))
                .build(),
        );
    }
    response.build()
}

/// The shared responses, by status and component name.
fn answers() -> Vec<(&'static str, &'static str, Response)> {
    vec![
        (
            "400",
            "BadRequest",
            error(
                "A parameter or body field is invalid; `field` names it",
                &[],
            ),
        ),
        (
            "401",
            "Unauthorized",
            error(
                "No API key, or an unknown or revoked one",
                &[("WWW-Authenticate", "Bearer")],
            ),
        ),
        (
            "403",
            "Forbidden",
            error(
                "The key lacks the scope the endpoint wants; `scope` names it",
                &[],
            ),
        ),
        (
            "404",
            "NotFound",
            error(
                "Nothing has the id in the path; `error` says what was looked for",
                &[],
            ),
        ),
        (
            "408",
            "RequestTimeout",
            error(
                "The request was not completed within the request timeout",
                &[],
            ),
        ),
        (
            "413",
            "PayloadTooLarge",
            error("The body is over the endpoint's limit", &[]),
        ),
        (
            "415",
            "UnsupportedMediaType",
            error(
                "The body is not of a type the endpoint takes (JSON: Content-Type: application/json)",
                &[],
            ),
        ),
        (
            "429",
            "TooManyRequests",
            error(
                "The key is over its rate",
                &[
                    ("Retry-After", "Seconds until the key may call again"),
                    ("RateLimit-Policy", "The key's quota: \"key\";q=N;w=1"),
                    ("RateLimit", "What is left: \"key\";r=0;t=seconds"),
                ],
            ),
        ),
        (
            "503",
            "Unavailable",
            error(
                "A dependency is down, or the service is at its limit of requests in flight; nothing was done",
                &[("Retry-After", "Seconds to wait before retrying")],
            ),
        ),
    ]
}

const OPEN: [&str; 5] = ["/health", "/ready", "/metrics", "/openapi.json", "/docs"];

/// `doc`, titled and described, with the bearer scheme required by every operation it
/// describes, the shared answers added where the operation does not give its own, and the
/// operational endpoints.
pub fn finish(mut doc: OpenApi, title: &str, description: &str) -> OpenApi {
    doc.info.title = title.to_owned();
    doc.info.description = Some(description.to_owned());
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        BEARER.to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`ppk_...`) made with `gateway keys create`, holding the scope the endpoint names",
                ))
                .build(),
        ),
    );
    components.schemas.insert(
        "ErrorBody".to_owned(),
        <ErrorBody as utoipa::PartialSchema>::schema(),
    );
    for (_, name, response) in answers() {
        components
            .responses
            .insert(name.to_owned(), RefOr::T(response));
    }
    let required = SecurityRequirement::new::<_, [&str; 0], &str>(BEARER, []);
    for (path, item) in &mut doc.paths.paths {
        let names_a_resource = path.contains('{');
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![required.clone()]);
            let reads_input = operation.request_body.is_some()
                || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
            for (status, name, _) in answers() {
                let applies = match status {
                    "400" => reads_input,
                    "404" => names_a_resource,
                    "413" | "415" => operation.request_body.is_some(),
                    _ => true,
                };
                if applies {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
                }
            }
        }
    }
    for path in OPEN {
        doc.paths.paths.insert(path.to_owned(), open(path));
    }
    doc
}

/// The operation id of an operational endpoint: its own in every document (no service's
/// operation is named `get_` and one of these).
fn open_operation_id(path: &str) -> &'static str {
    match path {
        "/health" => "get_health",
        "/ready" => "get_ready",
        "/metrics" => "get_metrics",
        "/docs" => "get_docs",
        _ => "get_openapi_document",
    }
}

/// An operational endpoint: no key, its own operation id, and what it answers.
fn open(path: &str) -> PathItem {
    let json = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                    .build(),
            )
            .build()
    };
    let mut operation = OperationBuilder::new()
        .operation_id(Some(open_operation_id(path)))
        .tag("operations")
        .security(SecurityRequirement::default());
    operation = match path {
        "/health" => operation
            .summary(Some("Liveness: the process answers"))
            .response("200", json("`{\"status\": \"healthy\"}`")),
        "/ready" => operation
            .summary(Some(
                "Readiness: every dependency and consumed queue, 503 naming what is down",
            ))
            .response(
                "200",
                json(
                    "Ready (the processor also lists its `shards`; a dependency the service can \
                     work without, down, is listed under `degraded`: PostgreSQL at the gateway)",
                ),
            )
            .response(
                "503",
                json("Not ready: `down`, `without_consumer` and `waiting_for` name why"),
            ),
        "/metrics" => operation.summary(Some("Prometheus metrics")).response(
            "200",
            ResponseBuilder::new()
                .description("Prometheus text format")
                .content(
                    "text/plain",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .build(),
        ),
        "/docs" => operation
            .summary(Some("This document as a page to read and try (Scalar)"))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("An HTML page")
                    .content(
                        "text/html",
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                            .build(),
                    )
                    .build(),
            ),
        _ => operation
            .summary(Some("This document"))
            .response("200", json("The OpenAPI document")),
    };
    PathItem::new(HttpMethod::Get, operation.build())
}
