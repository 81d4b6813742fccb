//! The bundled recordings (examples/recordings/*.jsonl), by name.

use fluxtrace::replay::EXAMPLES;
use jiff::SignedDuration;

/// The text of the bundled recording `name` (`oci-success.jsonl`); fails the test when there is
/// no such recording.
pub fn example(name: &str) -> &'static str {
    EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no bundled recording {name}"))
}

/// `unreported-git-success.jsonl` without anything about its Deployment after the initial
/// state: a commit nobody reported that Flux applied and that rolled out no workload (its
/// verdict is `no_change`).
pub fn unreported_without_rollout() -> String {
    let keep = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 20, 21, 22];
    let lines: Vec<&str> = example("unreported-git-success.jsonl").lines().collect();
    keep.iter()
        .map(|&i| lines[i - 1])
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Every line of every bundled recording.
pub fn all_lines() -> Vec<&'static str> {
    EXAMPLES.iter().flat_map(|(_, t)| t.lines()).collect()
}

/// Moves every `YYYY-MM-DD?HH:MM:SS` (RFC 3339 `T`, or Go's `time.Time` string with a space,
/// as in `reconcile.fluxcd.io/requestedAt`) by `by`; all recording times are UTC.
pub fn shift(text: &str, by: SignedDuration) -> String {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let is_stamp = |i: usize| {
        [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&o| digit(i + o))
            && b[i + 4] == b'-'
            && b[i + 7] == b'-'
            && matches!(b[i + 10], b'T' | b' ')
            && b[i + 13] == b':'
            && b[i + 16] == b':'
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if i + 19 <= b.len() && is_stamp(i) {
            let sep = b[i + 10] as char;
            let civil: jiff::civil::DateTime = text[i..i + 19]
                .replacen(' ', "T", 1)
                .parse()
                .expect("a civil time");
            let moved = civil.checked_add(by).expect("in range");
            out.push_str(
                &moved
                    .strftime(&format!("%Y-%m-%d{sep}%H:%M:%S"))
                    .to_string(),
            );
            i += 19;
        } else {
            let c = text[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}
