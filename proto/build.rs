//! Generates the Rust types and tonic services from `proto/gpu.proto`.
//!
//! `protox` parses the .proto in pure Rust, so the build needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["gpu.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // JSON output (`hmonitor --once --json`, the hub's HTTP API) uses the proto field names.
        .type_attribute(".gpu", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".gpu", "#[serde(default)]")
        // Enums travel as i32 in prost's structs; in JSON they are their proto names.
        .field_attribute(
            ".gpu.GPUInfo.err_kind",
            "#[serde(with = \"crate::json::error_kind\")]",
        )
        .field_attribute(
            ".gpu.HostInfo.err_kind",
            "#[serde(with = \"crate::json::error_kind\")]",
        )
        .field_attribute(
            ".gpu.ProcInfo.kind",
            "#[serde(with = \"crate::json::proc_kind\")]",
        )
        .field_attribute(
            ".gpu.HostState.status",
            "#[serde(with = \"crate::json::host_status\")]",
        )
        .field_attribute(
            ".gpu.HostStatusChange.status",
            "#[serde(with = \"crate::json::host_status\")]",
        )
        .field_attribute(
            ".gpu.HostState.source",
            "#[serde(with = \"crate::json::host_source\")]",
        )
        .compile_fds(fds)?;
    Ok(())
}
