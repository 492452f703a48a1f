//! Two jobs:
//! - Rebuild the hub when the live page's build output changes. rust-embed tracks the files it
//!   embeds, but not files added under the folder, and Vite names every build's assets anew.
//! - Generate a gRPC client from the seed's *original* gpu.proto (kept in the agent's tests) for
//!   the hub's compatibility tests: a seed client must get a series from `History.GetHistory`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dist = std::path::Path::new("../frontend/dist");
    if dist.exists() {
        println!("cargo:rerun-if-changed=../frontend/dist");
    } else {
        // Not built yet: notice when it appears (the directory's entries change).
        println!("cargo:rerun-if-changed=../frontend");
    }

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
