//! The audit trail: one event per sign-in, success or refusal, and one per change of the log
//! filter ([`log_filter_changed`]), at info on the target [`crate::logging::AUDIT`]
//! (`sagw::audit`), so that operators can route it apart.
//!
//! Fields: `outcome` (`signed_in` or `refused`), `user` (the identity proved; for a refusal the
//! account name the credentials claim, when they name one in the clear), `from` (the request's
//! From address), `scheme` (`ntlm`, `kerberos`, `digest`), `source` (address and port the request
//! came from), `transport`, `method`, `reason` for a refusal, and `sa`, the SA's opaque (its public
//! name on the wire and in `GET /admin/sas`, what `revoke` takes). Never a password, a hash, a
//! `gssapi-data` token, a signature, a nonce or a key: the credentials header is read only for
//! its scheme and the user name it carries (Digest `username`, the user and domain fields of an
//! NTLM AUTHENTICATE message).
//!
//! Refusals are written at most [`REFUSALS_PER_SECOND`] a second: anyone can make one (a
//! malformed header, a made-up user) for the price of one datagram, and each cost a formatted line
//! and a blocking write to standard error on the core thread, so a flood stalled SIP for everyone
//! behind a slow journal and pushed the real events out of journald's rate limit. Over the budget
//! they are counted, and one `warn` line (`refusals not logged`, with the count) says so within
//! the next second; `sagw_auth_*` metrics count every one.
//!
//! A sign-in is what makes a client's proof: an MS-SIPAE handshake that establishes an SA, or a
//! REGISTER with valid Digest credentials (every Digest request carries credentials; only its
//! registrations are sign-ins). A refusal is any request whose credentials or signature failed,
//! except a stale Digest nonce (the client retries with a fresh one as a matter of course).

use std::time::{Duration, Instant};

use base64::Engine as _;
use sagw_auth::{Binding, Decision, Reason, Scheme};
use sagw_proxy::Flow;
use sagw_sip::{AuthHeader, Message};
use tracing::{info, warn};

use crate::logging::AUDIT;

/// The credentials headers a client answers a challenge with.
const CREDENTIALS: [&str; 2] = ["Proxy-Authorization", "Authorization"];

/// The scheme and the user name the request's credentials claim, as far as they say so in the
/// clear (a Kerberos AP-REQ names its client only inside the encrypted authenticator).
fn claimed(msg: &Message) -> (Option<&'static str>, Option<String>) {
    for name in CREDENTIALS {
        for value in msg.header_all(name) {
            let Ok(h) = AuthHeader::parse(value) else {
                continue;
            };
            let scheme = if h.is_scheme("Digest") {
                Scheme::Digest
            } else if h.is_scheme("NTLM") {
                Scheme::Ntlm
            } else if h.is_scheme("Kerberos") {
                Scheme::Kerberos
            } else {
                continue;
            };
            let user = match scheme {
                // As long as the header allows otherwise: 64 KB a refusal line.
                Scheme::Digest => h.param("username").map(clean),
                Scheme::Ntlm => h.param("gssapi-data").and_then(ntlm_user),
                Scheme::Kerberos => None,
            };
            return (Some(scheme.label()), user);
        }
    }
    (None, None)
}

/// `DOMAIN\user` from an NTLM AUTHENTICATE message (nothing from the other messages).
fn ntlm_user(gssapi_data: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(gssapi_data.trim())
        .ok()?;
    let m = sagw_ntlm::AuthenticateMessage::parse(&bytes).ok()?;
    let user = clean(m.user());
    Some(match clean(m.domain()) {
        d if d.is_empty() => user,
        d => format!("{d}\\{user}"),
    })
}

/// A client-supplied name made safe for one log field: control characters dropped, length capped.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}

fn from_aor(msg: &Message) -> String {
    msg.from()
        .map(|f| clean(f.uri.split(';').next().unwrap_or(f.uri)))
        .unwrap_or_default()
}

fn transport(flow: &Flow) -> &'static str {
    match flow.transport {
        sagw_proxy::Transport::Udp => "udp",
        sagw_proxy::Transport::Tcp => "tcp",
        sagw_proxy::Transport::Tls => "tls",
    }
}

/// Not worth an audit line: a stale or other node's Digest nonce is a routine retry.
fn routine(reason: Reason) -> bool {
    matches!(reason, Reason::StaleNonce | Reason::OtherNode)
}

/// The audit event for the core's decision on `msg` (read before the stage edits it).
pub fn decision(decision: &Decision, msg: &Message, flow: &Flow) {
    let method = msg.method().unwrap_or("");
    match decision {
        Decision::Authenticated(a) => {
            let sa = match &a.binding {
                Binding::Sa {
                    sa,
                    established_now: true,
                    ..
                } => Some(sa.opaque().to_string()),
                Binding::Digest { .. } if method == "REGISTER" => None,
                // A request on an SA made earlier, or a Digest request that is no registration.
                _ => return,
            };
            info!(
                target: AUDIT,
                outcome = "signed_in",
                user = %a.identity,
                from = %from_aor(msg),
                scheme = a.scheme.label(),
                source = %flow.remote,
                transport = transport(flow),
                method,
                sa = sa.as_deref().unwrap_or("-"),
                "sign-in"
            );
        }
        Decision::Challenge(c) | Decision::Continue(c) => {
            if let Some(reason) = c.cause.filter(|r| !routine(*r)) {
                refused(msg, flow, reason, None);
            }
        }
        Decision::Reject { reason, .. } | Decision::Unavailable { reason, .. } => {
            refused(msg, flow, *reason, None)
        }
        Decision::Forbidden(f) => refused(
            msg,
            flow,
            f.reason,
            Some((f.verified.identity.as_str(), f.verified.scheme.label())),
        ),
        Decision::Discard(_) | Decision::Deferred(_) => {}
    }
}

/// How many refusals a second are written (the rest are counted: see the module's text).
pub const REFUSALS_PER_SECOND: u32 = 50;

/// What the refusals of the current second have used of [`REFUSALS_PER_SECOND`].
#[derive(Debug, Default)]
struct RefusalBudget {
    /// When the current one-second window began.
    window: Option<Instant>,
    written: u32,
    /// Not written since the last report.
    suppressed: u64,
}

impl RefusalBudget {
    /// Whether a refusal at `now` is written; and the count not written in windows now over,
    /// to report.
    fn admit(&mut self, now: Instant) -> (bool, Option<u64>) {
        let report = self.roll(now);
        if self.written < REFUSALS_PER_SECOND {
            self.written += 1;
            (true, report)
        } else {
            self.suppressed += 1;
            (false, report)
        }
    }

    /// Starts a new window when the current one is over; the count to report then.
    fn roll(&mut self, now: Instant) -> Option<u64> {
        if self
            .window
            .is_some_and(|w| now.saturating_duration_since(w) < Duration::from_secs(1))
        {
            return None;
        }
        self.window = Some(now);
        self.written = 0;
        Some(std::mem::take(&mut self.suppressed)).filter(|n| *n > 0)
    }
}

static REFUSALS: parking_lot::Mutex<RefusalBudget> = parking_lot::Mutex::new(RefusalBudget {
    window: None,
    written: 0,
    suppressed: 0,
});

fn report_suppressed(n: u64) {
    warn!(target: AUDIT, not_logged = n, per_second = REFUSALS_PER_SECOND, "refusals not logged: more than the audit writes a second");
}

/// Reports the refusals not written in a window that is over: called every second, so that the
/// count of a flood that stopped is not left unsaid until the next refusal.
pub fn flush_suppressed() {
    let report = REFUSALS.lock().roll(Instant::now());
    if let Some(n) = report {
        report_suppressed(n);
    }
}

/// A refusal: `verified` is the identity and scheme when the credentials held but the request
/// was not allowed. Within [`REFUSALS_PER_SECOND`].
pub fn refused(msg: &Message, flow: &Flow, reason: Reason, verified: Option<(&str, &str)>) {
    let (write, report) = REFUSALS.lock().admit(Instant::now());
    if let Some(n) = report {
        report_suppressed(n);
    }
    if !write {
        return;
    }
    let (scheme, user) = match verified {
        Some((identity, scheme)) => (Some(scheme), Some(identity.to_owned())),
        None => claimed(msg),
    };
    info!(
        target: AUDIT,
        outcome = "refused",
        user = user.as_deref().unwrap_or("-"),
        from = %from_aor(msg),
        scheme = scheme.unwrap_or("-"),
        source = %flow.remote,
        transport = transport(flow),
        method = msg.method().unwrap_or(""),
        reason = reason.label(),
        "sign-in refused"
    );
}

/// The audit event for a change of the log filter: `by` who made it (`admin_api`: `PUT
/// /admin/log-level`; `reload`: a configuration reload that changed `log.level`), `old` the filter
/// it replaces, `new` the filter now. Call it before the new filter applies (see
/// [`crate::logging::change_level`]): a filter such as `off` would otherwise silence the record
/// of its own arrival. Control characters are written escaped (a line break would forge log
/// lines): the admin API refuses a filter with one, but a TOML string in the configuration file
/// can hold one (`"info\nx"`).
pub fn log_filter_changed(by: &'static str, old: &str, new: &str) {
    info!(target: AUDIT, by, old = %old.escape_debug(), new = %new.escape_debug(), "log filter changed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: &str) -> Message {
        let raw = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:alice@example.com>;tag=1\r\n\
To: <sip:alice@example.com>\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        Message::parse(raw.as_bytes()).unwrap()
    }

    #[test]
    fn the_claimed_user_comes_from_the_clear_part_of_the_credentials() {
        let m = request(
            "Authorization: Digest username=\"alice\", realm=\"r\", nonce=\"n\", uri=\"sip:example.com\", response=\"6629fae49393a05397450978507c4ef1\"\r\n",
        );
        assert_eq!(claimed(&m), (Some("digest"), Some("alice".to_owned())));
        // A Digest name is cut as the others are.
        let long = "A".repeat(8000);
        let m = request(&format!(
            "Authorization: Digest username=\"{long}\", realm=\"r\", nonce=\"n\"\r\n"
        ));
        assert_eq!(claimed(&m).1.map(|u| u.len()), Some(128));
        let m = request(
            "Proxy-Authorization: Kerberos qop=\"auth\", realm=\"r\", targetname=\"sip/x\", gssapi-data=\"YIIB\"\r\n",
        );
        assert_eq!(claimed(&m), (Some("kerberos"), None));
        // Not an AUTHENTICATE message: no user.
        let m = request(
            "Proxy-Authorization: NTLM qop=\"auth\", realm=\"r\", targetname=\"x\", gssapi-data=\"bm90IG50bG0=\"\r\n",
        );
        assert_eq!(claimed(&m), (Some("ntlm"), None));
        assert_eq!(claimed(&request("")), (None, None));
        assert_eq!(from_aor(&m), "sip:alice@example.com");
    }

    #[test]
    fn refusals_over_the_budget_are_counted_and_reported_once_the_second_is_over() {
        let mut b = RefusalBudget::default();
        let t = Instant::now();
        for _ in 0..REFUSALS_PER_SECOND {
            assert_eq!(b.admit(t), (true, None));
        }
        for _ in 0..7 {
            assert_eq!(b.admit(t + Duration::from_millis(900)), (false, None));
        }
        // The next second: written again, and the 7 reported.
        assert_eq!(b.admit(t + Duration::from_millis(1000)), (true, Some(7)));
        assert_eq!(b.roll(t + Duration::from_millis(1500)), None);
        for _ in 0..REFUSALS_PER_SECOND + 2 {
            b.admit(t + Duration::from_millis(1500));
        }
        // Reported by the periodic flush, with no refusal after them.
        assert_eq!(b.roll(t + Duration::from_millis(2100)), Some(3));
        assert_eq!(b.roll(t + Duration::from_millis(3200)), None);
    }

    #[test]
    fn names_from_clients_cannot_break_the_log_line() {
        assert_eq!(clean("bob\n\u{1b}[31mroot"), "bob[31mroot");
        assert_eq!(clean(&"x".repeat(500)).len(), 128);
    }
}
