//! The OpenAPI 3 document of the processor's operator API (dead letters), served at
//! `GET /openapi.json`. Every operation wants an API key with the `ops` scope.

use utoipa::OpenApi;

use crate::dead_letters::api::*;

#[derive(OpenApi)]
#[openapi(paths(list, show, delete_one, replay, progress, purge))]
struct ApiDoc;

const TITLE: &str = "Product event pipeline: processor";
const DESCRIPTION: &str = "Dead letters: list, inspect, replay and purge them. Every operation wants an API key with the ops scope.";

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi(), TITLE, DESCRIPTION)
}
