//! Logging: tracing-subscriber set-up, and the only way SIP messages reach a log — redacted.

use sagw_sip::Message;
use tracing_subscriber::EnvFilter;

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

/// Replaces the filter of the installed subscriber (see [`set_level`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Set by [`init`]: how a configuration reload changes the log level.
static SET_FILTER: std::sync::OnceLock<SetFilter> = std::sync::OnceLock::new();

/// Install the global subscriber. `level` is a level or an EnvFilter directive. Returns false
/// when a subscriber was already installed (tests start several gateways).
pub fn init(level: &str, format: LogFormat) -> bool {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            let installed = builder.try_init().is_ok();
            if installed {
                let _ = SET_FILTER.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
            installed
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            let installed = builder.try_init().is_ok();
            if installed {
                let _ = SET_FILTER.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
            installed
        }
    }
}

/// Changes the log level (a level or an EnvFilter directive) of the subscriber [`init`]
/// installed: a configuration reload's `log.level`.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    let set = SET_FILTER
        .get()
        .ok_or_else(|| "no reloadable log subscriber installed".to_owned())?;
    set(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

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
