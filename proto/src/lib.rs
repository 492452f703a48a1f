//! hmonitor's wire contract.
//!
//! Everything that crosses a process boundary (agent pull API, agent → hub frames, the hub's
//! gRPC facades) is defined in `proto/gpu.proto` and generated here. Both the agent and the hub
//! depend on this crate and on nothing of each other.

#![forbid(unsafe_code)]

/// The seed's `package gpu`, with hmonitor's additions.
pub mod gpu {
    #![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]
    include!(concat!(env!("OUT_DIR"), "/gpu.rs"));
}

pub use gpu::*;

/// Serde adapters: enums are `i32` in prost's structs, their proto names in JSON.
mod json {
    macro_rules! enum_as_name {
        ($module:ident, $ty:ty) => {
            pub mod $module {
                use serde::{Deserialize, Deserializer, Serializer};

                pub fn serialize<S: Serializer>(value: &i32, s: S) -> Result<S::Ok, S::Error> {
                    match <$ty>::try_from(*value) {
                        Ok(known) => s.serialize_str(known.as_str_name()),
                        // A newer peer may send a value this build does not know: keep the number.
                        Err(_) => s.serialize_i32(*value),
                    }
                }

                pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
                    #[derive(Deserialize)]
                    #[serde(untagged)]
                    enum NameOrNumber {
                        Name(String),
                        Number(i32),
                    }
                    match NameOrNumber::deserialize(d)? {
                        NameOrNumber::Number(n) => Ok(n),
                        NameOrNumber::Name(name) => <$ty>::from_str_name(&name)
                            .map(|v| v as i32)
                            .ok_or_else(|| {
                                serde::de::Error::custom(format!(
                                    "unknown {} value {name:?}",
                                    stringify!($ty)
                                ))
                            }),
                    }
                }
            }
        };
    }

    enum_as_name!(error_kind, crate::ErrorKind);
    enum_as_name!(proc_kind, crate::ProcKind);
    enum_as_name!(host_status, crate::HostStatus);
    enum_as_name!(host_source, crate::HostSource);
}

pub mod limits;

/// Milliseconds since the Unix epoch, the unit every timestamp in the contract uses.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn unavailable_is_distinct_from_zero_on_the_wire() {
        let fanless = GpuInfo {
            fanspeed: None,
            ..Default::default()
        };
        let stopped = GpuInfo {
            fanspeed: Some(0),
            ..Default::default()
        };
        let a = GpuInfo::decode(fanless.encode_to_vec().as_slice()).expect("decode");
        let b = GpuInfo::decode(stopped.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(a.fanspeed, None);
        assert_eq!(b.fanspeed, Some(0));
    }

    #[test]
    fn json_uses_proto_field_names_and_enum_names() {
        let gpu = GpuInfo {
            id: 3,
            mem_used: Some(5),
            err_kind: ErrorKind::Lost as i32,
            ..Default::default()
        };
        let v = serde_json::to_value(&gpu).expect("json");
        assert_eq!(v["mem_used"], 5);
        assert_eq!(v["fanspeed"], serde_json::Value::Null);
        assert_eq!(v["err_kind"], "ERROR_KIND_LOST");
        let back: GpuInfo = serde_json::from_value(v).expect("from json");
        assert_eq!(back, gpu);
    }
}
