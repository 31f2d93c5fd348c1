//! Cloudreve's paths the proxy knows (Cloudreve `routers/router.go`): a leaf, importing nothing of the crate,
//! so the cache, the configuration and the request classification can all name them without a cycle.

/// The avatar route, `GET /api/v4/user/avatar/{id}` (Cloudreve `routers/router.go`).
pub const AVATAR_PREFIX: &str = "/api/v4/user/avatar/";

/// Cloudreve's own avatar upload: `PUT /api/v4/user/setting/avatar`, by the user the bearer token names.
pub const OWN_AVATAR_PATH: &str = "/api/v4/user/setting/avatar";

/// Cloudreve's admin user edit, `PUT /api/v4/admin/user/{numeric id}`, which can change or remove an avatar.
pub const ADMIN_USER_PREFIX: &str = "/api/v4/admin/user/";
