//! `CDN-Cache-Control` (RFC 9213): cache directives targeted at this cache, read as a Structured Field
//! Dictionary (RFC 8941 §3.2), not with the `Cache-Control` parser. Pure.

use http::HeaderMap;
use sfv::{BareItem, Dictionary, ListEntry, Parser, Version};

use super::{CacheControl, DELTA_SECONDS_MAX};

/// The targeted field for CDNs (RFC 9213 §3), the one on this cache's target list (§2.2).
const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// The directives of a response's `CDN-Cache-Control`, or `None` when it is absent, empty, or not valid: it
/// fails to parse as a Dictionary, or a directive this cache acts on has a value of another type than RFC
/// 9213 §2.1 infers for it. The cache then uses `Cache-Control` and `Expires` as if the field were absent
/// (§2.1: "that field MUST be ignored"; §2.2: only "a valid, non-empty value" replaces them).
pub(super) fn directives(headers: &HeaderMap) -> Option<CacheControl> {
    let value = combined(headers)?;
    let dictionary: Dictionary = Parser::new(&value)
        .with_version(Version::Rfc8941)
        .parse()
        .ok()?;
    if dictionary.is_empty() {
        return None;
    }
    let mut cc = CacheControl {
        targeted: true,
        ..CacheControl::default()
    };
    for (name, member) in &dictionary {
        cc.set(name.as_str(), argument(name.as_str(), member)?);
    }
    Some(cc)
}

/// The field's lines joined with commas, as RFC 8941 §4.2 parses them (and as RFC 9110 §5.3 combines them),
/// each without its surrounding whitespace (RFC 9110 §5.5); `None` when there is no line at all. A blank
/// line among others leaves an empty member, which fails the parse: the whole field is then ignored.
fn combined(headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(CDN_CACHE_CONTROL).iter();
    let mut value = lines.next()?.as_bytes().trim_ascii().to_vec();
    for line in lines {
        value.extend_from_slice(b", ");
        value.extend_from_slice(line.as_bytes().trim_ascii());
    }
    Some(value)
}

/// The type RFC 9213 §2.1 infers for the value of a directive this cache acts on.
#[derive(Clone, Copy)]
enum Expects {
    /// No value: Boolean true (`no-store`, `must-revalidate`, `proxy-revalidate`, `public`).
    True,
    /// Boolean true, or the field names it is qualified with as a String or a Token (`no-cache`, `private`;
    /// RFC 9111 §5.2.2.4, §5.2.2.7). The qualified form is read as the unqualified one, as for
    /// `Cache-Control`.
    TrueOrFieldNames,
    /// `delta-seconds`: a non-negative Integer (`max-age`, `s-maxage`, `stale-while-revalidate`,
    /// `stale-if-error`).
    Seconds,
}

fn expects(name: &str) -> Option<Expects> {
    match name {
        "no-store" | "must-revalidate" | "proxy-revalidate" | "public" => Some(Expects::True),
        "no-cache" | "private" => Some(Expects::TrueOrFieldNames),
        "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error" => {
            Some(Expects::Seconds)
        }
        _ => None,
    }
}

/// A member's argument for [`CacheControl::set`], or `None` when its value violates the type inferred for
/// its directive: "implementations SHOULD NOT consume" such values (RFC 9213 §2.1), so the field is not
/// valid. Parameters are ignored (§2.1); so are the values of unrecognised directives (§2.2).
fn argument(name: &str, member: &ListEntry) -> Option<Option<u64>> {
    let Some(expected) = expects(name) else {
        return Some(None);
    };
    let ListEntry::Item(item) = member else {
        return None;
    };
    match (expected, &item.bare_item) {
        (Expects::True | Expects::TrueOrFieldNames, BareItem::Boolean(true))
        | (Expects::TrueOrFieldNames, BareItem::String(_) | BareItem::Token(_)) => Some(None),
        (Expects::Seconds, BareItem::Integer(seconds)) => u64::try_from(i64::from(*seconds))
            .ok()
            .map(|seconds| Some(seconds.min(DELTA_SECONDS_MAX))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use http::header;

    use super::*;

    fn headers(cache_control: Option<&str>, targeted: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = cache_control {
            headers.insert(header::CACHE_CONTROL, value.parse().unwrap());
        }
        for line in targeted {
            headers.append(CDN_CACHE_CONTROL, line.parse().unwrap());
        }
        headers
    }

    /// The directives read for a response with `Cache-Control: max-age=5` and these `CDN-Cache-Control` lines.
    fn read(targeted: &[&str]) -> CacheControl {
        CacheControl::of_response(&headers(Some("max-age=5"), targeted))
    }

    #[test]
    fn cdn_cache_control_replaces_cache_control() {
        let cc = CacheControl::of_response(&headers(Some("no-store"), &["max-age=600"]));
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(Some(600)));
        assert!(cc.targeted);
    }

    #[test]
    fn empty_cdn_cache_control_is_ignored() {
        for targeted in [&[""][..], &["   "], &["", " "]] {
            let cc = read(targeted);
            assert_eq!(cc.max_age, Some(Some(5)), "{targeted:?}");
            assert!(!cc.targeted, "{targeted:?}");
        }
    }

    /// RFC 9213 §2.1: a field that fails to parse as a Dictionary (RFC 8941 §4.2) is ignored whole, and
    /// `Cache-Control` applies.
    #[test]
    fn an_unparsable_cdn_cache_control_falls_back_to_cache_control() {
        for unparsable in [
            "Max-Age=60",               // keys are lower case
            "max-age=60,",              // a trailing comma
            "max-age=60, ,public",      // an empty member
            "max-age=60 no-store",      // a missing comma
            "max-age=60;",              // an empty parameter
            "\"max-age\"=60",           // a key is not a String
            "max-age=1000000000000000", // past the 15 digits of an Integer
            "max-age=@1700000000",      // an RFC 9651 Date is not RFC 8941
        ] {
            let cc = read(&[unparsable]);
            assert_eq!(cc.max_age, Some(Some(5)), "{unparsable}");
            assert!(!cc.targeted, "{unparsable}");
        }
    }

    /// RFC 9213 §2.1: a directive without a value is Boolean true, `delta-seconds` an Integer, the field
    /// names of `no-cache`/`private` a String or a Token. A value of another type is not consumed: the
    /// field is not valid, so `Cache-Control` applies (`max-age=5` there).
    #[test]
    fn directive_values_must_have_the_type_rfc_9213_infers() {
        type Holds = fn(&CacheControl) -> bool;
        let valid: [(&str, Holds); 9] = [
            ("no-store", |cc| cc.no_store),
            ("no-cache=\"set-cookie\"", |cc| cc.no_cache),
            ("private=x-user", |cc| cc.private),
            ("public=?1", |cc| cc.public),
            ("proxy-revalidate", |cc| cc.must_revalidate),
            ("s-maxage=30", |cc| cc.s_maxage == Some(Some(30))),
            ("max-age=0", |cc| cc.max_age == Some(Some(0))),
            ("stale-while-revalidate=7", |cc| {
                cc.stale_while_revalidate == Some(7)
            }),
            ("stale-if-error=9", |cc| cc.stale_if_error == Some(9)),
        ];
        for (value, holds) in valid {
            let cc = read(&[value]);
            assert!(cc.targeted && holds(&cc), "{value}: {cc:?}");
        }
        for invalid in [
            "max-age=\"60\"",  // a String
            "max-age=60.0",    // a Decimal
            "max-age=-1",      // negative
            "max-age=(60)",    // an Inner List
            "max-age=:AAA=:",  // a Byte Sequence
            "max-age=sixty",   // a Token
            "max-age=?1",      // a Boolean
            "s-maxage=\"60\"", // the same for every duration
            "max-age=60, stale-if-error=1.5",
            "no-store=?0", // a directive without a value is Boolean true...
            "no-store=1",  // ...not an Integer
            "public=\"yes\", max-age=60",
            "private=(a b)", // field names as an Inner List
        ] {
            let cc = read(&[invalid]);
            assert_eq!(cc.max_age, Some(Some(5)), "{invalid}");
            assert!(!cc.targeted, "{invalid}");
        }
    }

    /// RFC 8941 §4.2: the lines are parsed as one comma-joined value, so a blank line among others leaves an
    /// empty member and fails the whole field.
    #[test]
    fn field_lines_are_combined_before_parsing() {
        let cc = read(&["max-age=60", "must-revalidate"]);
        assert_eq!(cc.max_age, Some(Some(60)));
        assert!(cc.must_revalidate);
        let cc = read(&["max-age=60", ""]);
        assert_eq!(cc.max_age, Some(Some(5)));
        assert!(!cc.targeted);
    }

    #[test]
    fn a_value_that_is_not_ascii_falls_back_to_cache_control() {
        let mut headers = headers(Some("max-age=5"), &[]);
        let value = http::HeaderValue::from_bytes(b"max-age=60, x=\"\xe9\"").unwrap();
        headers.insert(CDN_CACHE_CONTROL, value);
        let cc = CacheControl::of_response(&headers);
        assert_eq!(cc.max_age, Some(Some(5)));
    }

    /// RFC 9213 §2.1, §2.2: parameters and unrecognised directives are ignored; the field still takes the
    /// place of `Cache-Control` (an unrecognised directive alone, too: §3.1's `CDN-Cache-Control: none`).
    #[test]
    fn parameters_and_unknown_directives_are_ignored() {
        let cc = read(&["max-age=60;origin=1, x-unknown=(1 2), immutable, foo=1.5"]);
        assert_eq!(cc.max_age, Some(Some(60)));
        assert!(cc.targeted);
        let none = CacheControl::of_response(&headers(Some("no-store"), &["none"]));
        assert!(none.targeted && !none.no_store);
        assert_eq!(none.max_age, None);
    }

    #[test]
    fn the_last_of_duplicate_members_wins_and_durations_saturate() {
        // RFC 8941 §4.2.2: a key seen again overwrites the value; delta-seconds cap at 2^31 (RFC 9111 §1.2.2).
        assert_eq!(read(&["max-age=60, max-age=30"]).max_age, Some(Some(30)));
        assert_eq!(
            read(&["max-age=999999999999999"]).max_age,
            Some(Some(1 << 31))
        );
    }
}
