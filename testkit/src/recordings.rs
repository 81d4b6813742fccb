//! The bundled recordings (examples/recordings/*.jsonl), by name.

use fluxtrace::replay::EXAMPLES;

/// The text of the bundled recording `name` (`oci-success.jsonl`); fails the test when there is
/// no such recording.
pub fn example(name: &str) -> &'static str {
    EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no bundled recording {name}"))
}

/// Every line of every bundled recording.
pub fn all_lines() -> Vec<&'static str> {
    EXAMPLES.iter().flat_map(|(_, t)| t.lines()).collect()
}
