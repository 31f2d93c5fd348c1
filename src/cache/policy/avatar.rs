//! What the avatar rule stores, pure: one of Cloudreve's three avatar representations (an `image/*` 200, a
//! redirect to Gravatar, "no avatar yet"), never its JSON errors (upstream-contract.md).

use http::header::{self, HeaderMap};
use http::{StatusCode, response};

use super::NotStored;

/// Whether an answer on the avatar URL is an avatar representation at all (an image, a redirect to
/// Gravatar, or "no avatar yet"), rather than an error about the request.
pub fn describes_avatar(res: &response::Parts) -> bool {
    represents_avatar(res).is_ok()
}

pub(super) fn represents_avatar(res: &response::Parts) -> Result<(), NotStored> {
    match res.status {
        StatusCode::OK if !is_image(&res.headers) => Err(NotStored::NotImage),
        StatusCode::OK
        | StatusCode::MOVED_PERMANENTLY
        | StatusCode::FOUND
        | StatusCode::NOT_FOUND => Ok(()),
        _ => Err(NotStored::Status),
    }
}

fn is_image(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes().trim_ascii_start();
    value.len() > 6 && value[..6].eq_ignore_ascii_case(b"image/")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn json_200_is_never_stored() {
        let res = response(
            200,
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("cache-control", "public, max-age=86400"),
            ],
        );
        assert_eq!(fresh_for(&res), Err(NotStored::NotImage));
        let res = response(200, &[("cache-control", "public, max-age=86400")]);
        assert_eq!(fresh_for(&res), Err(NotStored::NotImage));
    }

    #[test]
    fn content_type_match_is_case_insensitive() {
        let res = response(
            200,
            &[
                ("content-type", "Image/PNG"),
                ("cache-control", "max-age=5"),
            ],
        );
        assert_eq!(fresh_for(&res), Ok(5));
        let res = response(
            200,
            &[("content-type", "image/"), ("cache-control", "max-age=5")],
        );
        assert_eq!(fresh_for(&res), Err(NotStored::NotImage));
    }

    #[test]
    fn redirects_are_stored() {
        for status in [301, 302] {
            let res = response(
                status,
                &[
                    ("location", "https://gravatar/x"),
                    ("cache-control", "public, max-age=86400"),
                ],
            );
            assert_eq!(fresh_for(&res), Ok(86400), "{status}");
        }
    }

    #[test]
    fn server_errors_and_other_statuses_are_not_stored() {
        for status in [500, 502, 503, 304, 206, 403, 410] {
            let res = response(
                status,
                &[
                    ("content-type", "image/png"),
                    ("cache-control", "public, max-age=86400"),
                ],
            );
            assert_eq!(fresh_for(&res), Err(NotStored::Status), "{status}");
        }
    }
}
