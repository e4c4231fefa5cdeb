//! What the environment says at start, reported once: every setting the service reads with the
//! value it runs with, the default where the variable is not set (values that may hold secrets
//! redacted), which of them the environment set, and every variable that looks like one of the
//! pipeline's but is not (a misspelling is otherwise silently ignored), with the setting it
//! probably meant.

use super::settings::{SETTINGS, find};

/// The prefixes of the pipeline's own settings: a variable with one of them that is not
/// a setting is probably a mistake.
const OURS: &[&str] = &[
    "AMQP_",
    "API_KEYS_",
    "DASHBOARD_",
    "DATABASE_",
    "DEAD_LETTER_",
    "GATEWAY_",
    "HTTP_",
    "IDEMPOTENCY_",
    "IMAGER_",
    "IMAGES_",
    "IMAGE_",
    "INGEST_",
    "NOTIFICATION_",
    "NOTIFIER_",
    "OBJECT_STORE_",
    "PIPELINE_",
    "PROCESSED_",
    "PROCESSOR_",
    "PRODUCT_",
    "PUBLISH_",
    "REDIS_",
    "RETENTION_",
    "RETRY_",
    "SHARD_",
    "SHUTDOWN_",
    "STOCK_",
    "UPLOAD_",
    "WEBHOOK_",
];

/// Whether `name` is one the platform sets, not a setting of ours with a mistake in it: the
/// proxies' variables, and the service links Kubernetes and Docker add for every Service
/// (`REDIS_SERVICE_HOST`, `GATEWAY_PORT_8080_TCP_ADDR`, ...).
fn platforms(name: &str) -> bool {
    matches!(name, "HTTP_PROXY" | "HTTPS_PROXY" | "NO_PROXY")
        || name.contains("_SERVICE_")
        || name.ends_with("_PORT")
        || name.contains("_PORT_")
}

/// A variable that looks like the pipeline's but is not, and what it probably meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    /// The variable.
    pub name: String,
    /// The known setting nearest to it, if one is close.
    pub meant: Option<&'static str>,
}

/// The unknown variables among `names`.
pub fn unknown<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<Unknown> {
    let mut found: Vec<Unknown> = names
        .into_iter()
        .filter(|name| OURS.iter().any(|prefix| name.starts_with(prefix)))
        .filter(|name| find(name).is_none() && !platforms(name))
        .map(|name| Unknown {
            name: name.to_owned(),
            meant: nearest(name),
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The known setting at most 3 edits from `name`, if any.
fn nearest(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .map(|known| (distance(name, known.name), known.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance, over bytes (the names are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

/// `value` of `name` as a log may show it: secrets and keys as `REDACTED` (a variable named for
/// a password, secret, key or token, unless it is a setting with a default, which no secret
/// has: `API_KEYS_MAX_STALENESS_SECS`), URLs without credentials or query values.
pub fn shown(name: &str, value: &str) -> String {
    let secret = ["PASSWORD", "SECRET", "KEY", "TOKEN"]
        .iter()
        .any(|word| name.contains(word))
        && find(name).is_none_or(|setting| setting.default.is_empty());
    if secret {
        "REDACTED".to_owned()
    } else if name.ends_with("_URL") || name.ends_with("_ENDPOINT") {
        value
            .split(',')
            .map(|url| crate::egress::redacted_str(url.trim()))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        value.to_owned()
    }
}

/// A setting a service reads, as it runs with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The variable.
    pub name: &'static str,
    /// Its value as a log may show it ([`shown`]): the variable's when set and not empty, else
    /// the default, else `unset` (the setting's meaning says what that does).
    pub value: String,
    /// Whether the environment set it.
    pub set: bool,
}

/// Every setting `service` reads ([`super::settings::Readers`]), in the reference's order, as
/// it runs with it, the environment read through `value_of`.
pub fn effective(service: &str, value_of: impl Fn(&str) -> Option<String>) -> Vec<Effective> {
    SETTINGS
        .iter()
        .filter(|setting| setting.readers.include(service))
        .map(|setting| {
            let given = value_of(setting.name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty());
            let value = match (&given, setting.default) {
                (Some(value), _) => shown(setting.name, value),
                (None, "") => "unset".to_owned(),
                (None, default) => shown(setting.name, &default_value(default)),
            };
            Effective {
                name: setting.name,
                value,
                set: given.is_some(),
            }
        })
        .collect()
}

/// A default as the service resolves it: the working directory where the reference names it.
fn default_value(default: &str) -> String {
    match std::env::current_dir() {
        Ok(here) => default.replace("<working directory>", &here.display().to_string()),
        Err(_) => default.to_owned(),
    }
}

/// Logs, once at start, every setting `service` reads with the value it runs with (redacted),
/// and which the environment set; warns of every variable that looks like the pipeline's but
/// is not.
pub fn report(service: &str) {
    let settings = effective(service, |name| std::env::var(name).ok());
    let set: Vec<&str> = settings.iter().filter(|s| s.set).map(|s| s.name).collect();
    let settings = settings
        .iter()
        .map(|s| format!("{}={}", s.name, s.value))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        settings = %settings,
        set = %set.join(","),
        "The {service}'s settings as it runs with them (those not set at their defaults)."
    );
    let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    for unknown in unknown(names.iter().map(String::as_str)) {
        match unknown.meant {
            Some(meant) => tracing::warn!(
                variable = %unknown.name,
                "{} is not a setting of the pipeline and is ignored; did you mean {meant}?",
                unknown.name
            ),
            None => tracing::warn!(
                variable = %unknown.name,
                "{} is not a setting of the pipeline and is ignored.",
                unknown.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelled_setting_is_named_with_the_one_it_meant() {
        let found = unknown([
            "INGEST_SHARD",
            "REDIS_PASSWORD",
            "HOME",
            "WEBHOOK_TIMEOUT",
            "PIPELINE_SOMETHING_ELSE_ENTIRELY",
            "REDIS_SERVICE_HOST",
            "GATEWAY_PORT_8080_TCP_ADDR",
            "HTTP_PROXY",
        ]);
        assert_eq!(
            found,
            [
                Unknown {
                    name: "INGEST_SHARD".into(),
                    meant: Some("INGEST_SHARDS")
                },
                Unknown {
                    name: "PIPELINE_SOMETHING_ELSE_ENTIRELY".into(),
                    meant: None
                },
                Unknown {
                    name: "WEBHOOK_TIMEOUT".into(),
                    meant: Some("WEBHOOK_TIMEOUT_MS")
                },
            ]
        );
    }

    #[test]
    fn secrets_are_never_shown() {
        assert_eq!(shown("REDIS_PASSWORD", "hunter2"), "REDACTED");
        assert_eq!(shown("FIRST_API_KEY", "ppk_x"), "REDACTED");
        assert_eq!(shown("AWS_SECRET_ACCESS_KEY", "s"), "REDACTED");
        assert_eq!(
            shown("AMQP_URL", "amqp://u:p@a:5672/%2f, amqp://u:p@b:5672/%2f"),
            "amqp://a:5672/%2f,amqp://b:5672/%2f"
        );
        assert_eq!(
            shown(
                "DATABASE_URL",
                "postgres://app:pw@db/pipeline?sslmode=verify-full"
            ),
            "postgres://db/pipeline?sslmode=REDACTED"
        );
        assert_eq!(shown("INGEST_SHARDS", "8"), "8");
        assert_eq!(shown("API_KEYS_MAX_STALENESS_SECS", "300"), "300");
        assert_eq!(shown("HTTP_MAX_CONCURRENT_REQUESTS_PER_KEY", "8"), "8");
        assert_eq!(shown("AWS_ACCESS_KEY_ID", "AKIA"), "REDACTED");
        assert_eq!(shown("SOME_OTHER_TOKEN", "t"), "REDACTED");
    }

    #[test]
    fn the_report_names_every_setting_a_service_reads_with_the_value_it_runs_with() {
        let environment = [
            ("INGEST_SHARDS", " 8 "),
            ("AMQP_PASSWORD", "hunter2"),
            ("REDIS_URL", "redis://:pw@cache:6379/0"),
            ("GATEWAY_ADDR", ""),
            ("WEBHOOK_TIMEOUT_MS", "100"),
        ];
        let value_of = |name: &str| {
            environment
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let report = effective("gateway", value_of);
        let names: Vec<&str> = report.iter().map(|s| s.name).collect();
        let read: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.readers.include("gateway"))
            .map(|s| s.name)
            .collect();
        assert_eq!(names, read, "every setting the gateway reads, in order");
        assert!(
            !names.contains(&"WEBHOOK_TIMEOUT_MS"),
            "the notifier's only"
        );
        let value = |name: &str| {
            let found = report.iter().find(|s| s.name == name).expect(name);
            (found.value.as_str(), found.set)
        };
        assert_eq!(value("INGEST_SHARDS"), ("8", true));
        assert_eq!(value("AMQP_PASSWORD"), ("REDACTED", true));
        assert_eq!(value("REDIS_URL"), ("redis://cache:6379/0", true));
        // Empty is unset: the default.
        assert_eq!(value("GATEWAY_ADDR"), ("0.0.0.0:8080", false));
        assert_eq!(value("PIPELINE_NAMESPACE"), ("pipeline", false));
        assert_eq!(value("API_KEYS_MAX_STALENESS_SECS"), ("300", false));
        assert_eq!(value("AMQP_URL"), ("amqp://127.0.0.1:5672/%2f", false));
        assert_eq!(value("FIRST_API_KEY"), ("unset", false));
        let here = std::env::current_dir().expect("a working directory");
        assert_eq!(
            value("OBJECT_STORE_URL").0,
            format!("file://{}/data/objects", here.display())
        );
        assert!(
            report
                .iter()
                .all(|s| !s.value.contains("hunter2") && !s.value.contains(":pw@")),
            "{report:?}"
        );
    }

    #[test]
    fn every_variable_the_code_reads_is_known() {
        // Names in the services' sources that are not settings.
        const NOT_SETTINGS: &[&str] = &[
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_VERSION",
            "CLK_TCK",
            "PIPELINE_REVISION",
            "RABBITMQ_CONF_ENV_FILE",
            "UPDATE_CONFIGURATION_MD",
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut sources = Vec::new();
        for krate in [
            "shared",
            "gateway",
            "processor",
            "notifier",
            "imager",
            "dashboard",
        ] {
            let mut folders = vec![root.join(krate).join("src")];
            while let Some(folder) = folders.pop() {
                for entry in std::fs::read_dir(&folder).expect("a source folder") {
                    let path = entry.expect("an entry").path();
                    if path.is_dir() {
                        folders.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs")
                        && !path.ends_with("config/environment.rs")
                    {
                        sources.push(std::fs::read_to_string(&path).expect("a source"));
                    }
                }
            }
        }
        let mut missing = Vec::new();
        for source in &sources {
            for literal in source.split('"').skip(1).step_by(2) {
                let looks_like_one = literal.len() > 3
                    && literal.contains('_')
                    && literal
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                    && literal.starts_with(|c: char| c.is_ascii_uppercase());
                if looks_like_one
                    && find(literal).is_none()
                    && !NOT_SETTINGS.contains(&literal)
                    && !missing.contains(&literal)
                {
                    missing.push(literal);
                }
            }
        }
        assert!(missing.is_empty(), "read but not known: {missing:?}");
    }
}
