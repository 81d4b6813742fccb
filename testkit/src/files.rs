//! The project's files, for tests that check what ships (deploy/, collector-config/).

use std::path::{Path, PathBuf};

/// Every file below `dir`, depth first, in name order; fails the test on a read error.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out);
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A loopback address with a port nothing listens on now, for a child process to bind.
pub fn free_loopback_addr() -> std::net::SocketAddr {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    ([127, 0, 0, 1], port).into()
}
