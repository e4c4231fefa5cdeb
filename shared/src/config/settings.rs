//! Every setting of the pipeline, with its default and its meaning: the one source of each
//! binary's `--help`, of `docs/configuration.md` and of the list of variables a service knows
//! (`environment`).

/// Which services read a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// Every service.
    All,
    /// These services only.
    Only(&'static [&'static str]),
}

impl Readers {
    /// Whether `service` reads the setting.
    pub fn include(self, service: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(services) => services.contains(&service),
        }
    }

    fn shown(self) -> String {
        match self {
            Self::All => "all".to_owned(),
            Self::Only(services) => services.join(", "),
        }
    }
}

/// One environment variable a service reads.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable.
    pub name: &'static str,
    /// Its value when unset or empty, as written in the variable; empty when it has none (the
    /// meaning says what unset does).
    pub default: &'static str,
    /// What it does, in a sentence or two.
    pub meaning: &'static str,
    /// Who reads it.
    pub readers: Readers,
}

const fn setting(
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
    readers: Readers,
) -> Setting {
    Setting {
        name,
        default,
        meaning,
        readers,
    }
}

use Readers::{All, Only};

const GATEWAY: Readers = Only(&["gateway"]);
const PROCESSOR: Readers = Only(&["processor"]);
const NOTIFIER: Readers = Only(&["notifier"]);
const IMAGER: Readers = Only(&["imager"]);
const DASHBOARD: Readers = Only(&["dashboard"]);
const STORE: Readers = Only(&["gateway", "imager"]);
const REDIS: Readers = Only(&["gateway", "processor", "imager", "dashboard"]);
const WITH_KEYS: Readers = Only(&["gateway", "processor", "notifier", "imager"]);

/// Every setting, in the order the reference lists them: backing services, then each service's
/// own, then serving and telemetry.
pub const SETTINGS: &[Setting] = &[
    setting(
        "AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "The broker: a comma-separated list of nodes tried in turn; amqps:// for TLS. \
         ?heartbeat=N sets the heartbeat in seconds (3 unless set: a connection silent for two \
         is taken as lost).",
        All,
    ),
    setting(
        "AMQP_USERNAME",
        "",
        "When set, the user for every node of AMQP_URL (from a secret, without URL-encoding).",
        All,
    ),
    setting(
        "AMQP_PASSWORD",
        "",
        "When set, the password for every node of AMQP_URL (from a secret, without URL-encoding).",
        All,
    ),
    setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379",
        "Redis; rediss:// for TLS.",
        REDIS,
    ),
    setting(
        "REDIS_PASSWORD",
        "",
        "When set, Redis's password (apart from the URL).",
        REDIS,
    ),
    setting(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/pipeline",
        "PostgreSQL; the database is created if missing. TLS with ?sslmode=require, verify-ca or \
         verify-full, and sslrootcert=/path/ca.crt for a private authority. The server ends a \
         session idle inside a transaction for 10 s, so a service cut off mid-transaction does \
         not hold its locks.",
        All,
    ),
    setting(
        "DATABASE_USER",
        "",
        "When set, PostgreSQL's user (apart from the URL): a service's own user, a member of its \
         role (gateway migrate).",
        All,
    ),
    setting(
        "DATABASE_PASSWORD",
        "",
        "When set, PostgreSQL's password (apart from the URL).",
        All,
    ),
    setting(
        "GATEWAY_DATABASE_PASSWORD",
        "",
        "Read by `gateway migrate --logins` only: when set, the password of the PostgreSQL user \
         `gateway`, made (or updated) a member of the role pipeline_gateway.",
        GATEWAY,
    ),
    setting(
        "PROCESSOR_DATABASE_PASSWORD",
        "",
        "Read by `gateway migrate --logins` only: the same for the user `processor` \
         (pipeline_processor).",
        GATEWAY,
    ),
    setting(
        "NOTIFIER_DATABASE_PASSWORD",
        "",
        "Read by `gateway migrate --logins` only: the same for the user `notifier` \
         (pipeline_notifier).",
        GATEWAY,
    ),
    setting(
        "IMAGER_DATABASE_PASSWORD",
        "",
        "Read by `gateway migrate --logins` only: the same for the user `imager` \
         (pipeline_imager).",
        GATEWAY,
    ),
    setting(
        "DASHBOARD_DATABASE_PASSWORD",
        "",
        "Read by `gateway migrate --logins` only: the same for the user `dashboard` \
         (pipeline_dashboard).",
        GATEWAY,
    ),
    setting(
        "PGSSLROOTCERT",
        "",
        "When set, the certificate authority PostgreSQL's certificate is checked against, as \
         libpq reads it (sslrootcert in DATABASE_URL wins).",
        All,
    ),
    setting(
        "SSL_CERT_FILE",
        "",
        "When set, a PEM file of a private certificate authority trusted beside the system's \
         roots by the TLS connections to PostgreSQL (unless its URL names sslrootcert), Redis \
         and RabbitMQ (docs/deploy.md, \"TLS to the backing services\").",
        All,
    ),
    setting(
        "PIPELINE_NAMESPACE",
        "pipeline",
        "Prefixes every exchange, queue and Redis key; the PostgreSQL schema.",
        All,
    ),
    setting(
        "INGEST_SHARDS",
        "4",
        "Shards of the ingest exchange; the same for every service of a namespace (on two \
         cores 4 and 16 shards sustained the same rate and 32 a quarter less: run K in \
         docs/benchmarks.md).",
        All,
    ),
    setting(
        "PRODUCT_CACHE_TTL_SECS",
        "1800",
        "How long a product's cached state and catalog details live in Redis (every change \
         rewrites them sooner).",
        Only(&["gateway", "processor"]),
    ),
    setting(
        "API_KEYS_MAX_STALENESS_SECS",
        "300",
        "API keys not read again from PostgreSQL for this long are no longer trusted (requests \
         503 until it answers), so a revocation holds on a replica cut from it.",
        WITH_KEYS,
    ),
    setting(
        "FIRST_API_KEY",
        "",
        "Not read by a service: the compose and Kubernetes bootstrap store it as the first, \
         all-scope key with `gateway keys import --from-env FIRST_API_KEY`.",
        GATEWAY,
    ),
    setting(
        "GATEWAY_ADDR",
        "0.0.0.0:8080",
        "Where the gateway listens.",
        GATEWAY,
    ),
    setting(
        "IDEMPOTENCY_RETENTION_SECS",
        "86400",
        "How long an Idempotency-Key (or event_id) and its answer are remembered.",
        GATEWAY,
    ),
    setting(
        "IDEMPOTENCY_LEASE_SECS",
        "30",
        "How long a request in progress holds its idempotency key; must exceed the confirm \
         timeout.",
        GATEWAY,
    ),
    setting(
        "PUBLISH_CONFIRM_TIMEOUT_MS",
        "5000",
        "How long the gateway waits for the broker's confirm before answering 503.",
        GATEWAY,
    ),
    setting(
        "PUBLISH_CHANNELS",
        "4",
        "Broker channels the gateway publishes on, side by side.",
        GATEWAY,
    ),
    setting(
        "IMAGES_PER_PRODUCT",
        "50",
        "Images one product may have (failed ones do not count); more are 409.",
        GATEWAY,
    ),
    setting(
        "UPLOAD_MEMORY_MIB",
        "64",
        "Bytes of image uploads the gateway holds at once (each is given its Content-Length \
         before its body is read); beyond, 503 with Retry-After.",
        GATEWAY,
    ),
    setting(
        "OBJECT_STORE_URL",
        "file://<working directory>/data/objects",
        "Where images are kept: file:// and an absolute folder (made if missing), or \
         s3://bucket/prefix with the AWS_* settings for any S3-compatible store.",
        STORE,
    ),
    setting(
        "OBJECT_STORE_PUBLIC_URL",
        "",
        "Unset: variant URLs are the gateway's /images/...; set to a public bucket's (or CDN's) \
         root URL to hand those out instead.",
        STORE,
    ),
    setting(
        "OBJECT_STORE_URL_TTL_SECS",
        "3600",
        "How long a presigned S3 URL works.",
        GATEWAY,
    ),
    setting("AWS_REGION", "", "The S3 store's region.", STORE),
    setting(
        "AWS_ACCESS_KEY_ID",
        "",
        "The S3 store's access key id.",
        STORE,
    ),
    setting(
        "AWS_SECRET_ACCESS_KEY",
        "",
        "The S3 store's secret key.",
        STORE,
    ),
    setting(
        "AWS_SESSION_TOKEN",
        "",
        "A session token, with temporary S3 credentials.",
        STORE,
    ),
    setting(
        "AWS_ENDPOINT_URL",
        "",
        "An S3-compatible store's endpoint, when not Amazon S3.",
        STORE,
    ),
    setting(
        "AWS_ALLOW_HTTP",
        "false",
        "true lets AWS_ENDPOINT_URL be plain http://.",
        STORE,
    ),
    setting(
        "PROCESSOR_ADDR",
        "0.0.0.0:8082",
        "Where the processor listens (health, readiness, metrics, dead letters, orders).",
        PROCESSOR,
    ),
    setting(
        "PREFETCH",
        "256",
        "Unacknowledged deliveries per shard, or on the notifier's queue (a shard takes batches \
         of up to 128 and keeps up to three in flight: docs/benchmarks.md).",
        Only(&["processor", "notifier"]),
    ),
    setting(
        "RETRY_DELAYS_MS",
        "1000,10000,60000",
        "The retry ladder for events that fail; then dead-lettered (exported as \
         pipeline_retry_delay_seconds{queue}, which the dashboard reads).",
        PROCESSOR,
    ),
    setting(
        "STOCK_LOW_THRESHOLD",
        "10",
        "Stock falling below it emits stock.low.",
        PROCESSOR,
    ),
    setting(
        "SHARD_LEASE_SECS",
        "10",
        "How long a replica's hold on a shard lasts unless renewed (renewed every quarter of \
         it); a killed replica's shards wait this long for another.",
        PROCESSOR,
    ),
    setting(
        "PROCESSED_EVENTS_RETENTION_SECS",
        "604800",
        "How long a product update's id is remembered (the dedupe window; past it a repeat \
         still changes nothing, each field keeping its newest version); orders' and creations' \
         ids are kept.",
        PROCESSOR,
    ),
    setting(
        "DEAD_LETTER_RETENTION_SECS",
        "2592000",
        "Dead letters not replayed or purged by then are deleted.",
        PROCESSOR,
    ),
    setting(
        "RETENTION_INTERVAL_SECS",
        "3600",
        "How often expired rows are pruned (in batches of 5,000; \
         pipeline_pruned_rows_total{table}).",
        Only(&["processor", "notifier"]),
    ),
    setting(
        "NOTIFIER_ADDR",
        "0.0.0.0:8083",
        "Where the notifier listens (subscriptions, notifications, health, readiness, metrics).",
        NOTIFIER,
    ),
    setting(
        "NOTIFICATION_RETENTION_SECS",
        "2592000",
        "How long downstream events taken in are kept, with their deliveries and attempts, \
         once none is pending (the notifier's dedupe window).",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_TIMEOUT_MS",
        "15000",
        "How long an endpoint has to answer (Standard Webhooks asks 15 to 30 s).",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_RETRY_SCHEDULE_MS",
        "5000,300000,1800000,7200000,18000000,36000000,36000000",
        "Waits before each retry of a delivery; then it has failed.",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_CONCURRENCY",
        "16",
        "Deliveries in flight.",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_CONCURRENCY_PER_ENDPOINT",
        "8",
        "Deliveries in flight to one subscription, so a slow endpoint holds up only its own.",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_DISABLE_AFTER",
        "5",
        "Failed deliveries in a row that disable a subscription.",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_POLL_MS",
        "500",
        "How often due retries are looked for.",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_MAX_SUBSCRIPTIONS",
        "100",
        "Subscriptions per namespace.",
        NOTIFIER,
    ),
    setting(
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS",
        "false",
        "Whether webhooks may reach loopback, private or link-local addresses (true for local \
         development).",
        NOTIFIER,
    ),
    setting(
        "IMAGER_ADDR",
        "0.0.0.0:8084",
        "Where the imager listens (health, readiness, metrics).",
        IMAGER,
    ),
    setting(
        "IMAGE_PREFETCH",
        "2",
        "Image jobs per imager at once, side by side.",
        IMAGER,
    ),
    setting(
        "IMAGE_JOB_TIMEOUT_SECS",
        "120",
        "One attempt at a job (fetch, decode and store, in all); beyond, a failed attempt.",
        IMAGER,
    ),
    setting(
        "IMAGE_MAX_SIDE",
        "10000",
        "Pixels a side; larger images are refused before decoding.",
        IMAGER,
    ),
    setting(
        "IMAGE_MAX_PIXELS",
        "40000000",
        "Pixels in all; larger images are refused before decoding.",
        IMAGER,
    ),
    setting(
        "IMAGE_MAX_DECODED_MIB",
        "160",
        "MiB an image takes decoded (pixels × bytes a pixel: a 16-bit RGBA image takes 8); \
         larger images are refused before decoding.",
        IMAGER,
    ),
    setting(
        "IMAGE_MAX_ATTEMPTS",
        "3",
        "Attempts at a job that fails (a source that does not answer, say); then dead-lettered.",
        IMAGER,
    ),
    setting(
        "IMAGE_RETRY_BACKOFF_MS",
        "1000",
        "The wait before a job's second attempt, doubled before each next.",
        IMAGER,
    ),
    setting(
        "IMAGE_FETCH_TIMEOUT_MS",
        "15000",
        "How long a source_url has to answer.",
        IMAGER,
    ),
    setting(
        "IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS",
        "false",
        "Whether a source_url may reach loopback, private or link-local addresses (true for \
         local development).",
        IMAGER,
    ),
    setting(
        "DASHBOARD_ADDR",
        "0.0.0.0:8081",
        "Where the dashboard listens.",
        DASHBOARD,
    ),
    setting(
        "GATEWAY_URL",
        "http://127.0.0.1:8080",
        "Where the dashboard reads the gateway.",
        DASHBOARD,
    ),
    setting(
        "PROCESSOR_URL",
        "http://127.0.0.1:8082",
        "Where the dashboard reads the processor.",
        DASHBOARD,
    ),
    setting(
        "NOTIFIER_URL",
        "http://127.0.0.1:8083",
        "Where the dashboard reads the notifier.",
        DASHBOARD,
    ),
    setting(
        "IMAGER_URL",
        "http://127.0.0.1:8084",
        "Where the dashboard reads the imager.",
        DASHBOARD,
    ),
    setting(
        "DASHBOARD_REFRESH_MS",
        "1000",
        "How often the live numbers refresh.",
        DASHBOARD,
    ),
    setting(
        "DASHBOARD_SECURE_COOKIES",
        "true",
        "Whether the session cookie is Secure (HTTPS, or localhost).",
        DASHBOARD,
    ),
    setting(
        "DASHBOARD_MAX_STREAMS",
        "32",
        "Live pages at once.",
        DASHBOARD,
    ),
    setting(
        "SHUTDOWN_DEADLINE_SECS",
        "30",
        "How long a stopping service drains before it exits anyway.",
        All,
    ),
    setting(
        "HTTP_HEADER_READ_TIMEOUT_SECS",
        "30",
        "A client must send its request head within this.",
        All,
    ),
    setting(
        "HTTP_REQUEST_TIMEOUT_SECS",
        "30",
        "A request not answered within this is 408.",
        All,
    ),
    setting(
        "HTTP_MAX_CONCURRENT_REQUESTS",
        "512",
        "More requests at once are 503 with Retry-After (never /health, /ready, /metrics).",
        All,
    ),
    setting(
        "HTTP_MAX_CONCURRENT_REQUESTS_PER_KEY",
        "64",
        "Requests one API key may have in progress at once, per replica; more are 429 with \
         Retry-After.",
        All,
    ),
    setting(
        "HTTP_MIN_BODY_RATE_BYTES",
        "1024",
        "A request body slower than this many bytes a second on average (after 5 s) is 408.",
        All,
    ),
    setting(
        "RUST_LOG",
        "info,sqlx=warn",
        "What is logged (tracing-subscriber's EnvFilter syntax).",
        All,
    ),
    setting(
        "LOG_FORMAT",
        "pretty",
        "json for one JSON object per line.",
        All,
    ),
    setting(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "Unset: traces off. e.g. http://collector:4318 to export traces over OTLP/HTTP, or \
         http://collector:4317 with OTEL_EXPORTER_OTLP_PROTOCOL=grpc (docs/observability.md).",
        All,
    ),
    setting(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "",
        "The traces' own endpoint, the full URL (wins over OTEL_EXPORTER_OTLP_ENDPOINT).",
        All,
    ),
    setting(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf",
        "http/protobuf (OTLP/HTTP, port 4318) or grpc (OTLP/gRPC, port 4317).",
        All,
    ),
    setting(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "",
        "The traces' own protocol (wins over OTEL_EXPORTER_OTLP_PROTOCOL).",
        All,
    ),
    setting(
        "OTEL_SERVICE_NAME",
        "",
        "The service.name traces carry (default: the binary's name).",
        All,
    ),
    setting(
        "OTEL_RESOURCE_ATTRIBUTES",
        "",
        "key=value,... added to the traces' resource (service.namespace, deployment.environment, ...).",
        All,
    ),
];

/// The setting `name`, if it is one.
pub fn find(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.name == name)
}

/// The settings `service` reads, as `--help` lists them.
pub fn help(service: &str) -> String {
    let mut text = String::new();
    for setting in SETTINGS.iter().filter(|s| s.readers.include(service)) {
        text.push_str("  ");
        text.push_str(setting.name);
        if !setting.default.is_empty() {
            text.push_str(&format!(" (default: {})", setting.default));
        }
        text.push('\n');
        for line in wrap(setting.meaning, 90) {
            text.push_str("      ");
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

/// `text` in lines of at most `width` characters (a longer word keeps its own line).
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// `docs/configuration.md`, as generated from [`SETTINGS`].
pub fn reference() -> String {
    let mut text = String::from(
        "# Configuration\n\n\
         <!-- Generated from shared/src/config/settings.rs (the source of every binary's \
         `--help` too); a test fails when this file differs. To regenerate it: \
         `UPDATE_CONFIGURATION_MD=1 cargo test -p shared settings` -->\n\n\
         Environment variables, read once at start; an invalid value stops start-up with one \
         line naming the variable. Each service logs, once at start, every setting it reads \
         with the value it runs with (the default where it is not set, `unset` where it has none; \
         passwords, keys and secrets as `REDACTED`, URLs without credentials or query values) \
         and which of them were set, and warns of any variable that looks like a setting but is none (`INGEST_SHARD is not \
         a setting of the pipeline and is ignored; did you mean INGEST_SHARDS?`). \
         `<service> --help` lists the settings that service reads.\n\n\
         | variable | default | meaning | read by |\n| --- | --- | --- | --- |\n",
    );
    for setting in SETTINGS {
        let default = if setting.default.is_empty() {
            "unset".to_owned()
        } else {
            format!("`{}`", setting.default)
        };
        text.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            setting.name,
            default,
            setting.meaning.replace('|', "\\|"),
            setting.readers.shown()
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_named_once_and_every_service_reads_some() {
        for (i, setting) in SETTINGS.iter().enumerate() {
            assert!(
                SETTINGS[..i].iter().all(|s| s.name != setting.name),
                "{} twice",
                setting.name
            );
            assert!(setting.meaning.ends_with('.'), "{}", setting.name);
        }
        for service in ["gateway", "processor", "notifier", "imager", "dashboard"] {
            let help = help(service);
            assert!(help.contains("AMQP_URL (default: amqp://"), "{service}");
            assert!(help.contains("SHUTDOWN_DEADLINE_SECS"), "{service}");
        }
        assert!(help("gateway").contains("GATEWAY_ADDR (default: 0.0.0.0:8080)"));
        assert!(!help("processor").contains("GATEWAY_ADDR"));
        assert!(!help("dashboard").contains("WEBHOOK_TIMEOUT_MS"));
    }

    #[test]
    fn help_lines_are_wrapped() {
        assert_eq!(wrap("a bb ccc", 4), ["a bb", "ccc"]);
        assert_eq!(wrap("abcdefgh ij", 4), ["abcdefgh", "ij"]);
        for line in help("notifier").lines() {
            assert!(
                line.chars().count() <= 96 || !line.trim().contains(' '),
                "{line}"
            );
        }
    }

    #[test]
    fn the_configuration_reference_is_generated_from_the_settings() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let expected = reference();
        if std::env::var_os("UPDATE_CONFIGURATION_MD").is_some() {
            std::fs::write(&path, &expected).expect("docs/configuration.md written");
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            found == expected,
            "docs/configuration.md differs from shared/src/config/settings.rs; regenerate it: \
             UPDATE_CONFIGURATION_MD=1 cargo test -p shared settings"
        );
    }
}
