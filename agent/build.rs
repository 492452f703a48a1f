//! Generates a gRPC client from the seed's *original* gpu.proto (tests/seed/gpu.proto) for the
//! compatibility tests: old clients must keep decoding what the agent answers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tests/seed/gpu.proto");
    let fds = protox::compile(["gpu.proto"], ["tests/seed"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("seed");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}
