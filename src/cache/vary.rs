//! `Vary` (RFC 9111 §4.1): a stored response is only reused for a request whose nominated header fields
//! match the request that produced it. Variants are stored under the primary key extended with those values.

use std::fmt::Write as _;

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Separates the primary key from the variant part; cannot occur in a request target or a header value.
const VARIANT_SEPARATOR: char = '\n';
/// Separates one nominated field from the next; cannot occur in a header value.
const FIELD_SEPARATOR: char = '\r';

/// The request header fields a response's `Vary` nominates, lower-cased, deduplicated and sorted (so two
/// responses naming the same fields in another order share variants). `None` for `Vary: *`, which never
/// matches a later request, or a `Vary` that cannot be read: such a response is not stored.
pub fn names(response: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in response.get_all(header::VARY) {
        for token in value
            .to_str()
            .ok()?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if token == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(token.as_bytes()).ok()?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// The request's values of the nominated fields, normalised as RFC 9111 §4.1 allows: field lines combined,
/// list members trimmed of whitespace. An absent field differs from an empty one. Values are compared as
/// the bytes they are (obs-text included): every byte outside visible ASCII, and `%`, is written as `%XX`,
/// so two different values never share a variant.
pub fn values(names: &[HeaderName], request: &HeaderMap) -> String {
    let mut out = String::new();
    for name in names {
        out.push_str(name.as_str());
        let mut lines = request.get_all(name).iter().peekable();
        if lines.peek().is_none() {
            out.push_str(":-");
        } else {
            out.push('=');
            let members = lines
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|m| !m.is_empty());
            for (index, member) in members.enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_escaped(&mut out, member);
            }
        }
        out.push(FIELD_SEPARATOR);
    }
    out
}

/// Appends `bytes` with each byte outside `!`..=`~` but space, and `%` itself, as `%XX`: one-to-one, so the
/// key keeps every byte's identity and stays a `str`.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").expect("writing to a String cannot fail");
        }
    }
}

/// The key a variant is stored under: the primary key, then the nominated fields' values.
pub fn variant_key(primary: &str, values: &str) -> String {
    let mut key = String::with_capacity(primary.len() + 1 + values.len());
    key.push_str(primary);
    key.push(VARIANT_SEPARATOR);
    key.push_str(values);
    key
}

/// The primary key a stored key belongs to (itself, unless it is a variant key).
pub fn primary_of(key: &str) -> &str {
    key.split(VARIANT_SEPARATOR).next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn names_are_normalised() {
        let names = names(&headers(&[
            ("vary", "Accept-Encoding, origin"),
            ("vary", "accept-encoding"),
        ]))
        .unwrap();
        assert_eq!(names, ["accept-encoding", "origin"]);
        assert_eq!(
            super::names(&headers(&[])).unwrap(),
            Vec::<HeaderName>::new()
        );
    }

    #[test]
    fn star_never_matches() {
        assert!(names(&headers(&[("vary", "origin, *")])).is_none());
    }

    #[test]
    fn values_ignore_list_whitespace_and_line_splits() {
        let names = names(&headers(&[("vary", "accept-encoding")])).unwrap();
        let a = values(&names, &headers(&[("accept-encoding", "gzip,  br")]));
        let b = values(
            &names,
            &headers(&[("accept-encoding", "gzip"), ("accept-encoding", "br")]),
        );
        assert_eq!(a, b);
        let c = values(&names, &headers(&[("accept-encoding", "br, gzip")]));
        assert_ne!(a, c, "order is meaningful");
    }

    #[test]
    fn values_keep_every_byte() {
        let names = names(&headers(&[("vary", "accept-language")])).unwrap();
        let value = |bytes: &[u8]| {
            let mut map = HeaderMap::new();
            map.insert(
                header::ACCEPT_LANGUAGE,
                HeaderValue::from_bytes(bytes).unwrap(),
            );
            values(&names, &map)
        };
        // A lossy UTF-8 reading made both U+FFFD, one variant for two values (#12).
        assert_ne!(value(b"\xff"), value(b"\xfe"));
        // The escape itself cannot be forged by a value that spells it.
        assert_ne!(value(b"\xff"), value(b"%FF"));
        assert_eq!(
            value(b"de-CH, en;q=0.5"),
            "accept-language=de-CH,en;q=0.5\r"
        );
    }

    #[test]
    fn absent_differs_from_empty() {
        let names = names(&headers(&[("vary", "origin")])).unwrap();
        assert_ne!(
            values(&names, &headers(&[])),
            values(&names, &headers(&[("origin", "")]))
        );
    }

    #[test]
    fn variant_keys_extend_the_primary() {
        let key = variant_key("/assets/a.js", "accept-encoding=gzip\r");
        assert_eq!(primary_of(&key), "/assets/a.js");
        assert_eq!(primary_of("/assets/a.js"), "/assets/a.js");
    }
}
