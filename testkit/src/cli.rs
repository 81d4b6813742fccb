//! The fluxtrace binary as a command-line client of a running agent (`promote`, `explain`,
//! `status`): run with exactly the environment a test gives, bounded in time, its output shown
//! when the test fails. Also `fluxtrace replay --serve`, kept up for a test to read, and the
//! one HTTP GET such tests make.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long one run may take.
pub const BOUND: Duration = Duration::from_secs(60);

/// Runs `binary` (the test's `env!("CARGO_BIN_EXE_fluxtrace")`) with `args` and exactly `env`
/// (nothing inherited: the tests may themselves run in CI).
pub async fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary);
    cmd.args(args).env_clear().env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(
        BOUND,
        tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs")),
    )
    .await
    .expect("the binary finishes")
    .expect("joined");
    eprintln!(
        "fluxtrace {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A child process that is killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary replay --serve 127.0.0.1:0 <files>`; the process and its address once it
/// serves. Its log is read to the end (shown with the test's output), so it never writes into
/// a closed pipe.
pub fn serve_replay(binary: &str, files: &[PathBuf]) -> (Running, String) {
    let mut child = Command::new(binary)
        .arg("replay")
        .args(files)
        .args(["--serve", "127.0.0.1:0"])
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let stderr = child.stderr.take().expect("stderr");
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("replay: {line}");
            if let Some(rest) = line.split_once(" on http://").map(|(_, r)| r) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(BOUND)
        .expect("replay --serve says where it serves");
    (running, addr)
}

/// One HTTP/1.0 GET on loopback: (head, body).
pub fn get(addr: &str, path_and_query: &str, accept: Option<&str>) -> Option<(String, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}
