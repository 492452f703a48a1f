//! The merge: flags and environment beat the file, which beats the defaults.

use hmonitor_common::run::systemd_state_dir;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use super::file::{bad_host_id, invalid_at, FileConfig};
use super::settings_py::read_settings_py;
use super::{Args, ConfigError, ConfigFile, HubConfig, LocalAgent, PullTarget};
use crate::state::valid_host_id;

/// Merges flags/environment (`args`), the file and the defaults; reads settings.py. Touches no
/// token file (see [`ensure_enrollment_token`]).
pub fn resolve(
    args: &Args,
    file: Option<&ConfigFile>,
    state_directory: Option<OsString>,
) -> Result<HubConfig, ConfigError> {
    let empty = FileConfig::default();
    let f = file.map_or(&empty, |c| &c.file);
    let d = HubConfig::default();
    let mut sources = Vec::new();
    if let Some(c) = file {
        sources.push(format!("config file {}", c.path.display()));
    }

    let state_dir = systemd_state_dir(state_directory);
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| file.and_then(|c| f.data_dir.as_deref().map(|p| c.relative(p))))
        .or(state_dir)
        .unwrap_or(d.data_dir);

    let flag_token = args.token.clone().filter(|t| !t.is_empty());
    let enrollment_token = flag_token
        .clone()
        .or_else(|| f.enrollment_token.as_ref().map(|t| t.0.clone()));
    if flag_token.is_some() {
        sources.push("enrollment token: --token / HMON_TOKEN".to_owned());
    } else if enrollment_token.is_some() {
        sources.push("enrollment token: config file".to_owned());
    }

    // Host ids, each with where it was configured, to refuse an id that two sources would
    // fight over.
    let host_tokens: BTreeMap<String, String> = f
        .hosts
        .iter()
        .map(|(id, e)| (id.0.clone(), e.get_ref().token.0.clone()))
        .collect();
    let mut pushed_at: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = file {
        for (id, e) in &f.hosts {
            pushed_at.insert(id.0.clone(), c.at(e.span().start));
        }
    }

    let mut expected: BTreeSet<String> = host_tokens.keys().cloned().collect();
    if let Some(c) = file {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &f.expected_hosts {
            let name = id.get_ref().as_str();
            if !valid_host_id(name) {
                return Err(invalid_at(
                    &c.path,
                    &c.text,
                    id.span().start,
                    &bad_host_id(name),
                ));
            }
            if let Some(first) = seen.insert(name, id.span().start) {
                return Err(ConfigError::Duplicate {
                    id: name.to_owned(),
                    first: c.at(first),
                    second: c.at(id.span().start),
                });
            }
            expected.insert(name.to_owned());
        }
    }

    // Pull targets: [[pull]] entries, then settings.py's.
    let mut pull_targets: Vec<PullTarget> = Vec::new();
    let mut pulled_at: BTreeMap<String, String> = BTreeMap::new();
    let mut add_pull = |target: PullTarget, at: String| -> Result<(), ConfigError> {
        if let Some(first) = pulled_at
            .get(&target.id)
            .or_else(|| pushed_at.get(&target.id))
        {
            return Err(ConfigError::Duplicate {
                id: target.id,
                first: first.clone(),
                second: at,
            });
        }
        pulled_at.insert(target.id.clone(), at);
        pull_targets.push(target);
        Ok(())
    };
    if let Some(c) = file {
        for p in &f.pull {
            let e = p.get_ref();
            add_pull(
                PullTarget {
                    id: e.id.0.clone(),
                    addr: e.addr.0.clone(),
                    token: e.token.as_ref().map(|t| t.0.clone()),
                },
                c.at(p.span().start),
            )?;
        }
    }
    let settings_py = args
        .settings_py
        .clone()
        .or_else(|| file.and_then(|c| f.settings_py.as_deref().map(|p| c.relative(p))));
    if let Some(path) = settings_py {
        let entries = read_settings_py(&path)?;
        sources.push(format!(
            "settings.py {} ({} pull target{})",
            path.display(),
            entries.len(),
            if entries.len() == 1 { "" } else { "s" }
        ));
        for e in entries {
            let at = format!("{}:{}", path.display(), e.line);
            add_pull(e.target, at)?;
        }
    }
    expected.extend(pull_targets.iter().map(|t| t.id.clone()));

    let history = crate::history::Retention {
        raw: args
            .history_raw
            .or(f.history_raw.as_ref().map(|v| v.0))
            .unwrap_or(d.history.raw),
        minute: args
            .history_1m
            .or(f.history_1m.as_ref().map(|v| v.0))
            .unwrap_or(d.history.minute),
        hour: args
            .history_1h
            .or(f.history_1h.as_ref().map(|v| v.0))
            .unwrap_or(d.history.hour),
    };
    history.check().map_err(ConfigError::History)?;

    let alerts = match file {
        Some(c) => {
            let empty = crate::alerts::config::AlertsFile::default();
            let (table, base) = f
                .alerts
                .as_ref()
                .map_or((&empty, 0), |a| (a.get_ref(), a.span().start));
            let dir = c.relative(std::path::Path::new("."));
            let cfg = crate::alerts::config::check(table, &f.users, &dir).map_err(|e| {
                // Errors of the whole table point at its start.
                let offset = if e.offset == 0 { base } else { e.offset };
                invalid_at(&c.path, &c.text, offset, &e.message)
            })?;
            if !cfg.rules.is_empty() {
                sources.push(format!(
                    "alerts: {} rule(s), {} channel(s), {} user contact(s)",
                    cfg.rules.len(),
                    cfg.channels.len(),
                    cfg.users.len()
                ));
            }
            cfg
        }
        None => crate::alerts::config::AlertsConfig::default(),
    };

    Ok(HubConfig {
        listen: args.listen.or(f.listen).unwrap_or(d.listen),
        grpc_listen: args.grpc_listen.or(f.grpc_listen),
        data_dir,
        interval: args
            .interval
            .or(f.interval.as_ref().map(|v| v.0))
            .unwrap_or(d.interval),
        enrollment_token,
        host_tokens,
        expected_hosts: expected.into_iter().collect(),
        pull_targets,
        viewer_allow: args
            .viewer_allow
            .clone()
            .or_else(|| f.viewer_allow.as_ref().map(|a| a.0.clone()))
            .unwrap_or(d.viewer_allow),
        viewer_token: args
            .viewer_token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| f.viewer_token.as_ref().map(|t| t.0.clone())),
        admin_token: args
            .admin_token
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| f.admin_token.as_ref().map(|t| t.0.clone())),
        token_files: super::TokenFiles {
            enrollment: path_of(
                args.token_file.as_ref(),
                f.enrollment_token_file.as_ref(),
                file,
            ),
            viewer: path_of(
                args.viewer_token_file.as_ref(),
                f.viewer_token_file.as_ref(),
                file,
            ),
            admin: path_of(
                args.admin_token_file.as_ref(),
                f.admin_token_file.as_ref(),
                file,
            ),
            credentials: args
                .credentials_directory
                .clone()
                .filter(|p| !p.as_os_str().is_empty()),
        },
        allowed_origins: args.allowed_origins.clone().unwrap_or_else(|| {
            f.allowed_origins
                .iter()
                .flatten()
                .map(|o| o.0.clone())
                .collect()
        }),
        allowed_hosts: args.allowed_hosts.clone().unwrap_or_else(|| {
            f.allowed_hosts
                .iter()
                .flatten()
                .map(|h| h.0.clone())
                .collect()
        }),
        max_hosts: args
            .max_hosts
            .or(f.max_hosts)
            .map_or(d.max_hosts, std::num::NonZeroUsize::get),
        max_frame_bytes: args
            .max_frame_bytes
            .or(f.max_frame_bytes.as_ref().map(|b| b.0))
            .unwrap_or(d.max_frame_bytes),
        http_head_timeout: args
            .http_head_timeout
            .or(f.http_head_timeout.as_ref().map(|v| v.0))
            .unwrap_or(d.http_head_timeout),
        http_idle_timeout: args
            .http_idle_timeout
            .or(f.http_idle_timeout.as_ref().map(|v| v.0))
            .unwrap_or(d.http_idle_timeout),
        max_clock_skew: args
            .max_clock_skew
            .or(f.max_clock_skew.as_ref().map(|v| v.0))
            .unwrap_or(d.max_clock_skew),
        free_settle: args
            .free_settle
            .or(f.free_settle.as_ref().map(|v| v.0))
            .unwrap_or(d.free_settle),
        browser_write_timeout: f
            .browser_write_timeout
            .as_ref()
            .map_or(d.browser_write_timeout, |v| v.0),
        local_agent: local_agent(args, file),
        limits: crate::limits::Limits::resolve(
            &args.deploy,
            f.max_conns_per_addr,
            f.max_agent_frames_per_sec.map(std::num::NonZeroU32::get),
        ),
        pull_ca: args.deploy.pull_ca.clone(),
        tls: crate::tls::TlsFiles::resolve(
            &args.deploy,
            f.tls_cert
                .as_deref()
                .and_then(|p| file.map(|c| c.relative(p))),
            f.tls_key
                .as_deref()
                .and_then(|p| file.map(|c| c.relative(p))),
        )?,
        history,
        sources,
        alerts,
    })
}

/// A token file: the flag's (or environment's) path, else the file's (relative to the file).
/// An empty value means unset.
fn path_of(
    flag: Option<&std::path::PathBuf>,
    in_file: Option<&std::path::PathBuf>,
    file: Option<&ConfigFile>,
) -> Option<std::path::PathBuf> {
    flag.filter(|p| !p.as_os_str().is_empty())
        .cloned()
        .or_else(|| file.and_then(|c| in_file.map(|p| c.relative(p))))
}

/// `--local-agent*` beat `[local_agent]`; a path in the file is relative to the file. Empty
/// flag values (an environment file's `HMON_LOCAL_AGENT_ID=`) mean unset.
fn local_agent(args: &Args, file: Option<&ConfigFile>) -> LocalAgent {
    let t = file.and_then(|c| c.file.local_agent.as_ref().map(|v| (c, &v.0)));
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    LocalAgent {
        enabled: args
            .local_agent
            .or(t.and_then(|(_, t)| t.enabled))
            .unwrap_or(false),
        id: nonempty(&args.local_agent_id)
            .or_else(|| t.and_then(|(_, t)| t.id.clone().map(|i| i.0))),
        ip: nonempty(&args.local_agent_ip).or_else(|| t.and_then(|(_, t)| t.ip.clone())),
        nvml_lib: args
            .local_agent_nvml_lib
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| t.and_then(|(c, t)| t.nvml_lib.as_deref().map(|p| c.relative(p)))),
        cmdline: args
            .local_agent_cmdline
            .or(t.and_then(|(_, t)| t.cmdline))
            .unwrap_or(false),
    }
}
