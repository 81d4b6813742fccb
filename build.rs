//! Compiles proto/fluxtrace/v1/promotion.proto with protox, a protobuf compiler written in Rust,
//! so that a fresh machine builds with `cargo` alone (no system `protoc`). The generated code
//! goes to OUT_DIR and is included by `src/intake/grpc.rs`; nothing generated is checked in, so
//! nothing can drift.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/fluxtrace/v1/promotion.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
