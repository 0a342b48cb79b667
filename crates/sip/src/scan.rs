//! Small byte-level helpers shared by the parsers.

/// SP or HTAB.
#[inline]
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Linear whitespace as it can appear inside a (possibly folded) header value.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Trim SP, HTAB, CR and LF on both sides (folded values keep their inner line breaks).
pub(crate) fn trim_lws(s: &str) -> &str {
    // Byte-wise (these are ASCII bytes, never part of a multi-byte character): the `char`
    // pattern of `trim_matches` decodes UTF-8 on every call, on every header of every message.
    let b = s.as_bytes();
    // Most values have nothing to trim: then no scan and no re-slicing.
    if !b.first().is_some_and(|&c| is_lws(c)) && !b.last().is_some_and(|&c| is_lws(c)) {
        return s;
    }
    let start = b.iter().position(|&c| !is_lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_lws(c)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or("")
}

/// Split `s` on `sep` outside double quotes (honouring `\` escapes inside quotes) and, when
/// `angles` is set, outside `<...>`. Pieces are LWS-trimmed; empty pieces are skipped.
pub(crate) struct Split<'a> {
    rest: Option<&'a str>,
    /// `None`: yield the whole (trimmed) value once.
    sep: Option<u8>,
    angles: bool,
}

impl<'a> Split<'a> {
    pub(crate) fn new(s: &'a str, sep: u8, angles: bool) -> Self {
        Split {
            rest: Some(s),
            sep: Some(sep),
            angles,
        }
    }

    /// The trimmed value as a single piece (nothing when it is empty).
    pub(crate) fn whole(s: &'a str) -> Self {
        Split {
            rest: Some(s),
            sep: None,
            angles: false,
        }
    }

    /// Next raw piece (may be empty after trimming).
    fn next_piece(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let Some(sep) = self.sep else {
            self.rest = None;
            return Some(s);
        };
        let b = s.as_bytes();
        let mut in_quotes = false;
        let mut in_angle = false;
        let mut escaped = false;
        for (i, &c) in b.iter().enumerate() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_quotes = false;
                }
                continue;
            }
            match c {
                b'"' => in_quotes = true,
                b'<' if self.angles => in_angle = true,
                b'>' if self.angles => in_angle = false,
                _ if c == sep && !in_angle => {
                    self.rest = s.get(i + 1..);
                    return s.get(..i);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(s)
    }
}

impl<'a> Iterator for Split<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            let piece = trim_lws(self.next_piece()?);
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
}

/// Index of the closing quote of the quoted-string whose opening quote is at `open`.
pub(crate) fn closing_quote(b: &[u8], open: usize) -> Option<usize> {
    let mut escaped = false;
    for (i, &c) in b.iter().enumerate().skip(open + 1) {
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_escapes_and_angles() {
        let v = r#""Doe, \"J\"" <sip:a@b;x=1,2>;p=q, <sip:c@d> ,, sip:e@f"#;
        let parts: Vec<_> = Split::new(v, b',', true).collect();
        assert_eq!(
            parts,
            [
                r#""Doe, \"J\"" <sip:a@b;x=1,2>;p=q"#,
                "<sip:c@d>",
                "sip:e@f"
            ]
        );
        let params: Vec<_> = Split::new(";a=1; b=\"x;y\" ;;c", b';', false).collect();
        assert_eq!(params, ["a=1", "b=\"x;y\"", "c"]);
    }

    #[test]
    fn closing_quote_skips_escaped_quotes() {
        assert_eq!(closing_quote(br#""a\"b" c"#, 0), Some(5));
        assert_eq!(closing_quote(br#""a\""#, 0), None);
    }
}
