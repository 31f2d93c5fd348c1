//! The checked-in `proxy.toml` is valid and shows exactly the built-in defaults, and README.md's configuration
//! reference lists exactly its keys.

use crate::support::proxy_toml::uncommented;
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

#[test]
fn readme_reference_lists_exactly_the_keys_of_proxy_toml() {
    let root = env!("CARGO_MANIFEST_DIR");
    let file: toml::Table =
        uncommented(&std::fs::read_to_string(format!("{root}/proxy.toml")).unwrap())
            .parse()
            .unwrap();
    let mut in_file: Vec<String> = Vec::new();
    for (section, keys) in &file {
        let keys = keys.as_table().expect("every top-level key is a section");
        for (key, value) in keys {
            in_file.push(format!("{section}.{key}"));
            // An array of tables (`[[cache.rules]]`): its keys are documented as `cache.rules[].key`.
            for table in value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_table())
            {
                in_file.extend(table.keys().map(|k| format!("{section}.{key}[].{k}")));
            }
        }
    }
    in_file.sort();
    in_file.dedup();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let reference = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a configuration reference section");
    let mut in_readme: Vec<String> = reference
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|cell| cell.split_once('`').map(|(key, _)| key.to_owned()))
        .collect();
    in_file.sort();
    in_readme.sort();
    assert_eq!(in_readme, in_file);
}

#[test]
fn the_commented_cluster_section_shows_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml")).unwrap();
    let clustered = Config::from_toml(&uncommented(&text)).expect("the [cluster] section is valid");
    let defaults =
        Config::from_toml("[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n").unwrap();
    assert_eq!(clustered.cluster, defaults.cluster);
    assert!(clustered.cluster.is_some());
}
