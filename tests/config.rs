//! The checked-in `proxy.toml` is valid and shows exactly the built-in defaults.

use cloudreve_edge::Config;

#[test]
fn checked_in_proxy_toml_parses() {
    Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"))
        .expect("proxy.toml must be valid");
}

#[test]
fn checked_in_proxy_toml_shows_the_defaults() {
    let file = Config::load(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
    // Debug output covers every field, so a default that drifts from the file fails here.
    assert_eq!(format!("{file:?}"), format!("{:?}", Config::default()));
}
