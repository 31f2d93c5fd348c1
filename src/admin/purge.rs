//! The purge API, served on the admin listener only: drop stored responses, read cache statistics.
//!
//! - `POST /purge/avatar/{id}` (also `DELETE` or `PURGE`): drop one user's stored avatar.
//! - `POST /purge/url/{path}` (the same methods): drop what is stored for that path (and query), every
//!   variant included, under whichever rule caches it (for every host, when the rule keys on it).
//! - `POST /purge/prefix/{path prefix}` (the same methods): drop everything stored under a path prefix,
//!   e.g. `/purge/prefix/assets/` for everything under `/assets/`.
//! - `POST /purge/all` (the same methods): drop everything.
//! - `GET /stats`: entries, bytes and outcome counts with the hit ratio, as JSON.
//!
//! With `admin.token` set, every call needs `Authorization: Bearer <token>`; the configuration refuses a
//! non-loopback admin listener without one. Mounted by `admin::route`; `/metrics`, `/healthz` and `/readyz`
//! there stay open.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::Body;
use crate::cache::policy::AvatarKey;
use crate::cache::{Cache, Invalidation};
use crate::config::RuleConfig;
use crate::route;

/// What an admin request asks of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Drop one user's avatar; the id as given in the path.
    PurgeAvatar(&'a str),
    /// Drop what is stored for a path and query (starting with `/`).
    PurgeUrl(String),
    /// Drop everything under a path prefix (starting with `/`).
    PurgePrefix(String),
    /// Drop every avatar.
    PurgeAll,
    /// Report statistics.
    Stats,
}

/// The purge API's action for a method and path, or `None` when the path is not part of it.
/// `Some(Err(()))` means the path is the API's but the method is not allowed.
pub fn action<'a>(method: &Method, target: &'a str) -> Option<Result<Action<'a>, ()>> {
    let purging = method == Method::POST || method == Method::DELETE || method.as_str() == "PURGE";
    let path = target.split('?').next().unwrap_or(target);
    let action = if path == "/stats" {
        return Some(if method == Method::GET {
            Ok(Action::Stats)
        } else {
            Err(())
        });
    } else if path == "/purge/all" {
        Action::PurgeAll
    } else if let Some(url) = target.strip_prefix("/purge/url") {
        Action::PurgeUrl(url.to_owned())
    } else if let Some(prefix) = path.strip_prefix("/purge/prefix") {
        Action::PurgePrefix(prefix.to_owned())
    } else {
        Action::PurgeAvatar(path.strip_prefix("/purge/avatar/")?)
    };
    Some(if purging { Ok(action) } else { Err(()) })
}

/// Whether the request carries the admin token (always true when none is configured). The comparison takes
/// the same time wherever the first difference is.
pub fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// Carries out an action on the cache and describes the result as JSON.
pub fn perform(cache: &Cache, rules: &[RuleConfig], action: &Action<'_>) -> Response<Body> {
    match action {
        Action::PurgeUrl(url) if url.starts_with('/') => match route::key_for(url, None, rules) {
            Some(key) => {
                if route::keyed_by_host(url, rules) {
                    cache.invalidate(&Invalidation::Target((*url).to_owned()));
                } else {
                    cache.invalidate(&Invalidation::Key(key.into_owned()));
                }
                tracing::info!(url, "purge API: URL dropped");
                json(StatusCode::OK, &serde_json::json!({ "purged": url }))
            }
            None => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "no cache rule covers that URL" }),
            ),
        },
        Action::PurgePrefix(prefix) if prefix.starts_with('/') => {
            cache.invalidate(&Invalidation::Prefix((*prefix).to_owned()));
            tracing::info!(prefix, "purge API: prefix dropped");
            json(
                StatusCode::OK,
                &serde_json::json!({ "purged_prefix": prefix }),
            )
        }
        Action::PurgeUrl(_) | Action::PurgePrefix(_) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": "give a path starting with /" }),
        ),
        Action::PurgeAvatar(id) => match AvatarKey::from_path_segment(id) {
            Some(key) => {
                let purged = cache.peek(key.as_str(), &http::HeaderMap::new()).is_some();
                cache.invalidate(&Invalidation::Key(key.as_str().to_owned()));
                tracing::info!(user = *id, purged, "purge API: avatar dropped");
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "purged": purged, "id": id }),
                )
            }
            None => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "not an avatar id" }),
            ),
        },
        Action::PurgeAll => {
            let (entries, _) = cache.usage();
            cache.invalidate(&Invalidation::All);
            tracing::info!(entries, "purge API: every avatar dropped");
            json(StatusCode::OK, &serde_json::json!({ "purged": entries }))
        }
        Action::Stats => json(StatusCode::OK, &stats(cache)),
    }
}

/// The answer for a request without the right token.
pub fn unauthorized() -> Response<Body> {
    let mut response = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({ "error": "admin token required" }),
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The answer for a method the API does not take on that path.
pub fn method_not_allowed() -> Response<Body> {
    json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({ "error": "POST, DELETE or PURGE to purge; GET /stats" }),
    )
}

fn stats(cache: &Cache) -> serde_json::Value {
    let (entries, bytes) = cache.usage();
    let counts = cache.counts();
    serde_json::json!({
        "entries": entries,
        "bytes": bytes,
        "requests": counts.requests(),
        "hits": counts.hit,
        "stale": counts.stale,
        "revalidated": counts.revalidated,
        "coalesced": counts.coalesced,
        "misses": counts.miss,
        "bypassed": counts.bypass,
        "hit_ratio": counts.hit_ratio(),
    })
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    super::uncached(status, "application/json", value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action_of(method: &str, path: &str) -> Option<Result<Action<'static>, ()>> {
        let path: &'static str = Box::leak(path.to_owned().into_boxed_str());
        action(&method.parse().unwrap(), path)
    }

    #[test]
    fn purge_routes_take_post_delete_and_purge() {
        for method in ["POST", "DELETE", "PURGE"] {
            assert_eq!(
                action_of(method, "/purge/avatar/lpua"),
                Some(Ok(Action::PurgeAvatar("lpua")))
            );
            assert_eq!(action_of(method, "/purge/all"), Some(Ok(Action::PurgeAll)));
        }
        assert_eq!(action_of("GET", "/purge/all"), Some(Err(())));
    }

    #[test]
    fn url_and_prefix_purges_keep_the_path() {
        assert_eq!(
            action_of("POST", "/purge/prefix/assets/"),
            Some(Ok(Action::PurgePrefix("/assets/".into())))
        );
        assert_eq!(
            action_of("PURGE", "/purge/url/assets/a.js?v=2"),
            Some(Ok(Action::PurgeUrl("/assets/a.js?v=2".into())))
        );
    }

    #[test]
    fn stats_is_a_get() {
        assert_eq!(action_of("GET", "/stats"), Some(Ok(Action::Stats)));
        assert_eq!(action_of("POST", "/stats"), Some(Err(())));
    }

    #[test]
    fn other_paths_are_not_the_apis() {
        assert_eq!(action_of("POST", "/metrics"), None);
        assert_eq!(action_of("POST", "/purge"), None);
    }

    #[test]
    fn token_is_checked_exactly() {
        let mut headers = HeaderMap::new();
        assert!(authorized(&headers, None));
        assert!(!authorized(&headers, Some("s3cret")));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert!(authorized(&headers, Some("s3cret")));
        assert!(!authorized(&headers, Some("s3cre")));
        assert!(!authorized(&headers, Some("s3cret!")));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(!authorized(&headers, Some("s3cret")));
    }
}
