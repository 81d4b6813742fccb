//! What the `--bench` harnesses (`harness = false`) share: stopping with a message, sizes from
//! environment variables, and this process's memory figures from `/proc/self/status`.

/// Stops the benchmark with a message on stderr naming the benchmark, and exit status 2.
pub fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("{} bench: {msg}", bench_name());
    std::process::exit(2)
}

/// The benchmark's name: its binary's file name without cargo's hash suffix (`watch-1a2b…`).
fn bench_name() -> String {
    let exe = std::env::args().next().unwrap_or_default();
    let file = std::path::Path::new(&exe)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_string(),
        _ => file,
    }
}

/// A positive number from the environment variable `name`, `default` when it is not set; stops
/// the benchmark (naming the variable) when it is set to anything else.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| fail(format!("{name}={v:?} is not a positive number"))),
        Err(_) => default,
    }
}

/// [`env_u64`] as a `usize`.
pub fn env_usize(name: &str, default: usize) -> usize {
    usize::try_from(env_u64(name, default as u64))
        .unwrap_or_else(|_| fail(format!("{name} is too large")))
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); `None` where there is no such file
/// or field.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
