//! What one attempt to deliver came to, as a type: the endpoint's 2xx, or an [`AttemptError`]
//! saying why not. Its text is what `delivery_attempts.error` and the delivery's `last_error`
//! record; [`AttemptError::error_type`] is the attempt span's `error.type`. [`super::decide`]
//! reads it, never its text.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime},
};

use reqwest::StatusCode;
use shared::egress::EgressError;
use time::OffsetDateTime;

/// One attempt: when, how long it took, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When it was made.
    pub at: OffsetDateTime,
    /// How long it took (zero when it was refused before sending).
    pub latency: Duration,
    /// The endpoint's 2xx status, or why the attempt failed.
    pub result: Result<StatusCode, AttemptError>,
}

impl Attempt {
    /// The endpoint's status code, if it answered (2xx or not).
    pub fn status(&self) -> Option<StatusCode> {
        match &self.result {
            Ok(status) => Some(*status),
            Err(error) => error.status(),
        }
    }

    /// Why it failed; `None` for a 2xx.
    pub fn error(&self) -> Option<&AttemptError> {
        self.result.as_ref().err()
    }
}

/// Why an attempt did not get a 2xx. The texts are what the attempt log shows; none of them
/// holds the URL (reqwest's own messages repeat it in full, secrets included).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The subscription's URL does not parse: nothing was sent.
    #[error("the URL is not valid: {0}")]
    InvalidUrl(url::ParseError),
    /// The egress guard refused the URL's host (an IP literal in a private range, no host):
    /// nothing was sent.
    #[error("refused: {0}")]
    Refused(EgressError),
    /// No answer within the timeout.
    #[error("the endpoint did not answer in time")]
    TimedOut,
    /// No connection (refused, unreachable, TLS, or a name the guard's resolver refused),
    /// with the innermost cause.
    #[error("cannot connect to the endpoint: {0}")]
    Connect(String),
    /// Any other failure of the request, with its innermost cause.
    #[error("the request failed: {0}")]
    Request(String),
    /// The endpoint answered, but not 2xx (redirects are not followed).
    #[error("the endpoint answered {status}")]
    Status {
        /// Its status.
        status: StatusCode,
        /// The wait it asked for in `Retry-After`, whatever the status (whether it is
        /// honoured is [`super::decide`]'s call).
        retry_after: Option<Duration>,
    },
}

impl AttemptError {
    /// The endpoint's status, when it answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The span's `error.type`: the status code when the endpoint answered, else what kind of
    /// failure it was (`timeout`, `connect`, `refused`, `_OTHER`).
    pub fn error_type(&self) -> Cow<'static, str> {
        match self {
            Self::Status { status, .. } => Cow::Owned(status.as_u16().to_string()),
            Self::TimedOut => Cow::Borrowed("timeout"),
            Self::Connect(_) => Cow::Borrowed("connect"),
            Self::InvalidUrl(_) | Self::Refused(_) => Cow::Borrowed("refused"),
            Self::Request(_) => Cow::Borrowed("_OTHER"),
        }
    }
}

impl From<&reqwest::Error> for AttemptError {
    fn from(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            return Self::TimedOut;
        }
        // The innermost cause (such as the guard's refusal of a private address), never the
        // outer message, which repeats the URL.
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        if error.is_connect() {
            Self::Connect(cause.to_string())
        } else {
            Self::Request(cause.to_string())
        }
    }
}

/// The wait a `Retry-After` value asks for at `now`: seconds, or an HTTP date (none if it has
/// passed); `None` for a value that is neither.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use reqwest::StatusCode;
    use shared::egress::EgressError;

    use super::{AttemptError, retry_after};

    #[test]
    fn each_attempt_error_keeps_its_recorded_text_and_its_error_type() {
        let table = [
            (
                AttemptError::InvalidUrl(url::ParseError::RelativeUrlWithoutBase),
                "the URL is not valid: relative URL without a base",
                "refused",
            ),
            (
                AttemptError::Refused(EgressError::NoHost),
                "refused: the URL has no host",
                "refused",
            ),
            (
                AttemptError::TimedOut,
                "the endpoint did not answer in time",
                "timeout",
            ),
            (
                AttemptError::Connect("Connection refused (os error 111)".into()),
                "cannot connect to the endpoint: Connection refused (os error 111)",
                "connect",
            ),
            (
                AttemptError::Request("connection reset".into()),
                "the request failed: connection reset",
                "_OTHER",
            ),
            (
                AttemptError::Status {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    retry_after: Some(Duration::from_secs(2)),
                },
                "the endpoint answered 503 Service Unavailable",
                "503",
            ),
        ];
        for (error, text, kind) in table {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.error_type(), kind, "{error}");
        }
    }

    #[test]
    fn only_an_answer_has_a_status() {
        let answered = AttemptError::Status {
            status: StatusCode::GONE,
            retry_after: None,
        };
        assert_eq!(answered.status(), Some(StatusCode::GONE));
        assert_eq!(AttemptError::TimedOut.status(), None);
    }

    #[test]
    fn retry_after_is_seconds_or_a_future_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        // 2001-09-09T01:46:40Z is `now`; a minute later:
        let later = "Sun, 09 Sep 2001 01:47:40 GMT";
        assert_eq!(retry_after(later, now), Some(Duration::from_secs(60)));
        let earlier = "Sun, 09 Sep 2001 01:45:40 GMT";
        assert_eq!(retry_after(earlier, now), None, "a date that has passed");
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }
}
