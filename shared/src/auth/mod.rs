//! Who may call what: every endpoint that reads or changes data wants an API key
//! (`Authorization: Bearer <key>`) holding the endpoint's [`Scope`].
//!
//! - [`keys`]: the `api_keys` table (hashes only) and making keys.
//! - [`Auth`]: the keys in memory, checked per request in about a microsecond (one SHA-256
//!   and a map lookup), re-read from PostgreSQL every [`REFRESH`] so a revoked key stops
//!   working within that on every replica; a key made a moment ago is looked up on first use
//!   (such lookups of unknown keys are themselves rate-limited, so made-up keys cost the
//!   database nothing). Each key may carry a rate (requests per second, per replica, GCRA by
//!   `governor`), and has at most [`Auth::per_key`] requests in progress at once (per replica),
//!   so one caller's slow or many requests never take every slot of the server. Keys that could
//!   not be read again for a while ([`Auth::start`]'s `max_staleness`) are no longer trusted
//!   (fail closed): a key revoked while a replica cannot reach PostgreSQL stops working there
//!   too.
//! - [`protect`]: the axum middleware answering 401, 403, 429 or 503 ([`Denied`]).

pub mod keys;
mod scope;

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    api::Problem, connect::postgres::Database, http::request_id::answer_with, service::Tasks,
};
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
    middleware::StateInformationMiddleware,
};
use keys::{KeyHash, KeyRecord};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use scope::{Scope, Scopes, UnknownScope};

/// How often the keys are read again from PostgreSQL: a revoked key stops working within this
/// on every replica.
pub const REFRESH: Duration = Duration::from_secs(10);

/// How soon the keys are read again while they have never been read.
const FIRST_READ_RETRY: Duration = Duration::from_millis(200);

/// Lookups of keys not in memory per second from one source (an IPv4 address, or an IPv6 /64),
/// a burst of as many: beyond, an unknown key from there is refused without asking PostgreSQL,
/// while keys made a moment ago still work from everywhere else.
const MISS_LOOKUPS_PER_SOURCE: u32 = 10;

/// Lookups of keys not in memory per second from all sources together: what PostgreSQL is
/// asked at most, however many sources make keys up.
const MISS_LOOKUPS_PER_SECOND: u32 = 100;

/// A key as held in memory.
struct Key {
    name: String,
    scopes: Scopes,
    rate: Option<NonZeroU32>,
    limiter: Option<DefaultDirectRateLimiter<StateInformationMiddleware>>,
    /// Its requests in progress, at most [`Auth::per_key`].
    in_flight: Arc<Semaphore>,
    used: AtomicBool,
    /// When it was put in memory: a refresh whose read began earlier knows less of it.
    since: Instant,
}

impl Key {
    fn new(record: &KeyRecord, per_key: usize) -> Self {
        Self::with_slots(record, Arc::new(Semaphore::new(per_key)))
    }

    /// A key from `record` whose requests in progress are counted in `in_flight` (a key read
    /// again with other scopes or rate keeps its slots, and those of its requests in progress).
    fn with_slots(record: &KeyRecord, in_flight: Arc<Semaphore>) -> Self {
        let rate = record.rate_per_second.and_then(NonZeroU32::new);
        Self {
            name: record.name.clone(),
            scopes: record.scopes,
            rate,
            limiter: rate.map(|r| {
                RateLimiter::direct(Quota::per_second(r))
                    .with_middleware::<StateInformationMiddleware>()
            }),
            in_flight,
            used: AtomicBool::new(false),
            since: Instant::now(),
        }
    }

    /// Spends one of the key's requests if it has a rate, and puts what is left on the answer
    /// to the request being handled ([`rate_limit_headers`]), whatever answers it; over the rate,
    /// [`Denied::Limited`].
    fn spend(&self) -> Result<(), Denied> {
        let (Some(limiter), Some(rate)) = (&self.limiter, self.rate) else {
            return Ok(());
        };
        match limiter.check() {
            Ok(state) => {
                answer_with(rate_limit_headers(
                    rate.get(),
                    state.remaining_burst_capacity(),
                    1,
                ));
                Ok(())
            }
            Err(not_until) => {
                let retry_after =
                    not_until.wait_time_from(governor::clock::DefaultClock::default().now());
                answer_with(rate_limit_headers(
                    rate.get(),
                    0,
                    whole_seconds(retry_after),
                ));
                Err(Denied::Limited {
                    key: self.name.clone(),
                    rate: rate.get(),
                    retry_after,
                })
            }
        }
    }

    fn matches(&self, record: &KeyRecord) -> bool {
        self.name == record.name
            && self.scopes == record.scopes
            && self.rate == record.rate_per_second.and_then(NonZeroU32::new)
    }
}

/// The caller of a request, once its key was accepted (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's name.
    pub key: String,
    /// The key's space for identifiers (idempotency keys, event ids, order ids).
    pub owner: crate::model::Owner,
    /// What the key may do (beyond the endpoint's own scope, which it holds).
    pub scopes: Scopes,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// An `Authorization` header that does not carry a key the way it must; says what is
    /// wrong.
    Malformed(&'static str),
    /// An unknown or revoked key.
    Invalid,
    /// The key lacks the scope the endpoint wants.
    Forbidden(Scope),
    /// The key has as many requests in progress as it may.
    Busy {
        /// The key's name.
        key: String,
        /// Its requests in progress.
        limit: usize,
    },
    /// The key is over its rate.
    Limited {
        /// The key's name.
        key: String,
        /// Its rate, per second.
        rate: u32,
        /// When it may try again.
        retry_after: Duration,
    },
    /// The key is not in memory and PostgreSQL cannot be asked.
    Unavailable,
}

impl Denied {
    /// Its `reason` on `pipeline_auth_denied_total`, and its stable `code` in the error body.
    fn reason_and_code(&self) -> (&'static str, &'static str) {
        match self {
            Self::Missing => ("missing", "missing_key"),
            Self::Malformed(_) => ("malformed", "malformed_authorization"),
            Self::Invalid => ("invalid", "invalid_key"),
            Self::Forbidden(_) => ("forbidden", "forbidden"),
            Self::Busy { .. } => ("busy", "too_many_in_progress"),
            Self::Limited { .. } => ("rate_limited", "rate_limited"),
            Self::Unavailable => ("unavailable", "keys_unavailable"),
        }
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (reason, code) = self.reason_and_code();
        metrics::counter!(crate::metric::AUTH_DENIED_TOTAL, "reason" => reason).increment(1);
        let challenge = |error: Option<&str>| {
            let value = match error {
                Some(e) => format!("Bearer realm=\"pipeline\", error=\"{e}\""),
                None => "Bearer realm=\"pipeline\"".to_owned(),
            };
            HeaderValue::from_str(&value).expect("an ASCII challenge")
        };
        let problem = |status, detail: String| Problem::new(status, code, detail);
        match self {
            Self::Missing => problem(
                StatusCode::UNAUTHORIZED,
                "an API key is required: Authorization: Bearer <key>".into(),
            )
            .header(header::WWW_AUTHENTICATE, challenge(None)),
            Self::Malformed(what) => problem(StatusCode::UNAUTHORIZED, what.into())
                .header(header::WWW_AUTHENTICATE, challenge(Some("invalid_request"))),
            Self::Invalid => problem(
                StatusCode::UNAUTHORIZED,
                "the API key is not valid (unknown or revoked)".into(),
            )
            .header(header::WWW_AUTHENTICATE, challenge(Some("invalid_token"))),
            Self::Forbidden(scope) => problem(
                StatusCode::FORBIDDEN,
                format!("this API key lacks the scope {scope}"),
            )
            .member("scope", scope.as_str()),
            Self::Busy { key, limit } => problem(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the API key {key} has {limit} requests in progress, the most it may have at once; send more as those complete"
                ),
            )
            .member("retry_after_seconds", 1)
            .header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            Self::Limited {
                key,
                rate,
                retry_after,
            } => {
                metrics::counter!(crate::metric::RATE_LIMITED_TOTAL, "key" => key.clone())
                    .increment(1);
                let seconds = whole_seconds(retry_after);
                problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("the API key {key} is over its rate of {rate} requests per second"),
                )
                .member("retry_after_seconds", seconds)
                .header(header::RETRY_AFTER, HeaderValue::from(seconds))
            }
            Self::Unavailable => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "API keys cannot be checked now; retry later".into(),
            )
            .member("dependency", "postgres")
            .header(
                header::RETRY_AFTER,
                HeaderValue::from_static(crate::ops::RETRY_AFTER_SECONDS),
            ),
        }
        .into_response()
    }
}

/// The API keys of a namespace, in memory.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

struct Inner {
    database: Database,
    keys: RwLock<HashMap<KeyHash, Arc<Key>>>,
    misses: DefaultDirectRateLimiter,
    misses_by_source: DefaultKeyedRateLimiter<IpAddr>,
    /// Held by the lookup in progress: the concurrent first uses of a new key wait for the one
    /// lookup, and only it spends the source's budget.
    lookups: tokio::sync::Mutex<()>,
    stale: AtomicBool,
    /// The keys have been read at least once.
    loaded: AtomicBool,
    /// When the keys were last read (or looked up) from PostgreSQL.
    read_at: RwLock<Option<Instant>>,
    /// Requests in progress per key.
    per_key: usize,
    /// How long keys are trusted without being read again.
    max_staleness: Duration,
}

/// A request admitted for its key: holds one of the key's slots for requests in progress until
/// dropped (when the response is made).
#[derive(Debug)]
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
}

impl Auth {
    /// Keys from `database`, read now and every [`REFRESH`] by a task of `tasks` until they stop
    /// (recording which keys were used since the last time); each key may have `per_key`
    /// requests in progress at once. Keys not read again for `max_staleness` are no longer
    /// trusted: every request is `503` until PostgreSQL answers.
    pub fn start(
        database: Database,
        tasks: &Tasks,
        per_key: usize,
        max_staleness: Duration,
    ) -> Self {
        let shutdown = tasks.stopping();
        let auth = Self(Arc::new(Inner {
            database,
            keys: RwLock::new(HashMap::new()),
            misses: RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(MISS_LOOKUPS_PER_SECOND).expect("not zero"),
            )),
            misses_by_source: RateLimiter::keyed(Quota::per_second(
                NonZeroU32::new(MISS_LOOKUPS_PER_SOURCE).expect("not zero"),
            )),
            lookups: tokio::sync::Mutex::new(()),
            stale: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            read_at: RwLock::new(None),
            per_key: per_key.max(1),
            max_staleness,
        }));
        let refreshing = auth.clone();
        tasks.spawn(async move {
            loop {
                refreshing.refresh().await;
                // Until the keys are read once (the service is not ready before), soon again.
                let wait = if refreshing.loaded() {
                    REFRESH
                } else {
                    FIRST_READ_RETRY
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => {
                        refreshing.refresh().await;
                        return;
                    }
                }
            }
        });
        auth
    }

    /// Whether the keys have been read at least once: until then only a key looked up in
    /// PostgreSQL on its first use is known, and with PostgreSQL down none is.
    pub fn loaded(&self) -> bool {
        self.0.loaded.load(Ordering::Relaxed)
    }

    /// Requests in progress each key may have at once (per replica).
    pub fn per_key(&self) -> usize {
        self.0.per_key
    }

    /// Checks `authorization` (the header's value, if any) of a request from `source` for
    /// `scope`, and admits the request if its key has a slot free.
    pub async fn authorize(
        &self,
        authorization: Option<&HeaderValue>,
        scope: Scope,
        source: Option<IpAddr>,
    ) -> Result<(Caller, InFlight), Denied> {
        let token = bearer(authorization.ok_or(Denied::Missing)?)?;
        self.authorize_key(token, scope, source).await
    }

    /// Checks the key `token`, sent from `source`, for `scope`, and admits the request if the
    /// key has a slot free ([`Denied::Busy`] otherwise); hold the [`InFlight`] until the
    /// response is made.
    pub async fn authorize_key(
        &self,
        token: &str,
        scope: Scope,
        source: Option<IpAddr>,
    ) -> Result<(Caller, InFlight), Denied> {
        if self.is_stale() {
            return Err(Denied::Unavailable);
        }
        if !token.starts_with(keys::PREFIX) {
            return Err(Denied::Malformed(
                "this is not an API key: keys start with ppk_ (Authorization: Bearer ppk_...)",
            ));
        }
        if token.len() > 128 {
            return Err(Denied::Invalid);
        }
        let hash = keys::hash(token);
        let cached = self
            .0
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => self.look_up(&hash, source).await?,
        };
        // Every request of a known key counts against its rate, one it may not make included, so
        // every answer to it (a 403 too) says what is left.
        key.spend()?;
        if !key.scopes.contains(scope) {
            return Err(Denied::Forbidden(scope));
        }
        let permit = Arc::clone(&key.in_flight)
            .try_acquire_owned()
            .map_err(|_| Denied::Busy {
                key: key.name.clone(),
                limit: self.0.per_key,
            })?;
        key.used.store(true, Ordering::Relaxed);
        Ok((
            Caller {
                key: key.name.clone(),
                owner: crate::model::Owner::of_key(&key.name),
                scopes: key.scopes,
            },
            InFlight { _permit: permit },
        ))
    }

    /// Counts a request that names a key (`authorization`) but is answered before the key is
    /// checked (shed under load) against the key's rate, so that its answer carries the key's
    /// `RateLimit` headers too. Only a key in memory counts: nothing is looked up.
    pub fn count(&self, authorization: Option<&HeaderValue>) {
        let Some(token) = authorization.and_then(|value| bearer(value).ok()) else {
            return;
        };
        let key = self
            .0
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&keys::hash(token))
            .cloned();
        if let Some(key) = key {
            let _ = key.spend();
        }
    }

    /// True when keys were read once but not for `max_staleness`.
    fn is_stale(&self) -> bool {
        self.0
            .read_at
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() > self.0.max_staleness)
    }

    fn mark_read(&self) {
        *self
            .0
            .read_at
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
    }

    /// A key not in memory: made since the last refresh, or made up.
    async fn look_up(&self, hash: &KeyHash, source: Option<IpAddr>) -> Result<Arc<Key>, Denied> {
        // One lookup at a time: a burst of first uses of one new key (a client starting its
        // workers) costs one lookup, not one per request, and never runs out its budget.
        let _turn = self.0.lookups.lock().await;
        if let Some(key) = self
            .0
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(hash)
        {
            return Ok(Arc::clone(key));
        }
        let source_spent = source.is_some_and(|source| {
            self.0
                .misses_by_source
                .check_key(&network_of(source))
                .is_err()
        });
        if source_spent || self.0.misses.check().is_err() {
            return Err(Denied::Invalid);
        }
        // Not waiting for this service's migrations: a key that exists was made on a schema
        // that exists, and a missing table is an error like any other.
        let record = keys::find(self.0.database.pool(), hash)
            .await
            .map_err(|_| Denied::Unavailable)?
            .ok_or(Denied::Invalid)?;
        // A refresh may have put it in memory meanwhile: that one is kept, so the key has one
        // rate and one set of slots.
        let key = self
            .0
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(*hash)
            .or_insert_with(|| Arc::new(Key::new(&record, self.0.per_key)))
            .clone();
        Ok(key)
    }

    /// Reads every active key again (keeping the rate state of those unchanged, and the slots
    /// of every key still active), and records which were used. Keeps what it has when
    /// PostgreSQL cannot be read.
    async fn refresh(&self) {
        // Before this service's migrations ran there may be no table to read yet.
        let Ok(pool) = self.0.database.ready() else {
            return;
        };
        let reading_since = Instant::now();
        let records = match keys::active(pool).await {
            Ok(records) => {
                self.mark_read();
                // Sources not heard from lately are forgotten, so the budgets take no memory
                // for long.
                self.0.misses_by_source.retain_recent();
                self.0.misses_by_source.shrink_to_fit();
                self.0.loaded.store(true, Ordering::Relaxed);
                if self.0.stale.swap(false, Ordering::Relaxed) {
                    tracing::info!("API keys read again.");
                }
                records
            }
            Err(e) => {
                if !self.0.stale.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Cannot read the API keys; keeping those in memory.");
                }
                return;
            }
        };
        let used: Vec<KeyHash> = {
            let mut current = self
                .0
                .keys
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let used = current
                .iter()
                .filter(|(_, key)| key.used.swap(false, Ordering::Relaxed))
                .map(|(hash, _)| *hash)
                .collect();
            let fresh = merged(&current, &records, reading_since, self.0.per_key);
            *current = fresh;
            used
        };
        if !used.is_empty()
            && let Err(e) = keys::touch(pool, &used).await
        {
            tracing::debug!(error = %e, "Cannot record when keys were last used.");
        }
    }
}

/// The keys in memory after `records` were read (the read began at `reading_since`) while
/// `current` were held: each active key as read, keeping its rate state if unchanged and its
/// slots whatever changed; and every key looked up while the read was under way (it may have
/// been made after the read saw the table), as it is. Keys in memory before the read and not read
/// are revoked, or gone: dropped.
fn merged(
    current: &HashMap<KeyHash, Arc<Key>>,
    records: &[KeyRecord],
    reading_since: Instant,
    per_key: usize,
) -> HashMap<KeyHash, Arc<Key>> {
    let mut fresh: HashMap<KeyHash, Arc<Key>> = current
        .iter()
        .filter(|(_, key)| key.since > reading_since)
        .map(|(hash, key)| (*hash, Arc::clone(key)))
        .collect();
    for record in records {
        let key = match current.get(&record.hash) {
            Some(key) if key.since > reading_since || key.matches(record) => Arc::clone(key),
            Some(key) => Arc::new(Key::with_slots(record, Arc::clone(&key.in_flight))),
            None => Arc::new(Key::new(record, per_key)),
        };
        fresh.insert(record.hash, key);
    }
    fresh
}

/// The `RateLimit-Policy` and `RateLimit` headers (the IETF httpapi draft's structured fields)
/// of a key allowed `limit` requests a second, `left` of them still free, the next freed in
/// `reset` seconds: on every answer to a key with a rate once the key is known, so a client can
/// pace itself before a `429`. The limits are per replica.
fn rate_limit_headers(limit: u32, left: u32, reset: u64) -> HeaderMap {
    let value = |s: String| HeaderValue::from_str(&s).expect("ASCII digits and punctuation");
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(
        header::HeaderName::from_static("ratelimit-policy"),
        value(format!("\"key\";q={limit};w=1")),
    );
    headers.insert(
        header::HeaderName::from_static("ratelimit"),
        value(format!("\"key\";r={left};t={reset}")),
    );
    headers
}

/// A wait as the whole seconds a client is told to wait: rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The source a lookup budget is kept for: an IPv4 address, or an IPv6 address's /64 (one host
/// usually has a whole /64 to choose from).
fn network_of(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The address a request came from, as the server recorded it.
pub fn source_of(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip())
}

/// The token of an `Authorization: Bearer <token>` header value, or why there is none.
pub fn bearer(authorization: &HeaderValue) -> Result<&str, Denied> {
    let text = authorization
        .to_str()
        .map_err(|_| Denied::Malformed("the Authorization header is not visible ASCII"))?
        .trim();
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::Malformed(
            "the Authorization header must be `Bearer <key>` (the scheme Bearer, a space, then the key)",
        ));
    }
    match token.trim() {
        "" => Err(Denied::Malformed(
            "the Authorization header names no key after Bearer",
        )),
        token => Ok(token),
    }
}

/// `router` with every route wanting a key with `scope`; the caller is set as a [`Caller`]
/// request extension.
pub fn protect<S>(router: Router<S>, auth: &Auth, scope: Scope) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.route_layer(middleware::from_fn_with_state(
        (auth.clone(), scope),
        require,
    ))
}

async fn require(
    State((auth, scope)): State<(Auth, Scope)>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION);
    match auth
        .authorize(authorization, scope, source_of(&request))
        .await
    {
        Ok((caller, _in_flight)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(denied) => denied.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, hash: u8, scopes: Scopes) -> KeyRecord {
        KeyRecord {
            name: name.to_owned(),
            hash: [hash; 32],
            scopes,
            rate_per_second: None,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            last_used_at: None,
            revoked_at: None,
        }
    }

    fn in_memory(keys: &[(&KeyRecord, Instant)]) -> HashMap<KeyHash, Arc<Key>> {
        keys.iter()
            .map(|(record, since)| {
                let mut key = Key::new(record, 2);
                key.since = *since;
                (record.hash, Arc::new(key))
            })
            .collect()
    }

    #[test]
    fn a_key_looked_up_while_the_keys_were_read_stays_with_its_slots() {
        let reading_since = Instant::now();
        let new = record("new", 1, Scopes::all());
        let current = in_memory(&[(&new, reading_since + Duration::from_millis(1))]);
        // The read saw the table before the key was made.
        let fresh = merged(&current, &[], reading_since, 2);
        assert!(Arc::ptr_eq(&fresh[&new.hash], &current[&new.hash]));
    }

    #[test]
    fn a_key_in_memory_before_the_read_and_not_read_is_dropped() {
        let reading_since = Instant::now();
        let revoked = record("revoked", 1, Scopes::all());
        let kept = record("kept", 2, Scopes::all());
        let current = in_memory(&[
            (&revoked, reading_since - Duration::from_millis(1)),
            (&kept, reading_since - Duration::from_millis(1)),
        ]);
        let fresh = merged(&current, std::slice::from_ref(&kept), reading_since, 2);
        assert!(!fresh.contains_key(&revoked.hash));
        assert!(Arc::ptr_eq(&fresh[&kept.hash], &current[&kept.hash]));
    }

    #[test]
    fn a_key_read_with_other_scopes_takes_them_and_keeps_its_slots() {
        let reading_since = Instant::now();
        let before = record("changed", 1, Scopes::all());
        let current = in_memory(&[(&before, reading_since - Duration::from_millis(1))]);
        let held = Arc::clone(&current[&before.hash].in_flight)
            .try_acquire_owned()
            .expect("a slot");
        let after = record("changed", 1, Scopes::default());
        let fresh = merged(&current, std::slice::from_ref(&after), reading_since, 2);
        assert_eq!(fresh[&after.hash].scopes, Scopes::default());
        assert_eq!(fresh[&after.hash].in_flight.available_permits(), 1);
        drop(held);
        assert_eq!(fresh[&after.hash].in_flight.available_permits(), 2);
    }

    #[test]
    fn a_key_first_read_gets_its_own_slots() {
        let first = record("first", 1, Scopes::all());
        let fresh = merged(
            &HashMap::new(),
            std::slice::from_ref(&first),
            Instant::now(),
            3,
        );
        assert_eq!(fresh[&first.hash].in_flight.available_permits(), 3);
    }
}
