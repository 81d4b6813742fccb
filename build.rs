//! Compiles proto/fluxtrace/v1/promotion.proto and workload.proto with protox, a protobuf
//! compiler written in Rust, so that a fresh machine builds with `cargo` alone (no system
//! `protoc`). The generated code goes to OUT_DIR and is included by `src/intake/grpc.rs`; nothing generated is checked in, so
//! nothing can drift.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = [
        "proto/fluxtrace/v1/promotion.proto",
        "proto/fluxtrace/v1/workload.proto",
    ];
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
