//! The one table of what history keeps: each kind of series, the metrics it has, the column
//! each is stored in, the scale between stored and served values, and the unit. The store,
//! the query, the JSON API and the page (through `/api/history/metrics`) all take names,
//! columns and units from here; nothing refers to a metric by its position in a list.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

/// What a series is of: the `kind` column of the `series` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    Host,
    Gpu,
    /// One user on one host.
    User,
    /// The whole cluster (minute and hour tiers only).
    Cluster,
}

impl SeriesKind {
    pub const ALL: [Self; 4] = [Self::Host, Self::Gpu, Self::User, Self::Cluster];

    /// The number stored for it (the store's format: never renumber).
    pub const fn code(self) -> i64 {
        match self {
            Self::Host => 0,
            Self::Gpu => 1,
            Self::User => 2,
            Self::Cluster => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Whether the raw tier keeps its samples (users and the cluster start at minutes).
    pub fn has_raw(self) -> bool {
        matches!(self, Self::Host | Self::Gpu)
    }

    /// The metrics a series of this kind serves, in the order the page shows them.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Self::Host => HOST,
            Self::Gpu => GPU,
            Self::User => USER,
            Self::Cluster => CLUSTER,
        }
    }

    /// The metric `name` of this kind; the error lists what there is.
    pub fn metric(self, name: &str) -> Result<&'static Metric, String> {
        let list = self.metrics();
        list.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = list.iter().map(|m| m.name).collect();
            if name.is_empty() {
                format!("metric is missing; this id has: {}", names.join(", "))
            } else {
                format!(
                    "unknown metric {name:?} for this id; it has: {}",
                    names.join(", ")
                )
            }
        })
    }
}

impl ToSql for SeriesKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.code()))
    }
}

impl FromSql for SeriesKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let code = i64::column_result(value)?;
        Self::from_code(code).ok_or(FromSqlError::OutOfRange(code))
    }
}

/// What a served value is measured in; the page formats each its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    #[serde(rename = "pct")]
    Percent,
    #[serde(rename = "bytes")]
    Bytes,
    /// A plain number (a load, a count of GPUs).
    #[serde(rename = "num")]
    Number,
    #[serde(rename = "c")]
    Celsius,
    #[serde(rename = "w")]
    Watts,
}

/// One metric of one kind of series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metric {
    /// As the API and `GetHistory` name it.
    pub name: &'static str,
    /// Shown on the page.
    pub label: &'static str,
    pub unit: Unit,
    /// The value column it is stored in (`v0..v4`, `a0..a4`, `x0..x4`).
    #[serde(skip)]
    pub column: usize,
    /// Stored ÷ scale = served: cpu and load are kept in hundredths, power in milliwatts, so
    /// whole numbers are stored (0–6 byte integers).
    #[serde(skip)]
    pub scale: f64,
}

const fn m(
    name: &'static str,
    label: &'static str,
    unit: Unit,
    column: usize,
    scale: f64,
) -> Metric {
    Metric {
        name,
        label,
        unit,
        column,
        scale,
    }
}

const HOST: &[Metric] = &[
    m("cpu", "CPU %", Unit::Percent, 0, 100.0),
    m("mem_used", "memory in use", Unit::Bytes, 1, 1.0),
    m("load1", "load (1 min)", Unit::Number, 2, 100.0),
    m("disk_used", "disk used", Unit::Bytes, 3, 1.0),
];
const GPU: &[Metric] = &[
    m("util", "utilization %", Unit::Percent, 0, 1.0),
    m("mem_used", "memory in use", Unit::Bytes, 1, 1.0),
    m("temp", "temperature °C", Unit::Celsius, 2, 1.0),
    m("power", "power W", Unit::Watts, 3, 1000.0),
];
const USER: &[Metric] = &[
    m("gpu_mem", "GPU memory in use", Unit::Bytes, 0, 1.0),
    m("gpus", "GPUs in use", Unit::Number, 1, 1.0),
];
const CLUSTER: &[Metric] = &[
    m("util", "mean GPU utilization %", Unit::Percent, 0, 1.0),
    m("gpus_busy", "GPUs busy", Unit::Number, 1, 1.0),
    m("mem_used", "GPU memory in use", Unit::Bytes, 2, 1.0),
];

/// Columns with no metric of their own: a GPU's held flag (rolled up into the cluster's busy
/// count) and a user's sample length (the weight of its time-weighted means).
pub const GPU_HELD_COLUMN: usize = 4;
pub const USER_DURATION_COLUMN: usize = 2;

/// Every kind with its metrics, for `/api/history/metrics`.
pub fn all() -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = SeriesKind::ALL
        .into_iter()
        .map(|k| {
            let name = serde_json::to_value(k)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (name, serde_json::json!(k.metrics()))
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_distinct_within_a_kind_and_clear_of_the_internal_ones() {
        for k in SeriesKind::ALL {
            let mut cols: Vec<usize> = k.metrics().iter().map(|m| m.column).collect();
            cols.sort_unstable();
            cols.dedup();
            assert_eq!(cols.len(), k.metrics().len(), "{k:?}");
            assert!(cols.iter().all(|c| *c < 5), "{k:?}");
        }
        assert!(GPU.iter().all(|m| m.column != GPU_HELD_COLUMN));
        assert!(USER.iter().all(|m| m.column != USER_DURATION_COLUMN));
    }

    #[test]
    fn kinds_round_trip_through_their_codes_and_sql() {
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        for k in SeriesKind::ALL {
            assert_eq!(SeriesKind::from_code(k.code()), Some(k));
            let back: SeriesKind = conn
                .query_row("SELECT ?1", [k], |r| r.get(0))
                .expect("round trip");
            assert_eq!(back, k);
        }
        let bad: rusqlite::Result<SeriesKind> = conn.query_row("SELECT 9", [], |r| r.get(0));
        assert!(bad.is_err());
    }

    #[test]
    fn a_record_fills_the_columns_the_catalog_names() {
        let info = hmonitor_proto::HostInfo {
            cpu_util: Some(12.5),
            mem_used: Some(7),
            load: Some(hmonitor_proto::LoadAvg {
                one: 1.25,
                ..Default::default()
            }),
            gpus: vec![hmonitor_proto::GpuInfo {
                utilization: Some(40),
                temp: Some(55),
                power_draw_mw: Some(250_000),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = super::super::Record::from_info("h", 1, std::time::Duration::from_secs(1), &info);
        let host = |name| {
            let m = SeriesKind::Host.metric(name).expect("metric");
            r.host_vals[m.column].map(|v| v / m.scale)
        };
        assert_eq!(host("cpu"), Some(12.5));
        assert_eq!(host("mem_used"), Some(7.0));
        assert_eq!(host("load1"), Some(1.25));
        let gpu = |name| {
            let m = SeriesKind::Gpu.metric(name).expect("metric");
            r.gpus[0].vals[m.column].map(|v| v / m.scale)
        };
        assert_eq!(gpu("util"), Some(40.0));
        assert_eq!(gpu("temp"), Some(55.0));
        assert_eq!(gpu("power"), Some(250.0));
    }

    #[test]
    fn a_bad_metric_names_the_ones_there_are() {
        let e = SeriesKind::Gpu.metric("watts").expect_err("unknown");
        assert!(e.contains("util, mem_used, temp, power"), "{e}");
        assert_eq!(SeriesKind::Host.metric("cpu").map(|m| m.scale), Ok(100.0));
        let all = all();
        assert_eq!(all["gpu"][3]["name"], "power");
        assert_eq!(all["gpu"][3]["unit"], "w");
        assert!(all["gpu"][3].get("column").is_none());
    }
}
