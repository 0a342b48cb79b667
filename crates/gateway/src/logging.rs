//! Logging: tracing-subscriber set-up, and the only way SIP messages reach a log — redacted.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use sagw_sip::Message;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// Headers whose values carry credentials, challenges or signatures (gssapi-data, NTLM
/// tokens, Digest responses): only the scheme survives in logs.
const SENSITIVE: [&str; 6] = [
    "Authorization",
    "Proxy-Authorization",
    "Authentication-Info",
    "Proxy-Authentication-Info",
    "WWW-Authenticate",
    "Proxy-Authenticate",
];

/// The message as text for a trace log: start line and headers, with the values of
/// authentication headers replaced by their scheme and `<redacted>`, and the body by its length.
pub fn redacted(msg: &Message) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(msg.start_line());
    out.push('\n');
    for h in msg.headers() {
        out.push_str(h.name);
        out.push_str(": ");
        if SENSITIVE.iter().any(|s| s.eq_ignore_ascii_case(h.name)) {
            let scheme = h.value.split_whitespace().next().unwrap_or("");
            // Authentication-Info has no scheme in RFC 3261 (it starts with a parameter).
            if !scheme.contains('=') {
                out.push_str(scheme);
                out.push(' ');
            }
            out.push_str("<redacted>");
        } else {
            out.push_str(h.value);
        }
        out.push('\n');
    }
    out.push_str(&format!("[body: {} bytes]", msg.body().len()));
    out
}

/// The tracing target of the audit trail (one event per sign-in, success or refusal): route it
/// with a filter such as `sagw::audit=info` or by the `target` field of JSON logs.
pub const AUDIT: &str = "sagw::audit";

/// The installed filter's reload handle and the directive it holds (for `GET /admin/log-level`).
struct Installed {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Where the log filter came from: `--log-level`, then `RUST_LOG`, then `log.level` (the first
/// one set wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelSource {
    /// `--log-level` on the command line.
    CommandLine,
    /// The `RUST_LOG` environment variable.
    Environment,
    /// `log.level` in the configuration.
    Config,
}

/// The filter directive in force at start: `cli` (`--log-level`) over `env` (`RUST_LOG`, when set
/// and not empty) over `config` (`log.level`).
pub fn effective_level(
    cli: Option<&str>,
    env: Option<&str>,
    config: &str,
) -> (String, LevelSource) {
    match (cli, env.map(str::trim).filter(|e| !e.is_empty())) {
        (Some(c), _) => (c.to_owned(), LevelSource::CommandLine),
        (None, Some(e)) => (e.to_owned(), LevelSource::Environment),
        (None, None) => (config.to_owned(), LevelSource::Config),
    }
}

/// The filter [`init`] installs for `level`: `level` itself, or `info` when it is no valid filter.
pub fn installed_filter(level: &str) -> String {
    match EnvFilter::try_new(level) {
        Ok(_) => level.to_owned(),
        Err(_) => "info".to_owned(),
    }
}

/// Install the global subscriber on standard error. `level` is a level or an EnvFilter directive
/// (an invalid one falls back to `info`, and says so). Colour codes are written only when
/// standard error is a terminal: a file, a pipe or journald gets plain text. Returns false when a
/// subscriber was already installed (tests start several gateways).
pub fn init(level: &str, format: LogFormat) -> bool {
    let (filter, fallback) = match EnvFilter::try_new(level) {
        Ok(f) => (f, false),
        Err(_) => (EnvFilter::new("info"), true),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Human => tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init()
            .is_ok(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json())
            .try_init()
            .is_ok(),
    };
    if installed {
        let current = if fallback { "info" } else { level };
        let _ = INSTALLED.set(Installed {
            handle,
            current: Mutex::new(current.to_owned()),
        });
        if fallback {
            tracing::warn!(filter = %level, "not a log level or filter: logging at info");
        }
    }
    installed
}

/// Change the log filter of the running process (the admin API's `PUT /admin/log-level`, a
/// reload of `log.level`). `level` is a level or an EnvFilter directive; an invalid one changes
/// nothing.
pub fn set_level(level: &str) -> Result<(), String> {
    change_level(level, |_| {})
}

/// [`set_level`], calling `before` with the filter in force once the new one has parsed, before
/// it applies: what `before` logs is still filtered by the old one, so a change to `off` (or one
/// that silences the audit trail) can be recorded by the filter that lets it through.
pub fn change_level(level: &str, before: impl FnOnce(&str)) -> Result<(), String> {
    let filter = EnvFilter::try_new(level.trim())
        .map_err(|e| format!("`{level}` is not a log level or filter: {e}"))?;
    let installed = INSTALLED
        .get()
        .ok_or_else(|| "logging is not initialised in this process".to_owned())?;
    // Held throughout: two changes at once are recorded in the order they apply, each with the
    // filter it replaced.
    let mut current = match installed.current.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    before(&current);
    installed
        .handle
        .reload(filter)
        .map_err(|e| format!("the log filter could not be changed: {e}"))?;
    *current = level.trim().to_owned();
    Ok(())
}

/// The filter directive in force, when [`init`] installed the subscriber.
pub fn current_level() -> Option<String> {
    INSTALLED
        .get()
        .and_then(|i| i.current.lock().ok().map(|c| c.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_beats_rust_log_which_beats_the_file() {
        assert_eq!(
            effective_level(Some("debug"), Some("trace"), "warn"),
            ("debug".to_owned(), LevelSource::CommandLine)
        );
        assert_eq!(
            effective_level(None, Some("sagw=trace"), "warn"),
            ("sagw=trace".to_owned(), LevelSource::Environment)
        );
        assert_eq!(
            effective_level(None, Some("  "), "warn"),
            ("warn".to_owned(), LevelSource::Config)
        );
        assert_eq!(
            effective_level(None, None, "warn"),
            ("warn".to_owned(), LevelSource::Config)
        );
    }

    #[test]
    fn an_invalid_level_is_refused_before_anything_changes() {
        let e = set_level("debug,,=[").unwrap_err();
        assert!(e.contains("not a log level"), "{e}");
    }

    #[test]
    fn credentials_never_reach_the_log_text() {
        let raw = b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
Proxy-Authorization: NTLM qop=\"auth\", realm=\"SIP Communications Service\", opaque=\"8C1E\", gssapi-data=\"TlRMTVNTUAADAAAAGAAYAG\"\r\n\
authorization: Digest username=\"a\", response=\"6629fae49393a05397450978507c4ef1\"\r\n\
Authentication-Info: rspauth=\"0123456789abcdef\"\r\nContent-Length: 5\r\n\r\nhello";
        let m = Message::parse(raw).unwrap();
        let text = redacted(&m);
        for secret in [
            "TlRMTVNTUAADAAAAGAAYAG",
            "6629fae4",
            "0123456789abcdef",
            "8C1E",
            "hello",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("Proxy-Authorization: NTLM <redacted>"));
        assert!(text.contains("authorization: Digest <redacted>"));
        assert!(text.contains("Authentication-Info: <redacted>"));
        assert!(text.contains("Call-ID: c\n"));
        assert!(text.ends_with("[body: 5 bytes]"));
    }
}
