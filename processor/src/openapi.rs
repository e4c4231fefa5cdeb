//! The OpenAPI 3 document of the processor's operator API (dead letters), served at
//! `GET /openapi.json`. Every operation wants an API key with the `ops` scope.

use utoipa::OpenApi;

use crate::dead_letters::{
    api::{
        DeadLetterDetail, DeadLetterList, Outcome, Purged, ReplayResult, ReplayStarted, Replayed,
        SelectionBody,
    },
    replay::{JobStatus, ReplayJob},
    store::DeadLetter,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Product event pipeline: processor",
        description = "Dead letters: list, inspect, replay and purge them. Every operation wants an API key with the ops scope."
    ),
    paths(
        crate::dead_letters::api::list,
        crate::dead_letters::api::show,
        crate::dead_letters::api::delete_one,
        crate::dead_letters::api::replay,
        crate::dead_letters::api::progress,
        crate::dead_letters::api::purge
    ),
    components(schemas(
        DeadLetter,
        DeadLetterList,
        DeadLetterDetail,
        SelectionBody,
        Outcome,
        ReplayResult,
        Replayed,
        ReplayStarted,
        JobStatus,
        ReplayJob,
        Purged,
        shared::dead_letter::Reason
    ))
)]
struct ApiDoc;

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi())
}
