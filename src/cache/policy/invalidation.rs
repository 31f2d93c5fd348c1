//! What an unsafe method invalidates (RFC 9111 §4.4), pure: the target itself and the same-authority
//! references of a non-error answer.

use http::header::{self, HeaderMap};
use http::{StatusCode, Uri};

/// RFC 9111 §4.4: after a non-error answer (2xx, 3xx) to an unsafe method, what the cache must no longer
/// reuse, as request targets (path and query): the target itself, and `Location` / `Content-Location` when
/// they name the same authority. References relative to the request's path (not starting with `/`) are left
/// alone. Nothing after an error answer.
pub fn invalidated_by_unsafe<'a>(
    status: StatusCode,
    response: &'a HeaderMap,
    target: Option<&'a str>,
    host: Option<&'a str>,
) -> impl Iterator<Item = &'a str> {
    let applies = status.is_success() || status.is_redirection();
    let named = [header::LOCATION, header::CONTENT_LOCATION]
        .into_iter()
        .filter_map(move |name| response.get(name)?.to_str().ok())
        .filter_map(move |reference| same_authority_target(reference, host));
    target.into_iter().chain(named).filter(move |_| applies)
}

/// The path and query of a `Location` / `Content-Location` reference when it names the request's authority:
/// an absolute path, or an absolute URI whose authority is the request's `Host`.
fn same_authority_target<'a>(reference: &'a str, host: Option<&str>) -> Option<&'a str> {
    if reference.starts_with('/') && !reference.starts_with("//") {
        return Some(reference);
    }
    let uri: Uri = reference.parse().ok()?;
    let authority = uri.authority()?.as_str();
    let same = host.is_some_and(|host| host.eq_ignore_ascii_case(authority));
    // Borrow the path and query from `reference` itself: it ends the absolute URI.
    let path_and_query = uri.path_and_query()?.as_str();
    same.then(|| &reference[reference.len() - path_and_query.len()..])
        .filter(|pq| pq.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_non_error_answers_to_unsafe_methods_invalidate() {
        let mut response = HeaderMap::new();
        response.insert(header::LOCATION, HeaderValue::from_static("/assets/new.js"));
        response.insert(
            header::CONTENT_LOCATION,
            HeaderValue::from_static("http://evil.example/x"),
        );
        let host = Some("cloud.example");
        let named = |status: u16| {
            let status = StatusCode::from_u16(status).unwrap();
            invalidated_by_unsafe(status, &response, Some("/assets/a.js"), host).collect::<Vec<_>>()
        };
        assert_eq!(named(200), ["/assets/a.js", "/assets/new.js"]);
        assert_eq!(named(303), ["/assets/a.js", "/assets/new.js"]);
        assert!(named(404).is_empty());
        assert!(named(500).is_empty());
    }

    #[test]
    fn only_references_to_the_same_authority_are_invalidated() {
        let host = Some("cloud.example");
        assert_eq!(
            same_authority_target("/assets/a.js", host),
            Some("/assets/a.js")
        );
        assert_eq!(
            same_authority_target("http://cloud.example/x?y", host),
            Some("/x?y")
        );
        assert_eq!(
            same_authority_target("https://CLOUD.example/x", host),
            Some("/x")
        );
        assert_eq!(same_authority_target("http://evil.example/x", host), None);
        assert_eq!(same_authority_target("//evil.example/x", host), None);
        assert_eq!(same_authority_target("relative/x", host), None);
        assert_eq!(same_authority_target("http://cloud.example/x", None), None);
    }
}
