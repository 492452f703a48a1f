//! Gives the cdylib the soname of the real NVML library, so that a symlink
//! `libnvidia-ml.so.1 -> libnvidia_ml.so` is found by the dynamic loader
//! (pynvml, nvml-wrapper) like the real driver library.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnvidia-ml.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
