//! Rebuilds the hub when the live page's build output changes. rust-embed tracks the files it
//! embeds, but not files added under the folder, and Vite names every build's assets anew.

fn main() {
    let dist = std::path::Path::new("../frontend/dist");
    if dist.exists() {
        println!("cargo:rerun-if-changed=../frontend/dist");
    } else {
        // Not built yet: notice when it appears (the directory's entries change).
        println!("cargo:rerun-if-changed=../frontend");
    }
}
