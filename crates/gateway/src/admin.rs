//! The admin HTTP API (docs/configuration.md, `[admin]`): SAs, registrations, next hops, log
//! level, reload and drain, behind a bearer token; `/healthz` and `/readyz` for load balancers.
//!
//! A trust boundary (docs/security.md): every route but the two health checks needs
//! `Authorization: Bearer <token>`, compared in constant time (SHA-256 of both sides, so neither
//! the content nor the length of the token leaks through timing). A request whose `Host` is not
//! an IP literal, `localhost` or a name in `admin.allowed_hosts` is refused, whatever its token:
//! a web page that rebinds its own name to 127.0.0.1 cannot reach the API through the visitor's
//! browser. Any request with an `Origin` header (a browser's) is refused too, and no CORS header
//! is ever sent.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::driver::CoreExit;
use crate::lifecycle::{HopState, HopView, Lifecycle};
use crate::metrics::Metrics;

/// Why the admin API was not started.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("admin.token_file {path}: {source} (create it with `sagw admin new-token`, mode 0600)")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("admin.token_file {0}: empty (the token is its first line)")]
    Empty(String),
    /// The file's group or other users have some permission on it.
    #[error(
        "admin.token_file {path}: mode {mode:o} gives its group or other users access to the token (chmod 600)"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// The bearer token, kept as its SHA-256: compared in constant time, never logged.
#[derive(Clone)]
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text (tests, and [`read_token`]).
    pub fn new(text: &str) -> Token {
        Token(Sha256::digest(text.as_bytes()).into())
    }

    /// True when `presented` is the token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.0.ct_eq(&digest))
    }

    /// True when `other` is the same token (a reload that read the same file).
    pub fn same_as(&self, other: &Token) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

/// The token in force, which a reload replaces when its file holds another (the gateway's
/// lifecycle reads `admin.token_file` again at each reload).
pub type AdminToken = Arc<arc_swap::ArcSwap<Token>>;

/// Reads the token's first line from `path`: refused when the file is missing, empty, or its group
/// or other users have any permission on it.
pub fn read_token(path: &Path) -> Result<Token, TokenError> {
    let text = read_token_text(path)?;
    Ok(Token::new(&text))
}

/// The token's text (for `sagw admin`), with the same checks as [`read_token`].
pub fn read_token_text(path: &Path) -> Result<String, TokenError> {
    let shown = path.display().to_string();
    let read = |source| TokenError::Read {
        path: shown.clone(),
        source,
    };
    // The group's bits as well as the others': the token is the operator's alone (as the
    // credentials file, sagw_auth::FileCredentialStore::load), and a group that may read it, or
    // write one of its own, holds the API.
    let meta = std::fs::metadata(path).map_err(read)?;
    if let Some(mode) = crate::file_mode::exposed(&meta, crate::file_mode::GROUP_OR_OTHER) {
        return Err(TokenError::Exposed { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(TokenError::Empty(shown));
    }
    Ok(token.to_owned())
}

/// Writes a new random token (32 bytes, hex) to `path`, mode 0600, refusing to replace one.
pub fn new_token(path: &Path) -> Result<(), String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "system random source unavailable".to_owned())?;
    let text = sagw_hex::encode(bytes);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The control surfaces other parts of the gateway provide after start: reload and drain
/// ([`Lifecycle`]) and the next hops' state ([`HopView`]). Absent until attached: the API answers
/// 501 for reload and drain, and an empty list of hops.
#[derive(Default)]
pub struct ControlSeams {
    lifecycle: OnceLock<Arc<dyn Lifecycle>>,
    hops: OnceLock<Arc<dyn HopView>>,
}

impl ControlSeams {
    /// Attach the lifecycle (once; a second call is ignored and returns false).
    pub fn attach_lifecycle(&self, l: Arc<dyn Lifecycle>) -> bool {
        self.lifecycle.set(l).is_ok()
    }

    /// Attach the next hops' view (once; a second call is ignored and returns false).
    pub fn attach_hops(&self, h: Arc<dyn HopView>) -> bool {
        self.hops.set(h).is_ok()
    }

    /// The lifecycle, when attached.
    pub fn lifecycle(&self) -> Option<&Arc<dyn Lifecycle>> {
        self.lifecycle.get()
    }

    /// True once draining has begun (false without a lifecycle).
    pub fn draining(&self) -> bool {
        self.lifecycle.get().is_some_and(|l| l.draining())
    }
}

/// One registrar binding, as `GET /admin/registrations/{aor}` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RegistrationView {
    /// The AOR, normalised.
    pub aor: String,
    /// The device key (`i:`, `e:` or `u:` and its id).
    pub device: String,
    /// The Contact URI as registered.
    pub contact: String,
    /// `udp`, `tcp` or `tls` (the flow to the client), or the transport towards the pool node
    /// holding a remote binding.
    pub transport: String,
    /// The client's address (after NAT), or the pool node's for a remote binding.
    pub remote: String,
    /// When it lapses, in Unix seconds.
    pub expires_unix: u64,
    /// The endpoint its REGISTER proved (identity), when it was made with an SA.
    pub identity: Option<String>,
    /// The `epid` of the REGISTER.
    pub epid: Option<String>,
    /// False for a binding another gateway of the pool holds.
    pub local: bool,
}

/// A question for the core thread, which owns the registrar.
pub enum CoreQuery {
    /// The bindings of an AOR (normalised by the core as the registrar does).
    Registrations {
        /// As given (`sip:alice@example.com`).
        aor: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<RegistrationView>>,
    },
}

/// Hands a [`CoreQuery`] to the core thread; false when it cannot take it now (stopped, or its
/// queue is full).
pub type AskCore = Arc<dyn Fn(CoreQuery) -> bool + Send + Sync>;

/// What the routes work on.
#[derive(Clone)]
pub struct AdminState {
    /// The bearer token in force.
    pub token: AdminToken,
    /// Extra host names (lower case) besides IP literals and `localhost`.
    pub allowed_hosts: Arc<Vec<String>>,
    /// The registry: its security core lists and revokes SAs; its nudge tells the core thread
    /// about a revocation (pools pass it on).
    pub metrics: Arc<Metrics>,
    /// The core thread's mailbox.
    pub ask_core: AskCore,
    /// Lifecycle and next hops, once attached.
    pub seams: Arc<ControlSeams>,
    /// How the core thread ended, once it has.
    pub core_exit: watch::Receiver<Option<CoreExit>>,
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/admin/sas", get(list_sas))
        .route("/admin/sas/{opaque}/revoke", post(revoke_sa))
        .route("/admin/users/{user}/revoke", post(revoke_user))
        .route("/admin/registrations/{aor}", get(registrations))
        .route("/admin/hops", get(hops))
        .route("/admin/log-level", get(get_log_level).put(put_log_level))
        .route("/admin/reload", post(reload))
        .route("/admin/drain", post(drain))
        .route_layer(middleware::from_fn_with_state(state.clone(), bearer));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), same_host))
        .layer(DefaultBodyLimit::max(crate::http::MAX_BODY))
        .with_state(state)
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

async fn not_found() -> Response {
    problem(StatusCode::NOT_FOUND, "no such route")
}

/// True when `host` (a Host header value) names this machine in a way a DNS rebinding cannot:
/// an IP literal, `localhost`, or a configured name.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
                && (port.is_empty()
                    || port
                        .strip_prefix(':')
                        .is_some_and(|p| p.parse::<u16>().is_ok()))
        });
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

/// Refuses requests from browsers (an `Origin`) and requests for another host (DNS rebinding).
async fn same_host(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if req.headers().contains_key(header::ORIGIN) {
        return problem(StatusCode::FORBIDDEN, "requests from web pages are refused");
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(h) if host_allowed(&h, &s.allowed_hosts) => next.run(req).await,
        _ => problem(
            StatusCode::FORBIDDEN,
            "Host must be an IP address, localhost or a name in admin.allowed_hosts",
        ),
    }
}

/// `Authorization: Bearer <token>`, or 401.
async fn bearer(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match presented {
        Some(t) if s.token.load().matches(t) => next.run(req).await,
        _ => {
            let mut r = problem(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
    }
}

fn core_running(s: &AdminState) -> bool {
    s.core_exit.borrow().is_none()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    if core_running(&s) {
        (StatusCode::OK, axum::Json(json!({ "alive": true }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "alive": false, "reason": "the core thread has stopped" })),
        )
            .into_response()
    }
}

/// Whether the gateway takes new work, and why not.
fn readiness(core_running: bool, draining: bool) -> (StatusCode, serde_json::Value) {
    match (core_running, draining) {
        (false, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": "the core thread has stopped" }),
        ),
        (true, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "ready": false, "reason": "draining" }),
        ),
        (true, false) => (StatusCode::OK, json!({ "ready": true })),
    }
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let (status, body) = readiness(core_running(&s), s.seams.draining());
    (status, axum::Json(body)).into_response()
}

/// The security core, or `None` when authentication is off (see [`no_auth`]).
fn security(s: &AdminState) -> Option<&Arc<sagw_auth::SecurityCore>> {
    s.metrics.auth.get()
}

fn no_auth() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "authentication is off ([auth] enabled = false): there are no SAs",
    )
}

#[derive(Serialize)]
struct SaView {
    opaque: String,
    scheme: &'static str,
    identity: String,
    epid: String,
    created: u64,
    expiry: u64,
    snum: u32,
}

async fn list_sas(State(s): State<AdminState>) -> Response {
    let Some(core) = security(&s) else {
        return no_auth();
    };
    let mut sas: Vec<SaView> = core
        .sas()
        .list()
        .into_iter()
        .map(|sa| SaView {
            opaque: sa.opaque.to_string(),
            scheme: sa.scheme.token(),
            identity: sa.identity,
            epid: sa.epid,
            created: sa.created,
            expiry: sa.expiry,
            snum: sa.snum,
        })
        .collect();
    sas.sort_by(|a, b| (&a.identity, a.created).cmp(&(&b.identity, b.created)));
    axum::Json(sas).into_response()
}

fn nudge(s: &AdminState) {
    if let Some(n) = s.metrics.nudge.get() {
        n();
    }
}

async fn revoke_sa(State(s): State<AdminState>, UrlPath(opaque): UrlPath<String>) -> Response {
    let Some(core) = security(&s) else {
        return no_auth();
    };
    let Some(o) = sagw_auth::Opaque::parse(&opaque) else {
        return problem(StatusCode::BAD_REQUEST, "an opaque is 8 hex digits");
    };
    if !core.sas().revoke(o, core.counters()) {
        return problem(StatusCode::NOT_FOUND, "no such SA");
    }
    nudge(&s);
    info!(target: crate::logging::AUDIT, sa = %o, "security association revoked (admin API)");
    axum::Json(json!({ "revoked": o.to_string() })).into_response()
}

async fn revoke_user(State(s): State<AdminState>, UrlPath(user): UrlPath<String>) -> Response {
    let Some(core) = security(&s) else {
        return no_auth();
    };
    let user = user.trim();
    if user.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "no user");
    }
    // A SIP identity as such; an account name as the identity it signs in as (its `sip` line,
    // else the default).
    let n = if user.starts_with("sip:") || user.starts_with("sips:") {
        core.revoke_identity(user)
    } else {
        core.revoke_account(user)
    };
    if n > 0 {
        nudge(&s);
    }
    info!(target: crate::logging::AUDIT, user = %user, revoked = n, "security associations of a user revoked (admin API)");
    axum::Json(json!({ "user": user, "revoked": n })).into_response()
}

async fn registrations(State(s): State<AdminState>, UrlPath(aor): UrlPath<String>) -> Response {
    let (reply, answer) = oneshot::channel();
    if !(s.ask_core)(CoreQuery::Registrations { aor, reply }) {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the core thread is busy or stopped",
        );
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), answer).await {
        Ok(Ok(list)) => axum::Json(list).into_response(),
        _ => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the core thread did not answer",
        ),
    }
}

async fn hops(State(s): State<AdminState>) -> Response {
    let list: Vec<HopState> = s.seams.hops.get().map(|h| h.hops()).unwrap_or_default();
    axum::Json(list).into_response()
}

async fn get_log_level() -> Response {
    match crate::logging::current_level() {
        Some(level) => axum::Json(json!({ "level": level })).into_response(),
        None => problem(
            StatusCode::NOT_IMPLEMENTED,
            "logging is not set up by this process",
        ),
    }
}

/// The body is the level (`debug`, or a filter such as `sagw=debug,info`), as text or as
/// `{"level": "..."}`.
async fn put_log_level(headers: HeaderMap, body: String) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let level = if json {
        match serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("level").and_then(|l| l.as_str()).map(str::to_owned))
        {
            Some(l) => l,
            None => return problem(StatusCode::BAD_REQUEST, "expected {\"level\": \"...\"}"),
        }
    } else {
        body.trim().to_owned()
    };
    // Written into the audit line as it is: a line break would forge log lines.
    if level.contains(char::is_control) {
        return problem(
            StatusCode::BAD_REQUEST,
            "a log filter has no control characters",
        );
    }
    // On the audit target and before the new filter applies: a filter such as `off` would
    // otherwise silence the record of its own arrival, and with it every audit line after.
    let audited = |old: &str| crate::audit::log_filter_changed("admin_api", old, level.trim());
    match crate::logging::change_level(&level, audited) {
        Ok(()) => axum::Json(json!({ "level": level })).into_response(),
        Err(e) if crate::logging::current_level().is_none() => {
            problem(StatusCode::NOT_IMPLEMENTED, e)
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, e),
    }
}

fn no_lifecycle() -> Response {
    problem(
        StatusCode::NOT_IMPLEMENTED,
        "reload and drain are not available in this build",
    )
}

async fn reload(State(s): State<AdminState>) -> Response {
    let Some(l) = s.seams.lifecycle().cloned() else {
        return no_lifecycle();
    };
    // Reading files and building TLS configurations: off the runtime's workers.
    match tokio::task::spawn_blocking(move || l.reload()).await {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => problem(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "the reload failed"),
    }
}

async fn drain(State(s): State<AdminState>) -> Response {
    let Some(l) = s.seams.lifecycle().cloned() else {
        return no_lifecycle();
    };
    // Waits for the core thread to confirm (up to 5 s when it is stuck): off the runtime's
    // workers, which run the accept loops and TLS handshakes meanwhile.
    let draining = tokio::task::spawn_blocking(move || {
        l.drain();
        l.draining()
    })
    .await;
    match draining {
        Ok(draining) => {
            info!("draining (admin API)");
            axum::Json(json!({ "draining": draining })).into_response()
        }
        Err(_) => problem(StatusCode::INTERNAL_SERVER_ERROR, "the drain failed"),
    }
}

/// `GET /metrics` and nothing else.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(crate::http::MAX_BODY))
        .with_state(metrics)
}

async fn scrape(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        crate::metrics::page(&m),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_configured() {
        let allowed = vec!["gw.example.net".to_owned()];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:5089",
            "[::1]",
            "[::1]:5089",
            "localhost",
            "LOCALHOST:5089",
            "gw.example.net:5089",
            "gw.example.net.",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:5089",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1",
            "[::1]x",
            "127.0.0.1:notaport",
            "",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
    }

    #[test]
    fn the_token_matches_only_itself() {
        let t = Token::new("s3cret");
        assert!(t.matches("s3cret"));
        for other in ["", "s3cre", "s3cret ", "S3CRET", "s3cret-and-more"] {
            assert!(!t.matches(other), "{other}");
        }
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn readiness_is_false_while_draining_or_without_the_core() {
        assert_eq!(readiness(true, false).0, StatusCode::OK);
        assert_eq!(readiness(true, true).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(readiness(true, true).1["reason"], "draining");
        assert_eq!(readiness(false, false).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[cfg(unix)]
    #[test]
    fn token_files_that_others_can_read_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        assert!(matches!(read_token(&path), Err(TokenError::Read { .. })));
        new_token(&path).unwrap();
        let text = read_token_text(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(read_token(&path).unwrap().matches(&text));
        assert!(
            new_token(&path).is_err(),
            "an existing token is not replaced"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        // The group's bits too: a token its group can read or write is no operator's secret.
        for mode in [0o640, 0o620, 0o660, 0o610] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_token(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("{mode:o}")), "{mode:o}: {e}");
        }
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_token(&path), Err(TokenError::Empty(_))));
    }
}
