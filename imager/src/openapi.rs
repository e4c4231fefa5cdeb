//! The OpenAPI 3 document of the imager, served at `GET /openapi.json`: it has only the
//! operational endpoints (its work comes from its queue).

use utoipa::OpenApi;

#[derive(OpenApi)]
struct ApiDoc;

const TITLE: &str = "Product event pipeline: imager";
const DESCRIPTION: &str = "Makes the variants of product images from its queue; serves only health, readiness and metrics.";

/// The document, with the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi(), TITLE, DESCRIPTION)
}
