//! The OpenAPI 3 document of the processor's operator API (dead letters), served at
//! `GET /openapi.json`. Every operation wants an API key with the `ops` scope.

use utoipa::OpenApi;

use crate::dead_letters::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Product event pipeline: processor",
        description = "Dead letters: list, inspect, replay and purge them. Every operation wants an API key with the ops scope."
    ),
    paths(
        api::list,
        api::show,
        api::delete_one,
        api::replay,
        api::progress,
        api::purge
    )
)]
struct ApiDoc;

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi())
}
