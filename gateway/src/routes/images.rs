//! Product images: `POST /products/{id}/images` takes the raw image (JPEG, PNG or WebP, up to
//! 10 MiB) or `{"source_url"}` and queues it for the imager; `GET /products/{id}/images/{image_id}`
//! says where it is; `GET /images/{key}` serves the variants (the bytes from a local store, a
//! presigned redirect for S3).

use std::sync::Arc;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use shared::{
    api::{ApiError, bad, db},
    contract::{ImageJob, ImageSource},
    gateway::catalog::VariantsView,
    gateway::images::{self, Status},
    model::ProductId,
    objects::{Served, is_outage},
};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::{AppState, ingest::Refused};
use crate::publisher::PublishError;

/// Largest image taken (413 above).
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

/// What an accepted image answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ImageAccepted {
    /// The image, to follow with `GET /products/{id}/images/{image_id}`.
    pub image_id: Uuid,
    /// `processing`.
    pub status: Status,
}

/// Where an image is.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ImageStatus {
    /// The image.
    pub image_id: Uuid,
    /// `processing`, `ready` or `failed`.
    pub status: Status,
    /// Why it failed (or why its last attempt did, while it is retried); `null` otherwise.
    pub error: Option<String>,
    /// Its variants once ready; `null` before.
    pub variants: Option<VariantsView>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromUrl {
    source_url: String,
}

/// Takes an image of a catalog product: the raw bytes (`Content-Type: image/jpeg`, `image/png`
/// or `image/webp`, at most 10 MiB) or `{"source_url": "https://..."}` for the imager to fetch
/// (never from a private network). `202` once it is stored and queued; the imager makes its
/// variants, and the product lists it when ready. Scope: `catalog:write`.
#[utoipa::path(
    post,
    path = "/products/{id}/images",
    tag = "catalog",
    params(("id" = String, Path, description = "Product id")),
    request_body(description = "The image (JPEG, PNG or WebP, at most 10 MiB), or {\"source_url\": \"https://...\"}",
        content(
            (crate::openapi::ImageBytes = "image/jpeg"), (crate::openapi::ImageBytes = "image/png"),
            (crate::openapi::ImageBytes = "image/webp"),
            (crate::openapi::ImageSourceBody = "application/json"),
        )),
    responses(
        (status = 202, description = "Stored and queued", body = ImageAccepted,
            headers(("Location" = String, description = "The image's status URL"))),
    )
)]
pub async fn post_image(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Refused> {
    Ok(accept(&state, &id, &headers, body).await?)
}

/// Room in memory for an upload: its declared length (the most an image may be without one),
/// taken before its body is read; `503` with `Retry-After` when uploads in progress hold it all.
fn reserve(state: &AppState, headers: &HeaderMap) -> Result<OwnedSemaphorePermit, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_IMAGE_BYTES) {
        return Err(ApiError::PayloadTooLarge("10 MiB"));
    }
    let room = declared.unwrap_or(MAX_IMAGE_BYTES).max(1);
    let room = u32::try_from(room).unwrap_or(u32::MAX);
    Arc::clone(&state.uploads)
        .try_acquire_many_owned(room)
        .map_err(|_| {
            metrics::counter!(shared::metric::HTTP_SHED_TOTAL).increment(1);
            ApiError::unavailable(
                "upload_memory",
                "uploads in progress hold all of UPLOAD_MEMORY_MIB",
            )
        })
}

/// The body, at most [`MAX_IMAGE_BYTES`] (413 beyond).
async fn read(body: Body) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, MAX_IMAGE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge("10 MiB"))
        }
        Err(e) => Err(bad("body", format!("the body could not be read: {e}"))),
    }
}

async fn accept(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id: ProductId = id
        .parse()
        .map_err(|e| bad("product_id", format!("product_id {e}")))?;
    let (media, extension) = media(headers)?;
    // Held until the bytes are in the object store.
    let _room = reserve(state, headers)?;
    let body = read(body).await?;
    let pool = shared::api::pool(&state.database)?;
    if shared::gateway::catalog::load(pool, &id)
        .await
        .map_err(db)?
        .is_none()
    {
        return Err(ApiError::NotFound(
            format!("no catalog entry for product {id}; create it with POST /products").into(),
        ));
    }
    let image_id = images::new_id();
    let source = match extension {
        Some(extension) => {
            if body.is_empty() {
                return Err(bad("body", "the image is empty"));
            }
            let key = images::key(&state.namespace, image_id, &format!("original.{extension}"));
            state
                .objects
                .put(&key, body.clone(), &media)
                .await
                .map_err(|e| ApiError::unavailable("object_store", e))?;
            ImageSource::Upload { key }
        }
        None => ImageSource::Url {
            url: source_url(&body)?,
        },
    };
    let recorded = match &source {
        ImageSource::Upload { key } | ImageSource::Url { url: key } => key.clone(),
    };
    let job = ImageJob {
        image_id,
        product_id: id.clone(),
        source,
    };
    insert(state, pool, &job, &recorded).await?;
    let trace = shared::trace::from_http(headers);
    if let Err(e) = state.publisher.publish_job(&job, &trace).await {
        // Not queued (or not known to be): nothing stays behind, the client sends it again.
        let _ = images::remove(pool, image_id).await;
        forget(state, &job).await;
        return Err(unqueued(e));
    }
    metrics::counter!(shared::metric::IMAGES_RECEIVED_TOTAL).increment(1);
    let location = format!("/products/{id}/images/{image_id}");
    let accepted = ImageAccepted {
        image_id,
        status: Status::Processing,
    };
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The request's media type, and the extension of the image it declares (`None`: JSON with a
/// `source_url`); a `415` for any other.
fn media(headers: &HeaderMap) -> Result<(String, Option<&'static str>), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let extension = match media.as_str() {
        "image/jpeg" => Some("jpg"),
        "image/png" => Some("png"),
        "image/webp" => Some("webp"),
        "application/json" => None,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "an image (image/jpeg, image/png or image/webp) or JSON {\"source_url\"}",
            ));
        }
    };
    Ok((media, extension))
}

/// Records the job's image as `processing` (its upload's key or its source URL as
/// `recorded`); when it cannot be, nothing of it stays behind.
async fn insert(
    state: &AppState,
    pool: &sqlx::PgPool,
    job: &ImageJob,
    recorded: &str,
) -> Result<(), ApiError> {
    let (image_id, id) = (job.image_id, &job.product_id);
    match images::insert(pool, image_id, id, recorded, state.images_per_product).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            forget(state, job).await;
            Err(ApiError::Conflict(
                format!(
                    "product {id} has {} images, the most it may have (IMAGES_PER_PRODUCT); \
                     failed ones do not count",
                    state.images_per_product
                )
                .into(),
            ))
        }
        Err(e) => {
            forget(state, job).await;
            Err(db(e))
        }
    }
}

/// The `source_url` of a JSON body: an absolute `http` or `https` URL.
fn source_url(body: &[u8]) -> Result<String, ApiError> {
    let request: FromUrl = serde_json::from_slice(body).map_err(|e| {
        let field = if e.to_string().contains("source_url") || e.is_data() {
            "source_url"
        } else {
            "body"
        };
        bad(
            field,
            format!("expected {{\"source_url\": \"https://...\"}}: {e}"),
        )
    })?;
    let url = url::Url::parse(&request.source_url)
        .map_err(|e| bad("source_url", format!("source_url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(bad(
            "source_url",
            "source_url must be an http or https URL with a host",
        ));
    }
    if request.source_url.len() > 2048 {
        return Err(bad(
            "source_url",
            "source_url must be at most 2048 characters",
        ));
    }
    Ok(url.to_string())
}

/// Removes an upload that will not be processed (best effort).
async fn forget(state: &AppState, job: &ImageJob) {
    if let ImageSource::Upload { key } = &job.source {
        let _ = state.objects.delete(key).await;
    }
}

fn unqueued(error: PublishError) -> ApiError {
    ApiError::unavailable("rabbitmq", error)
}

/// Where an image of a product is: `processing`, `ready` with its variants, or `failed` with
/// why. Scope: `products:read`.
#[utoipa::path(
    get,
    path = "/products/{id}/images/{image_id}",
    tag = "catalog",
    params(("id" = String, Path, description = "Product id"),
           ("image_id" = String, Path, description = "Image id")),
    responses((status = 200, description = "The image's status", body = ImageStatus))
)]
pub async fn get_image(
    State(state): State<AppState>,
    Path((id, image_id)): Path<(String, String)>,
) -> Result<Json<ImageStatus>, ApiError> {
    let id: ProductId = id
        .parse()
        .map_err(|e| bad("product_id", format!("product_id {e}")))?;
    let image_id: Uuid = image_id
        .parse()
        .map_err(|e| bad("image_id", format!("image_id is not a UUID: {e}")))?;
    let pool = shared::api::pool(&state.database)?;
    let record = images::find(pool, image_id)
        .await
        .map_err(db)?
        .filter(|r| r.product_id == id.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no image {image_id} of product {id}").into()))?;
    Ok(Json(ImageStatus {
        image_id: record.image_id,
        status: record.status,
        error: record.error,
        variants: record.variants.map(|v| v.view(&state.objects)),
    }))
}

/// Serves a stored variant: its bytes (a local store; cached for a year, since a key's bytes
/// never change) or a redirect to a presigned URL (S3). No key needed: image ids are random,
/// so a variant's URL is known only to those who were given it, as with a presigned URL.
#[utoipa::path(
    get,
    path = "/images/{key}",
    tag = "catalog",
    params(("key" = String, Path, description = "The variant's object key, as in its URL")),
    security(()),
    responses(
        (status = 200, description = "The variant's bytes", content_type = "image/*"),
        (status = 302, description = "To a presigned URL of the object store",
            headers(("Location" = String, description = "The presigned URL"))),
    )
)]
pub async fn serve_image(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    let not_found = || ApiError::NotFound(format!("no image at {key}").into()).into_response();
    let Some(content_type) = images::content_type_of(&key) else {
        return not_found();
    };
    if !key.starts_with(&format!("{}/images/", state.namespace.as_str())) {
        return not_found();
    }
    match state.objects.serve(&key).await {
        Ok(Served::Bytes(bytes)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
                // An upload is served before the imager has judged it: never as anything else.
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; sandbox",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Served::Redirect(url)) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, url.as_str()),
                (header::CACHE_CONTROL, "private, max-age=60"),
            ],
        )
            .into_response(),
        Err(e) if !is_outage(&e) => not_found(),
        Err(e) => ApiError::unavailable("object_store", e).into_response(),
    }
}
