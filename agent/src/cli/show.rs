//! How the CLI prints GPUs: a table coloured like gpustat (colour only on a terminal, and
//! never with `NO_COLOR` set), or JSON rows.

use std::io::IsTerminal;

use hmonitor_common::free::{human_bytes, GpuRow, State};

/// Whether to colour what goes to stdout.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

fn state_code(s: State) -> &'static str {
    match s {
        State::Free => "1;32",
        State::Held => "1;35",
        State::Busy | State::Settling => "1;33",
        State::Unsuitable => "36",
        State::Lost | State::Error => "1;31",
        State::Unavailable | State::Down => "2",
    }
}

fn held_text(row: &GpuRow, now_ms: u64) -> Option<String> {
    let h = row.held_by.as_ref()?;
    let who = if h.username.is_empty() {
        format!("uid {}", h.uid)
    } else {
        h.username.clone()
    };
    let mins = h.until_ms.saturating_sub(now_ms).div_ceil(60_000);
    Some(format!("held by {who} for {mins} min"))
}

/// `s` with control characters shown as `?`: names come from every host (process names are
/// whatever a program calls itself), and an escape sequence must not reach a terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One line per GPU: host, index, name, state, temperature and utilization, memory, users.
pub fn table(rows: &[GpuRow], colour: bool, now_ms: u64) -> String {
    let p = Paint(colour);
    let host_w = rows.iter().map(|r| r.host.len()).max().unwrap_or(4);
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).min(28);
    let mut out = String::new();
    for r in rows {
        let util = r
            .util
            .map_or_else(|| "  ? %".to_owned(), |u| format!("{u:>3} %"));
        let temp = r
            .temp
            .map_or_else(|| "  ?°C".to_owned(), |t| format!("{t:>3}°C"));
        let mem = match (r.mem_used, r.mem_total) {
            (Some(u), Some(t)) => format!("{:>9} / {:<9}", human_bytes(u), human_bytes(t)),
            _ => format!("{:>9} / {:<9}", "?", "?"),
        };
        let users: Vec<String> = r
            .procs
            .iter()
            .map(|pr| {
                let who = pr
                    .user
                    .clone()
                    .or_else(|| pr.uid.map(|u| format!("uid {u}")))
                    .unwrap_or_else(|| "?".into());
                match pr.mem {
                    Some(m) => format!("{who}({})", human_bytes(m).replace(' ', "")),
                    None => who,
                }
            })
            .collect();
        let mut name = r.name.clone();
        if name.len() > name_w {
            let mut end = name_w;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name.truncate(end);
        }
        let state = format!("{:<11}", r.state.as_str());
        let mut note = users.join(" ");
        if let Some(h) = held_text(r, now_ms) {
            note = if note.is_empty() {
                h
            } else {
                format!("{h}  {note}")
            };
        } else if note.is_empty() && !r.reason.is_empty() && !r.is_free() {
            note = r.reason.clone();
        }
        let host = printable(&r.host);
        let name = printable(&name);
        let note = printable(&note);
        out.push_str(&format!(
            "{}  [{}] {}  {}  {}  {}  {}  {}\n",
            p.wrap("1", &format!("{host:<host_w$}")),
            r.index,
            p.wrap("34", &format!("{name:<name_w$}")),
            p.wrap(state_code(r.state), &state),
            p.wrap("31", &temp),
            p.wrap("36", &util),
            p.wrap("33", &mem),
            note
        ));
    }
    out
}

/// `CUDA_VISIBLE_DEVICES=<uuid>,<uuid>` for these GPUs.
pub fn visible_devices(rows: &[GpuRow]) -> String {
    let uuids: Vec<&str> = rows.iter().map(|r| r.uuid.as_str()).collect();
    format!("CUDA_VISIBLE_DEVICES={}", uuids.join(","))
}

pub fn json(rows: &[GpuRow]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(rows).map(|s| s + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmonitor_proto::GpuHold;

    fn row(state: State) -> GpuRow {
        GpuRow {
            host: "gpu-01".into(),
            index: 3,
            uuid: "GPU-3".into(),
            name: "NVIDIA H200".into(),
            mem_total: Some(80 << 30),
            mem_used: Some(1 << 30),
            util: Some(0),
            temp: Some(31),
            state,
            reason: String::new(),
            users: Vec::new(),
            procs: Vec::new(),
            held_by: None,
            host_up: true,
        }
    }

    #[test]
    fn colour_only_when_asked_and_holds_say_who_and_how_long() {
        let mut held = row(State::Held);
        held.held_by = Some(GpuHold {
            uid: 1000,
            username: "alice".into(),
            since_ms: 0,
            until_ms: 4 * 60_000 - 1,
        });
        let plain = table(&[row(State::Free), held.clone()], false, 0);
        assert!(!plain.contains('\x1b'), "{plain}");
        assert!(plain.contains("held by alice for 4 min"), "{plain}");
        assert!(plain.contains("1.0 GiB / 80.0 GiB"), "{plain}");
        let coloured = table(&[row(State::Free)], true, 0);
        assert!(coloured.contains("\x1b[1;32mfree"), "{coloured}");
        let mut evil = row(State::Busy);
        evil.host = "h\x1b]52;c;x\x07".into();
        assert!(!table(&[evil], false, 0).contains('\x1b'));
        assert_eq!(
            visible_devices(&[row(State::Free), held]),
            "CUDA_VISIBLE_DEVICES=GPU-3,GPU-3"
        );
    }
}
