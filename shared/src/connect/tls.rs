//! TLS to the backends, for managed PostgreSQL, Redis and RabbitMQ: rustls with the aws-lc-rs
//! provider (no OpenSSL), turned on by each URL (`sslmode=require|verify-ca|verify-full` in
//! `DATABASE_URL`, `rediss://`, `amqps://`). Servers are verified against the system's roots and,
//! for a private certificate authority, the PEM file of `SSL_CERT_FILE` (the variable OpenSSL
//! and rustls-native-certs read), which every client is also given explicitly; PostgreSQL's
//! `sslrootcert` in the URL, when present, wins for PostgreSQL.

use std::{path::PathBuf, sync::Arc};

use rustls::pki_types::{CertificateDer, pem::PemObject};

use crate::config::ConfigError;

/// A private certificate authority's certificates (PEM), trusted beside the system's roots.
#[derive(Clone, Debug)]
pub struct Ca {
    path: PathBuf,
    pem: Arc<str>,
}

impl Ca {
    /// The authority of `SSL_CERT_FILE`, when set.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        match std::env::var_os("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
            None => Ok(None),
            Some(path) => Self::load(PathBuf::from(path))
                .map(Some)
                .map_err(|message| ConfigError {
                    variable: "SSL_CERT_FILE",
                    message,
                }),
        }
    }

    /// Reads the PEM file at `path`, which must hold at least one certificate.
    pub fn load(path: PathBuf) -> Result<Self, String> {
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("{}: holds no PEM certificate", path.display()));
        }
        Ok(Self {
            path,
            pem: pem.into(),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The certificates, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

/// Makes aws-lc-rs the process's rustls provider (once; later calls do nothing), for the
/// clients that take the process default rather than naming one.
pub fn install_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Err only when another provider was installed first, which serves as well.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = Ca::load(empty.clone()).expect_err("no certificate");
        assert!(error.contains("empty.pem"), "{error}");
        let missing = Ca::load(dir.join("missing.pem")).expect_err("missing");
        assert!(missing.contains("missing.pem"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
