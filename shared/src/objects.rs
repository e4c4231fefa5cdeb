//! Object storage for image bytes, through the `object_store` crate (one API for a local folder
//! and any S3-compatible store): `OBJECT_STORE_URL` is `file:///absolute/path` (default: the
//! `data/objects` folder of the working directory, so local runs need nothing) or
//! `s3://bucket/prefix` with the usual `AWS_*` variables (`AWS_ENDPOINT_URL` for a store other
//! than AWS, `AWS_ALLOW_HTTP=true` for one without TLS).
//!
//! Variant URLs start with `OBJECT_STORE_PUBLIC_URL` when set (the URL of a public bucket's root,
//! or a CDN in front of it; the prefix and the key follow);
//! otherwise they are the gateway's `/images/{key}`, which serves the bytes of a local store
//! itself and redirects to a URL presigned for `OBJECT_STORE_URL_TTL_SECS` for S3.

use std::{sync::Arc, time::Duration};

use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions,
    aws::{AmazonS3, AmazonS3Builder},
    local::LocalFileSystem,
    path::Path,
    signer::Signer,
};

use crate::config::{ConfigError, seconds};

pub use object_store::Error;

/// A configured object store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    /// Set for S3: signs the URLs the gateway redirects to.
    signer: Option<Arc<AmazonS3>>,
    /// Put before every key (`prefix/` of `s3://bucket/prefix`).
    prefix: String,
    public_url: Option<String>,
    url_ttl: Duration,
}

/// What `GET /images/{key}` answers.
pub enum Served {
    /// The bytes (a local store).
    Bytes(axum::body::Bytes),
    /// A presigned URL to send the client to (S3).
    Redirect(String),
}

impl Objects {
    /// The store of `OBJECT_STORE_URL`, `OBJECT_STORE_PUBLIC_URL` and `OBJECT_STORE_URL_TTL_SECS`
    /// (3600).
    pub fn from_env() -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError {
            variable: "OBJECT_STORE_URL",
            message,
        };
        let url = match std::env::var("OBJECT_STORE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(url) => url,
            None => {
                let here = std::env::current_dir()
                    .map_err(|e| invalid(format!("no working directory: {e}")))?;
                format!("file://{}", here.join("data/objects").display())
            }
        };
        let public_url = std::env::var("OBJECT_STORE_PUBLIC_URL")
            .ok()
            .filter(|u| !u.is_empty());
        let url_ttl = seconds("OBJECT_STORE_URL_TTL_SECS", 3600)?;
        Self::open(&url, public_url, url_ttl, &[]).map_err(invalid)
    }

    /// The store at `url` (`file:///absolute/path` or `s3://bucket/prefix`); for S3, the
    /// `AWS_*` variables, then `s3` (`aws_endpoint`, `aws_access_key_id`, ... as `object_store`
    /// names them).
    pub fn open(
        url: &str,
        public_url: Option<String>,
        url_ttl: Duration,
        s3: &[(&str, &str)],
    ) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("{e} (got {url:?})"))?;
        let prefix = |path: &str| {
            let path = path.trim_matches('/');
            if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            }
        };
        let (store, signer, prefix): (Arc<dyn ObjectStore>, _, _) = match parsed.scheme() {
            "file" => {
                let folder = parsed
                    .to_file_path()
                    .map_err(|()| format!("not an absolute path (got {url:?})"))?;
                std::fs::create_dir_all(&folder)
                    .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
                let local = LocalFileSystem::new_with_prefix(&folder)
                    .map_err(|e| format!("{}: {e}", folder.display()))?;
                (Arc::new(local), None, String::new())
            }
            "s3" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| format!("no bucket (got {url:?})"))?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (key, value) in s3 {
                    let key = key.parse().map_err(|e| format!("{key}: {e}"))?;
                    builder = builder.with_config(key, *value);
                }
                let s3 = builder.build().map_err(|e| e.to_string())?;
                let s3 = Arc::new(s3);
                let store: Arc<dyn ObjectStore> = s3.clone();
                (store, Some(s3), prefix(parsed.path()))
            }
            other => {
                return Err(format!(
                    "must be file:///absolute/path or s3://bucket/prefix (got scheme {other:?})"
                ));
            }
        };
        Ok(Self {
            store,
            signer,
            prefix,
            public_url: public_url.map(|u| format!("{}/", u.trim_end_matches('/'))),
            url_ttl,
        })
    }

    fn path(&self, key: &str) -> Result<Path, Error> {
        Path::parse(format!("{}{key}", self.prefix)).map_err(Error::from)
    }

    /// Stores `bytes` at `key` as `content_type`.
    pub async fn put(
        &self,
        key: &str,
        bytes: impl Into<axum::body::Bytes>,
        content_type: &str,
    ) -> Result<(), Error> {
        let path = self.path(key)?;
        // A local store keeps no attributes (the gateway serves the type by the key's name).
        let attributes = if self.signer.is_some() {
            Attributes::from_iter([(Attribute::ContentType, content_type.to_owned())])
        } else {
            Attributes::new()
        };
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        let bytes: axum::body::Bytes = bytes.into();
        self.store.put_opts(&path, bytes.into(), options).await?;
        Ok(())
    }

    /// The bytes at `key`.
    pub async fn get(&self, key: &str) -> Result<axum::body::Bytes, Error> {
        self.store.get(&self.path(key)?).await?.bytes().await
    }

    /// Removes `key` (gone already is fine).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every object whose key starts with `prefix` (a folder, `.../images/{id}/`).
    pub async fn delete_all(&self, prefix: &str) -> Result<(), Error> {
        use futures_util::TryStreamExt;
        let folder = self.path(prefix.trim_end_matches('/'))?;
        let found: Vec<Path> = self
            .store
            .list(Some(&folder))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await?;
        for path in found {
            match self.store.delete(&path).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Where a client reads `key`.
    pub fn url(&self, key: &str) -> String {
        match &self.public_url {
            Some(base) => format!("{base}{}{key}", self.prefix),
            None => format!("/images/{key}"),
        }
    }

    /// What the gateway answers for `key`: the bytes of a local store, or a presigned URL.
    pub async fn serve(&self, key: &str) -> Result<Served, Error> {
        match &self.signer {
            Some(s3) => {
                let path = self.path(key)?;
                // Presigning is local: say "not found" for a missing object all the same.
                self.store.head(&path).await?;
                let url = s3
                    .signed_url(axum::http::Method::GET, &path, self.url_ttl)
                    .await?;
                Ok(Served::Redirect(url.to_string()))
            }
            None => self.get(key).await.map(Served::Bytes),
        }
    }
}

/// True when `error` is the store being unreachable or failing (worth holding for), not the
/// object or its key being wrong.
pub fn is_outage(error: &Error) -> bool {
    !matches!(error, Error::NotFound { .. } | Error::InvalidPath { .. })
}
