//! Who may use the dashboard: an operator signs in with an API key holding `ops`
//! (`POST /session`), and gets a session cookie (`__Host-` prefixed, HttpOnly, SameSite=Strict,
//! Secure, unless configured off for plain HTTP), random and held only in this process's memory,
//! for 12 hours; scripts send
//! the key itself (`Authorization: Bearer`). Every state-changing request carried by the cookie
//! must come from the dashboard's own pages: `Sec-Fetch-Site: same-origin`, or, from a browser
//! that does not send it, an `Origin` equal to the dashboard's, scheme included; anything else
//! is 403, so another
//! site (or another port of this one) cannot purge or replay with a signed-in operator's
//! session. The operator's key travels with their requests to the processor, and a revoked key
//! ends its sessions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Request, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::json;
use shared::auth::{Auth, Denied, Scope, bearer, keys};

/// The session cookie's name over HTTPS: `__Host-` makes browsers refuse it unless it is
/// `Secure`, for `Path=/` and without `Domain`, so no other host or path can set or shadow it.
pub const COOKIE: &str = "__Host-pipeline_session";
/// Its name where cookies are not `Secure` (plain HTTP, `DASHBOARD_SECURE_COOKIES=false`), which
/// the prefix does not allow.
pub const PLAIN_COOKIE: &str = "pipeline_session";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions held at once; beyond, signing in is refused until some expire.
const MAX_SESSIONS: usize = 10_000;

/// The operator behind a request (a request extension): their key, forwarded to the processor.
#[derive(Clone)]
pub struct Operator {
    /// The API key.
    pub key: String,
}

struct Session {
    key: String,
    expires: Instant,
}

/// The sessions, and how to check keys.
#[derive(Clone)]
pub struct Gate {
    auth: Auth,
    sessions: Arc<Mutex<HashMap<keys::KeyHash, Session>>>,
    secure: bool,
}

impl Gate {
    /// A gate over `auth`'s keys; `secure` marks the cookie `Secure` (HTTPS only).
    pub fn new(auth: Auth, secure: bool) -> Self {
        Self {
            auth,
            sessions: Arc::default(),
            secure,
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<keys::KeyHash, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn session_key(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut sessions = self.sessions();
        let hash = keys::hash(token);
        match sessions.get(&hash) {
            Some(session) if session.expires > now => Some(session.key.clone()),
            Some(_) => {
                sessions.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// The session cookie's name.
    fn cookie_name(&self) -> &'static str {
        if self.secure { COOKIE } else { PLAIN_COOKIE }
    }

    /// The scheme the dashboard's pages are served over, as an `Origin` shows it.
    fn scheme(&self) -> &'static str {
        if self.secure { "https" } else { "http" }
    }

    fn cookie(&self, token: &str, max_age: Duration) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
            self.cookie_name(),
            max_age.as_secs()
        ))
        .expect("a cookie of URL-safe characters")
    }
}

/// `POST /session` (sign in) and `DELETE /session` (sign out).
pub fn routes(gate: Gate) -> Router {
    Router::new()
        .route("/session", post(sign_in).delete(sign_out))
        .with_state(gate)
}

/// `router` with every route wanting an operator: an `ops` key, or a session, with the
/// same-origin rule for state-changing requests carried by the cookie.
pub fn protect(router: Router, gate: &Gate) -> Router {
    router.route_layer(middleware::from_fn_with_state(gate.clone(), require))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

fn cross_site() -> Response {
    metrics::counter!(shared::metric::AUTH_DENIED_TOTAL, "reason" => "cross_site").increment(1);
    shared::api::Problem::new(
        StatusCode::FORBIDDEN,
        "cross_site",
        "refused: a state-changing request must come from the dashboard's own page",
    )
    .into_response()
}

async fn sign_in(
    State(gate): State<Gate>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Response {
    if !same_origin(&headers, gate.scheme()) {
        return cross_site();
    }
    let Json(SignIn { key }) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return shared::api::bad_body(&rejection).into_response();
        }
    };
    let caller = match gate
        .auth
        .authorize_key(&key, Scope::Ops, Some(peer.ip()))
        .await
    {
        Ok((caller, _)) => caller,
        Err(denied) => return denied.into_response(),
    };
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    let token = URL_SAFE_NO_PAD.encode(bytes);
    {
        let now = Instant::now();
        let mut sessions = gate.sessions();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            return shared::api::Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "too many open sessions; retry later",
            )
            .header(header::RETRY_AFTER, HeaderValue::from_static("60"))
            .into_response();
        }
        sessions.insert(
            keys::hash(&token),
            Session {
                key,
                expires: now + LIFETIME,
            },
        );
    }
    tracing::info!(key = %caller.key, "Operator signed in to the dashboard.");
    (
        [(header::SET_COOKIE, gate.cookie(&token, LIFETIME))],
        Json(json!({ "key": caller.key, "expires_in_seconds": LIFETIME.as_secs() })),
    )
        .into_response()
}

async fn sign_out(State(gate): State<Gate>, headers: HeaderMap) -> Response {
    if !same_origin(&headers, gate.scheme()) {
        return cross_site();
    }
    if let Some(token) = cookie(&headers, gate.cookie_name()) {
        gate.sessions().remove(&keys::hash(token));
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, gate.cookie("", Duration::ZERO))],
    )
        .into_response()
}

async fn require(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let (key, by_cookie) = if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        match bearer(authorization) {
            Ok(token) => (token.to_owned(), false),
            Err(denied) => return denied.into_response(),
        }
    } else if let Some(token) = cookie(headers, gate.cookie_name()) {
        match gate.session_key(token) {
            Some(key) => (key, true),
            None => return Denied::Invalid.into_response(),
        }
    } else {
        return Denied::Missing.into_response();
    };
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if by_cookie && changes_state && !same_origin(headers, gate.scheme()) {
        return cross_site();
    }
    let source = shared::auth::source_of(&request);
    let _in_flight = match gate.auth.authorize_key(&key, Scope::Ops, source).await {
        Ok((_, in_flight)) => in_flight,
        Err(denied) => {
            if by_cookie && denied == Denied::Invalid {
                // The key was revoked: so are its sessions.
                gate.sessions().retain(|_, s| s.key != key);
            }
            return denied.into_response();
        }
    };
    request.extensions_mut().insert(Operator { key });
    next.run(request).await
}

/// The session token of the request's cookie named `name`, if any.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (found, value) = pair.trim().split_once('=')?;
            (found == name && !value.is_empty()).then_some(value)
        })
}

/// True when the request comes from a page of this origin: `Sec-Fetch-Site: same-origin`, or,
/// without that header, an `Origin` of the dashboard's `scheme` whose host is the request's
/// `Host`.
pub fn same_origin(headers: &HeaderMap, scheme: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    origin
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_str(v).expect("valid"),
                )
            })
            .collect()
    }

    #[test]
    fn only_the_dashboards_own_pages_are_same_origin() {
        let fetched_from = |site| vec![("sec-fetch-site", site)];
        let origin_on = |origin, host| vec![("origin", origin), ("host", host)];
        // (the request's headers, the dashboard's scheme, whether it is the dashboard's origin)
        let cases = [
            (fetched_from("same-origin"), "https", true),
            (fetched_from("same-site"), "https", false),
            (fetched_from("cross-site"), "https", false),
            (fetched_from("none"), "https", false),
            (
                origin_on("https://ops.example.com", "ops.example.com"),
                "https",
                true,
            ),
            // The same host over another scheme is another origin.
            (
                origin_on("http://ops.example.com", "ops.example.com"),
                "https",
                false,
            ),
            (
                origin_on("http://127.0.0.1:8081", "127.0.0.1:8081"),
                "http",
                true,
            ),
            (
                origin_on("http://127.0.0.1:9999", "127.0.0.1:8081"),
                "http",
                false,
            ),
            (origin_on("null", "x"), "http", false),
            (vec![("host", "127.0.0.1:8081")], "http", false),
        ];
        for (pairs, scheme, expected) in cases {
            assert_eq!(
                same_origin(&headers(&pairs), scheme),
                expected,
                "{pairs:?} served over {scheme}"
            );
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; __Host-pipeline_session=tok; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("tok"));
        assert_eq!(cookie(&h, PLAIN_COOKIE), None, "another cookie's name");
        assert_eq!(
            cookie(&headers(&[("cookie", "__Host-pipeline_session=")]), COOKIE),
            None
        );
    }
}
