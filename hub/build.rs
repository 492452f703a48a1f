//! Generates a gRPC client from the seed's *original* gpu.proto (kept in the agent's tests) for
//! the hub's compatibility tests: a seed client must get a series from `History.GetHistory`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../agent/tests/seed/gpu.proto");
    let fds = protox::compile(["gpu.proto"], ["../agent/tests/seed"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("seed");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}
