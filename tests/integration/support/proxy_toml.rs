//! Reading the checked-in `proxy.toml` in tests. Shared by the integration tests (`support::proxy_toml`) and
//! `src/reload.rs`'s unit tests (through `#[path]`), so both read the commented-out sections the same way.

/// `proxy.toml` with its commented-out sections (`# [cluster]` and the `# key = value` lines after it)
/// written in: their keys are documented, and need reload rows, like the others.
pub fn uncommented(text: &str) -> String {
    let section_header = |line: &str| {
        line.strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase()))
    };
    let key_line = |line: &str| {
        line.split_once(" = ")
            .is_some_and(|(key, _)| key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    };
    let mut in_section = false;
    let lines: Vec<&str> = text
        .lines()
        .map(|line| {
            if line.starts_with('[') {
                in_section = false;
            }
            match line.strip_prefix("# ") {
                Some(header) if section_header(header) => {
                    in_section = true;
                    header
                }
                Some(key) if in_section && key_line(key) => key,
                _ => line,
            }
        })
        .collect();
    lines.join("\n")
}
