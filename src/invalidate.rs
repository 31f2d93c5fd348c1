//! Reading the traffic that changes an avatar: who changed, and whether Cloudreve confirmed it. Pure.
//!
//! Cloudreve never invalidates anything (users wait a day, its issues #1581, #1729, #3138); the proxy sees
//! the changes pass through and drops the stored copy as soon as Cloudreve answers that one succeeded:
//! HTTP 200 with JSON `"code": 0` (`upstream-contract.md`, "How an avatar changes").

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use serde::Deserialize;

use crate::cache::policy::AvatarKey;

/// Largest JSON answer read on an avatar-changing route; Cloudreve's are tens of bytes (own avatar) to a few
/// KiB (admin user edit). A larger answer is passed on unread and invalidates nothing.
pub const MAX_CONFIRMATION_SIZE: usize = 64 * 1024;

/// The user a JWT access token names: its `sub` claim, which Cloudreve sets to the user's hashid, the same id
/// as in the avatar URL. The signature is not checked here: the caller acts only after Cloudreve, which holds
/// the key, accepted the request (`code: 0`).
///
/// Returns `None` for anything that is not `Bearer <header>.<payload>.<signature>` with a JSON object payload
/// whose `sub` is a string in the avatar-key alphabet (node signatures `Bearer Cr ...` included), and for a
/// payload with `sub` twice (Cloudreve never issues one; Go would take the last, so nothing is purged rather
/// than guess).
pub fn jwt_subject(authorization: &HeaderValue) -> Option<String> {
    let token = authorization.to_str().ok()?.strip_prefix("Bearer ")?.trim();
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_CONFIRMATION_SIZE {
        return None;
    }
    // Base64url without padding (RFC 7515 §2); tolerate padding some encoders add.
    let json = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    // The claims set is a JSON object (RFC 7519 §7.2); serde would also read the struct from an array.
    if json.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    #[derive(Deserialize)]
    struct Claims {
        sub: String,
    }
    let claims: Claims = serde_json::from_slice(&json).ok()?;
    AvatarKey::from_path_segment(&claims.sub).map(|key| key.as_str().to_owned())
}

/// Cloudreve's answer envelope, as far as invalidation needs it.
#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    data: Option<AdminUser>,
}

#[derive(Deserialize)]
struct AdminUser {
    hash_id: Option<String>,
}

/// Whether a JSON answer is Cloudreve's success (`"code": 0`).
pub fn confirmed(body: &[u8]) -> bool {
    serde_json::from_slice::<Envelope>(body).is_ok_and(|envelope| envelope.code == 0)
}

/// The user an admin edit (`PUT /api/v4/admin/user/{n}`) changed: `data.hash_id` of a successful answer.
pub fn admin_subject(body: &[u8]) -> Option<String> {
    let envelope = serde_json::from_slice::<Envelope>(body).ok()?;
    if envelope.code != 0 {
        return None;
    }
    let hash_id = envelope.data?.hash_id?;
    AvatarKey::from_path_segment(&hash_id).map(|key| key.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(payload: &str) -> HeaderValue {
        let payload = URL_SAFE_NO_PAD.encode(payload);
        HeaderValue::try_from(format!(
            "Bearer eyJhbGciOiJIUzI1NiJ9.{payload}.c2lnbmF0dXJl"
        ))
        .unwrap()
    }

    #[test]
    fn subject_of_cloudreve_access_token() {
        // The sample token of Cloudreve's docs decodes to this payload.
        let token =
            bearer(r#"{"token_type":"access","sub":"lpua","exp":1745655578,"nbf":1745651978}"#);
        assert_eq!(jwt_subject(&token).as_deref(), Some("lpua"));
    }

    #[test]
    fn subject_must_be_a_hashid() {
        for payload in [
            r#"{"sub":"../x"}"#,
            r#"{"sub":""}"#,
            r#"{"sub":5}"#,
            r#"{"nosub":"lpua"}"#,
            r#"["lpua"]"#,
            r#" ["lpua"]"#,
            "not json",
        ] {
            assert_eq!(jwt_subject(&bearer(payload)), None, "{payload}");
        }
    }

    #[test]
    fn non_jwt_authorization_has_no_subject() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer Cr abc:123",
            "Bearer a.b",
            "Bearer a.b.c.d",
            "bearer x.eyJzdWIiOiJscHVhIn0.s",
        ] {
            assert_eq!(
                jwt_subject(&HeaderValue::from_static(value)),
                None,
                "{value}"
            );
        }
    }

    #[test]
    fn padded_payload_is_accepted() {
        let payload = base64::engine::general_purpose::URL_SAFE.encode(r#"{"sub":"lUpa"}"#);
        let value = HeaderValue::try_from(format!("Bearer h.{payload}.s")).unwrap();
        assert_eq!(jwt_subject(&value).as_deref(), Some("lUpa"));
    }

    #[test]
    fn only_code_zero_confirms() {
        assert!(confirmed(br#"{"code":0,"msg":""}"#));
        assert!(!confirmed(br#"{"code":40049,"msg":"File too large"}"#));
        assert!(!confirmed(b"<html>"));
        assert!(!confirmed(br#"{"msg":"no code"}"#));
    }

    #[test]
    fn admin_edit_names_the_user_by_hash_id() {
        let ok = br#"{"code":0,"data":{"id":3,"hash_id":"O2UR","nick":"x","edges":{}},"msg":""}"#;
        assert_eq!(admin_subject(ok).as_deref(), Some("O2UR"));
        assert_eq!(
            admin_subject(br#"{"code":40001,"data":{"hash_id":"O2UR"},"msg":""}"#),
            None
        );
        assert_eq!(admin_subject(br#"{"code":0,"msg":""}"#), None);
        assert_eq!(
            admin_subject(br#"{"code":0,"data":{"hash_id":"a/b"}}"#),
            None
        );
    }
}
