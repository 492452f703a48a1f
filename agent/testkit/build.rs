//! A gRPC client generated from the seed's *original* gpu.proto (kept in the agent's tests),
//! for compatibility tests: a seed client must still get answers from the hub and the agent.
//! Built here, in a crate only tests depend on, so no production build compiles it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../tests/seed/gpu.proto");
    let fds = protox::compile(["gpu.proto"], ["../tests/seed"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("seed");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}
