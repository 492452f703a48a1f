//! The configuration as a whole: flags, environment, file and settings.py merged, and the
//! token store it falls back on.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::enrollment::TOKEN_FILE;

fn file(text: &str) -> ConfigFile {
    ConfigFile::parse(Path::new("/etc/hmonitor/hub.toml"), text.to_owned()).expect("parses")
}

fn file_err(text: &str) -> (usize, String) {
    match ConfigFile::parse(Path::new("hub.toml"), text.to_owned()) {
        Err(ConfigError::Invalid { line, message, .. }) => (line, message),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// Flags as given, with the environment ignored: a developer's `HMON_TOKEN` or a CI runner's
/// `HMON_LOG` must not change what a test sees.
fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
    let cmd = Args::command().mut_args(|a| a.env(None::<&str>));
    cmd.try_get_matches_from(argv)
        .and_then(|m| Args::from_arg_matches(&m))
}

fn args(argv: &[&str]) -> Args {
    let mut full = vec!["hmonitor-hub"];
    full.extend_from_slice(argv);
    parse(&full).expect("flags parse")
}

const FULL: &str = r#"
listen = "127.0.0.1:5001"
grpc_listen = "127.0.0.1:5002"
data_dir = "state"
interval = "500ms"
enrollment_token = "enroll-1"
viewer_allow = ["10.0.0.0/8", "192.168.1.7"]
viewer_token = "view-1"
max_frame_bytes = "2MiB"
browser_write_timeout = "7s"
local_agent = true
history_raw = "2h"
history_1m = "10days"
history_1h = "400days"
expected_hosts = ["gpu1", "gpu2"]
settings_py = "settings.py"

[hosts.gpu1]
token = "tok-gpu1"

[hosts."gpu3.lab"]
token = "tok-gpu3"

[[pull]]
id = "node7"
addr = "10.0.0.7:9203"
token = "pull-7"

[[pull]]
id = "node8"
addr = "[::1]:9203"
"#;

#[test]
fn history_retention_comes_from_flags_or_file_and_bad_spans_are_refused() {
    let d = resolve(&Args::default(), None, None).expect("defaults");
    assert_eq!(d.history, crate::history::Retention::default());
    let a = args(&["--history-raw", "6h", "--history-1m", "7days"]);
    let cfg = resolve(&a, Some(&file("history_raw = \"1h\"\n")), None).expect("ok");
    assert_eq!(cfg.history.raw, Duration::from_secs(6 * 3600));
    assert_eq!(cfg.history.minute, Duration::from_secs(7 * 86400));
    let e = resolve(&args(&["--history-raw", "1m"]), None, None)
        .expect_err("too short")
        .to_string();
    assert!(e.contains("history_raw") && e.contains("5m"), "{e}");
    let e = resolve(
        &args(&["--history-1h", "3days", "--history-1m", "5days"]),
        None,
        None,
    )
    .expect_err("coarser shorter")
    .to_string();
    assert!(e.contains("history_1h"), "{e}");
    let (line, msg) = file_err("history_raw = \"soon\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("soon"), "{msg}");
}

#[test]
fn every_toml_key_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("settings.py"),
        "servers = {'seed1': '127.0.0.1:9203'}\n",
    )
    .expect("write");
    let path = dir.path().join("hub.toml");
    let c = ConfigFile::parse(&path, FULL.to_owned()).expect("parses");
    let cfg = resolve(&Args::default(), Some(&c), None).expect("resolves");
    assert_eq!(cfg.listen, "127.0.0.1:5001".parse().expect("addr"));
    assert_eq!(
        cfg.grpc_listen,
        Some("127.0.0.1:5002".parse().expect("addr"))
    );
    // Relative paths in the file are relative to the file.
    assert_eq!(cfg.data_dir, dir.path().join("state"));
    assert_eq!(cfg.interval, Duration::from_millis(500));
    assert_eq!(cfg.enrollment_token.as_deref(), Some("enroll-1"));
    assert_eq!(cfg.viewer_allow.to_string(), "10.0.0.0/8,192.168.1.7/32");
    assert_eq!(cfg.viewer_token.as_deref(), Some("view-1"));
    assert_eq!(cfg.max_frame_bytes, 2 * 1024 * 1024);
    assert_eq!(cfg.browser_write_timeout, Duration::from_secs(7));
    assert!(cfg.local_agent.enabled);
    assert_eq!(
        cfg.history,
        crate::history::Retention {
            raw: Duration::from_secs(2 * 3600),
            minute: Duration::from_secs(10 * 86400),
            hour: Duration::from_secs(400 * 86400),
        }
    );
    assert_eq!(
        cfg.host_tokens.get("gpu1").map(String::as_str),
        Some("tok-gpu1")
    );
    assert_eq!(
        cfg.host_tokens.get("gpu3.lab").map(String::as_str),
        Some("tok-gpu3")
    );
    assert_eq!(
        cfg.pull_targets,
        vec![
            PullTarget {
                id: "node7".into(),
                addr: "10.0.0.7:9203".into(),
                token: Some("pull-7".into())
            },
            PullTarget {
                id: "node8".into(),
                addr: "[::1]:9203".into(),
                token: None
            },
            PullTarget {
                id: "seed1".into(),
                addr: "127.0.0.1:9203".into(),
                token: None
            },
        ]
    );
    // Every host in [hosts] and every pull target is expected, each once.
    assert_eq!(
        cfg.expected_hosts,
        ["gpu1", "gpu2", "gpu3.lab", "node7", "node8", "seed1"]
    );
}

#[test]
fn flags_beat_the_file_which_beats_the_defaults() {
    let c = file(
        "listen = \"127.0.0.1:6000\"\ninterval = 3\nlocal_agent = true\nmax_frame_bytes = 4096\n",
    );
    let flagged = args(&[
        "--listen",
        "127.0.0.1:7000",
        "--interval",
        "1s",
        "--local-agent",
        "false",
        "--max-frame-bytes",
        "8KiB",
    ]);
    let cfg = resolve(&flagged, Some(&c), None).expect("resolves");
    assert_eq!(cfg.listen.port(), 7000);
    assert_eq!(cfg.interval, Duration::from_secs(1));
    assert!(!cfg.local_agent.enabled);
    assert_eq!(cfg.max_frame_bytes, 8192);

    let cfg = resolve(&Args::default(), Some(&c), None).expect("resolves");
    assert_eq!(cfg.listen.port(), 6000);
    assert_eq!(cfg.interval, Duration::from_secs(3));
    assert!(cfg.local_agent.enabled);
    assert_eq!(cfg.max_frame_bytes, 4096);

    let cfg = resolve(&Args::default(), None, None).expect("resolves");
    let d = HubConfig::default();
    assert_eq!(cfg.listen, d.listen);
    assert_eq!(cfg.interval, Duration::from_secs(2));
    assert_eq!(cfg.max_frame_bytes, DEFAULT_MAX_FRAME);
    assert_eq!(cfg.viewer_allow, Allowlist::everyone());
    assert_eq!(cfg.grpc_listen, None);
    assert_eq!(cfg.data_dir, PathBuf::from("data"));
    assert!(!cfg.local_agent.enabled);
}

#[test]
fn an_empty_token_flag_means_unset() {
    let a = args(&["--token", "", "--viewer-token", ""]);
    let c = file("enrollment_token = \"from-file\"\n");
    let cfg = resolve(&a, Some(&c), None).expect("resolves");
    assert_eq!(cfg.enrollment_token.as_deref(), Some("from-file"));
    assert_eq!(cfg.viewer_token, None);
    assert!(parse(&["hmonitor-hub", "--token", "a b"]).is_err());
}

#[test]
fn a_bare_flag_turns_the_local_agent_on() {
    assert_eq!(args(&["--local-agent"]).local_agent, Some(true));
    assert_eq!(args(&["--local-agent", "0"]).local_agent, Some(false));
}

#[test]
fn data_dir_is_flag_then_file_then_state_directory_then_data() {
    let state = Some(OsString::from("/var/lib/hmonitor-hub:/var/lib/other"));
    let c = file("data_dir = \"/srv/hub\"\n");
    let flagged = args(&["--data-dir", "/tmp/x"]);
    assert_eq!(
        resolve(&flagged, Some(&c), state.clone())
            .expect("ok")
            .data_dir,
        PathBuf::from("/tmp/x")
    );
    assert_eq!(
        resolve(&Args::default(), Some(&c), state.clone())
            .expect("ok")
            .data_dir,
        PathBuf::from("/srv/hub")
    );
    assert_eq!(
        resolve(&Args::default(), None, state).expect("ok").data_dir,
        PathBuf::from("/var/lib/hmonitor-hub")
    );
}

#[test]
fn help_names_every_environment_variable() {
    let help = Args::command().render_long_help().to_string();
    for var in [
        "HMON_HUB_CONFIG",
        "HMON_HUB_LISTEN",
        "HMON_HUB_GRPC_LISTEN",
        "HMON_DATA_DIR",
        "HMON_INTERVAL",
        "HMON_TOKEN",
        "HMON_VIEWER_ALLOW",
        "HMON_VIEWER_TOKEN",
        "HMON_MAX_FRAME_BYTES",
        "HMON_LOCAL_AGENT",
        "HMON_SETTINGS_PY",
        "HMON_LOG",
        "HMON_HISTORY_RAW",
        "HMON_HISTORY_1M",
        "HMON_HISTORY_1H",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
    Args::command().debug_assert();
}

#[test]
fn an_unknown_key_is_refused_with_its_line() {
    let (line, msg) = file_err("listen = \"0.0.0.0:5000\"\n\n# typo below\nintervall = \"2s\"\n");
    assert_eq!(line, 4);
    assert!(msg.contains("intervall"), "{msg}");
    let (line, msg) = file_err("[[pull]]\nid = \"a\"\naddr = \"h:1\"\nport = 3\n");
    assert_eq!(line, 4, "{msg}");
    assert!(msg.contains("port"), "{msg}");
    // The whole error reads file:line:column: reason.
    let err = ConfigFile::parse(Path::new("hub.toml"), "x = 1\n".into())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.starts_with("hub.toml:1:1: unknown field"), "{err}");
}

#[test]
fn bad_values_are_refused_with_their_line_and_the_value() {
    let (line, msg) =
        file_err("listen = \"0.0.0.0:5000\"\nviewer_allow = [\"10.0.0.0/8\", \"10.0.0/33\"]\n");
    assert_eq!(line, 2);
    assert!(msg.contains("10.0.0/33"), "{msg}");
    let (line, msg) = file_err("\nviewer_allow = \"bogus\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("bogus"), "{msg}");
    let (line, msg) = file_err("\n\nmax_frame_bytes = 100\n");
    assert_eq!(line, 3);
    assert!(msg.contains("1 KiB to 64 MiB"), "{msg}");
    let (line, msg) = file_err("max_frame_bytes = \"65MiB\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("out of range"), "{msg}");
    let (line, msg) = file_err("interval = \"fast\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("fast"), "{msg}");
    let bad_id = file("expected_hosts = [\"ok\",\n \"a/b\"]\n");
    match resolve(&Args::default(), Some(&bad_id), None) {
        Err(ConfigError::Invalid { line, message, .. }) => {
            assert_eq!(line, 2);
            assert!(message.contains("a/b"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let (line, _) = file_err("[[pull]]\nid = \"n\"\naddr = \"no-port\"\n");
    assert_eq!(line, 3);
    let (line, _) = file_err("[hosts.a]\ntoken = \"has space\"\n");
    assert_eq!(line, 2);
    let (line, msg) = file_err("[hosts.\"a/b\"]\ntoken = \"t\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("a/b"), "{msg}");
    let (line, _) = file_err("listen = \"nonsense\"\n");
    assert_eq!(line, 1);
    let (line, _) = file_err("enrollment_token = \"\"\n");
    assert_eq!(line, 1);
}

#[test]
fn a_bad_flag_value_names_the_value() {
    let err = parse(&["hmonitor-hub", "--viewer-allow", "10.0.0.0/8,nope"])
        .expect_err("refused")
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let err = parse(&["hmonitor-hub", "--max-frame-bytes", "10"])
        .expect_err("refused")
        .to_string();
    assert!(err.contains("1 KiB to 64 MiB"), "{err}");
}

#[test]
fn one_host_id_configured_twice_is_refused_naming_both_places() {
    let c = file("[hosts.a]\ntoken = \"t\"\n\n[[pull]]\nid = \"a\"\naddr = \"h:1\"\n");
    match resolve(&Args::default(), Some(&c), None) {
        Err(ConfigError::Duplicate { id, first, second }) => {
            assert_eq!(id, "a");
            assert!(first.contains("hub.toml:"), "{first}");
            assert!(second.contains("hub.toml:4"), "{second}");
        }
        other => panic!("{other:?}"),
    }
    let c = file("[[pull]]\nid = \"a\"\naddr = \"h:1\"\n[[pull]]\nid = \"a\"\naddr = \"h:2\"\n");
    assert!(matches!(
        resolve(&Args::default(), Some(&c), None),
        Err(ConfigError::Duplicate { .. })
    ));
    let c = file("expected_hosts = [\"a\", \"b\", \"a\"]\n");
    assert!(matches!(
        resolve(&Args::default(), Some(&c), None),
        Err(ConfigError::Duplicate { .. })
    ));
    // settings.py against [[pull]].
    let dir = tempfile::tempdir().expect("tempdir");
    let py = dir.path().join("settings.py");
    std::fs::write(&py, "servers = {\n  'x': 'h:1',\n  'a': 'h:2',\n}\n").expect("write");
    let c = file("[[pull]]\nid = \"a\"\naddr = \"h:1\"\n");
    let flagged = Args {
        settings_py: Some(py.clone()),
        ..Default::default()
    };
    match resolve(&flagged, Some(&c), None) {
        Err(ConfigError::Duplicate { second, .. }) => {
            assert_eq!(second, format!("{}:3", py.display()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_py_the_seeds_own_example() {
    let e = parse_settings_py("servers = {\"local\": \"127.0.0.1:9203\"}\n").expect("parses");
    assert_eq!(
        e,
        vec![SettingsPyEntry {
            target: PullTarget {
                id: "local".into(),
                addr: "127.0.0.1:9203".into(),
                token: None
            },
            line: 1
        }]
    );
}

#[test]
fn settings_py_over_several_lines_with_comments_and_both_quotes() {
    let text = "# lab servers\n\
                servers = {  # all of them\n\
                \x20   'gpu1': '10.0.0.1:9203',   # rack A\n\
                \n\
                \x20   \"gpu2\" : \"gpu2.lab:9203\",\n\
                \x20   # 'gpu3': '10.0.0.3:9203',\n\
                \x20   'v6': '[::1]:9203',\n\
                }\n\
                # end\n";
    let e = parse_settings_py(text).expect("parses");
    let got: Vec<(&str, &str, usize)> = e
        .iter()
        .map(|e| (e.target.id.as_str(), e.target.addr.as_str(), e.line))
        .collect();
    assert_eq!(
        got,
        [
            ("gpu1", "10.0.0.1:9203", 3),
            ("gpu2", "gpu2.lab:9203", 5),
            ("v6", "[::1]:9203", 7)
        ]
    );
    assert_eq!(parse_settings_py("servers = {}").expect("empty").len(), 0);
}

#[test]
fn settings_py_refuses_anything_else_naming_the_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "servers = {\n  'a': '10.0.0.1:9203',\n  'b': 10.0.0.2,\n}\n",
            3,
            "found `10.0.0.2`",
        ),
        ("import os\nservers = {}\n", 1, "servers"),
        (
            "servers = {'a': 'h:1'}\nport = 5000\n",
            2,
            "after the `servers` dict",
        ),
        ("servers = {\n'a': 'h:1'\n'b': 'h:2'}\n", 3, "expected `,`"),
        ("servers = {\n'a': 'nohostport'}\n", 2, "host:port"),
        ("servers = {\n'a': 'h:1',\n'a': 'h:2'}\n", 3, "twice"),
        ("servers = {\n'a/b': 'h:1'}\n", 2, "not valid"),
        ("servers = {\n'a': 'h:1\n}\n", 2, "not closed"),
        ("servers = {\n'a': \"h:1\\n\"}\n", 2, "backslash"),
        ("servers = {\n'a': 'h:1',\n", 2, "not closed"),
        ("servers = dict(a='h:1')\n", 1, "`{`"),
        ("servers = {f'a': 'h:1'}\n", 1, "expected a quoted"),
    ];
    for (text, line, needle) in cases {
        let err = parse_settings_py(text).expect_err(text);
        assert_eq!(err.line, *line, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn a_bad_settings_py_names_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let py = dir.path().join("settings.py");
    std::fs::write(&py, "servers = {\n  'a': 'h:1',\n  oops\n}\n").expect("write");
    let a = Args {
        settings_py: Some(py.clone()),
        ..Default::default()
    };
    let err = resolve(&a, None, None).expect_err("refused").to_string();
    assert!(err.starts_with(&format!("{}:3:3:", py.display())), "{err}");
}

#[test]
fn an_oversized_file_is_refused_unparsed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("hub.toml");
    std::fs::write(&p, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).expect("write");
    assert!(matches!(
        ConfigFile::read(&p),
        Err(ConfigError::TooLarge { .. })
    ));
    let missing = ConfigFile::read(&dir.path().join("nope.toml"))
        .err()
        .expect("missing")
        .to_string();
    assert!(missing.contains("nope.toml"), "{missing}");
}

#[test]
fn a_token_is_generated_once_stored_0600_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Args {
        data_dir: Some(dir.path().join("sub")),
        ..Default::default()
    };
    let (cfg, generated) = load(&a, None).expect("first start");
    let generated = generated.expect("generated on first start");
    assert_eq!(generated.token.len(), 64);
    assert!(generated.token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        cfg.enrollment_token.as_deref(),
        Some(generated.token.as_str())
    );
    let path = dir.path().join("sub").join(TOKEN_FILE);
    assert_eq!(generated.path, path);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let hint = generated.add_host_hint("0.0.0.0:5000".parse().expect("addr"));
    assert!(
        hint.contains(&format!(
            "HMON_HUB=ws://<this host>:5000/api/agent HMON_TOKEN={} hmonitor",
            generated.token
        )),
        "{hint}"
    );
    // Nothing prints the token by accident.
    assert!(!format!("{cfg:?} {generated:?}").contains(&generated.token));
    assert!(!cfg.sources.join(" ").contains(&generated.token));

    let (again, none) = load(&a, None).expect("second start");
    assert!(none.is_none());
    assert_eq!(again.enrollment_token, cfg.enrollment_token);

    // Too open: still used (a warning is logged).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (open, none) = load(&a, None).expect("third start");
    assert!(none.is_none());
    assert_eq!(open.enrollment_token, cfg.enrollment_token);

    // An empty file is an error, not a silently regenerated token.
    std::fs::write(&path, "\n").expect("write");
    assert!(matches!(
        load(&a, None),
        Err(ConfigError::Enrollment(EnrollmentError::TokenFile { .. }))
    ));
}

#[test]
fn no_token_is_generated_when_one_is_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_enrollment = Args {
        data_dir: Some(dir.path().to_owned()),
        token: Some("configured".into()),
        ..Default::default()
    };
    let (cfg, g) = load(&with_enrollment, None).expect("loads");
    assert!(g.is_none());
    assert_eq!(cfg.enrollment_token.as_deref(), Some("configured"));
    assert!(!dir.path().join(TOKEN_FILE).exists());

    let toml = dir.path().join("hub.toml");
    std::fs::write(&toml, "[hosts.a]\ntoken = \"only-a\"\n").expect("write");
    let with_host = Args {
        data_dir: Some(dir.path().to_owned()),
        config: Some(toml),
        ..Default::default()
    };
    let (cfg, g) = load(&with_host, None).expect("loads");
    assert!(g.is_none());
    assert_eq!(cfg.enrollment_token, None);
    assert!(!dir.path().join(TOKEN_FILE).exists());
}

#[test]
fn debug_output_redacts_tokens() {
    let a = args(&["--token", "sekrit-enroll", "--viewer-token", "sekrit-view"]);
    assert!(!format!("{a:?}").contains("sekrit"));
    let c = file("[hosts.a]\ntoken = \"sekrit-a\"\n[[pull]]\nid = \"p\"\naddr = \"h:1\"\ntoken = \"sekrit-p\"\n");
    let cfg = resolve(&a, Some(&c), None).expect("resolves");
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("sekrit"), "{shown}");
    assert!(shown.contains("\"a\""), "{shown}");
}

#[test]
fn the_example_file_parses_as_is_and_with_every_setting_uncommented() {
    let text = include_str!("../../hub.example.toml");
    let c = ConfigFile::parse(Path::new("/etc/hmonitor/hub.toml"), text.to_owned())
        .expect("example parses");
    resolve(&Args::default(), Some(&c), None).expect("example resolves");
    // Uncomment the commented-out settings (not the prose): `# key = ...` and `# [table]`.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c = ConfigFile::parse(Path::new("/nonexistent/hub.toml"), uncommented)
        .expect("uncommented example parses");
    assert!(c.file.settings_py.is_some());
    assert_eq!(c.file.pull.len(), 1);
    assert_eq!(c.file.hosts.len(), 1);
    assert!(c.file.enrollment_token.is_some() && c.file.viewer_token.is_some());
    assert!(c.file.grpc_listen.is_some() && c.file.data_dir.is_some());
    assert_eq!(c.file.expected_hosts.len(), 2);
}

#[test]
fn sizes_and_addresses() {
    assert_eq!(parse_frame_bytes("1048576"), Ok(1 << 20));
    assert_eq!(parse_frame_bytes("512KiB"), Ok(512 << 10));
    assert_eq!(parse_frame_bytes("64 MiB"), Ok(64 << 20));
    assert!(parse_frame_bytes("1023").is_err());
    assert!(parse_frame_bytes("1GiB").is_err());
    assert!(parse_frame_bytes("lots").is_err());
    assert!(check_pull_addr("10.0.0.7:9203").is_ok());
    assert!(check_pull_addr("node-7.lab:9203").is_ok());
    assert!(check_pull_addr("[fe80::1]:9203").is_ok());
    assert!(check_pull_addr("10.0.0.7").is_err());
    assert!(check_pull_addr(":9203").is_err());
    assert!(check_pull_addr("h:0").is_err());
    assert!(check_pull_addr("h:99999").is_err());
    assert!(check_pull_addr("http://h:1").is_err());
}

#[test]
fn the_local_agent_has_settings_of_its_own() {
    // The short form.
    let c = file("local_agent = true\n");
    let cfg = resolve(&args(&[]), Some(&c), None).expect("resolves");
    assert_eq!(
        cfg.local_agent,
        LocalAgent {
            enabled: true,
            ..LocalAgent::default()
        }
    );
    // The table turns it on, its paths are relative to the file.
    let c = file("[local_agent]\nid = \"gpu-hub\"\nip = \"10.0.0.2\"\nnvml_lib = \"lib/libnvidia-ml.so.1\"\ncmdline = true\n");
    let cfg = resolve(&args(&[]), Some(&c), None).expect("resolves");
    assert_eq!(
        cfg.local_agent,
        LocalAgent {
            enabled: true,
            id: Some("gpu-hub".into()),
            ip: Some("10.0.0.2".into()),
            nvml_lib: Some(PathBuf::from("/etc/hmonitor/lib/libnvidia-ml.so.1")),
            cmdline: true,
        }
    );
    let s = cfg.local_agent.sampler_config(Duration::from_secs(1));
    assert_eq!(s.id.as_deref(), Some("gpu-hub"));
    assert_eq!(s.stale_after, Duration::from_secs(3));
    assert_eq!(s.cmdline_max, Some(hmonitor_sampler::CMDLINE_MAX));
    // Flags beat the table; an empty flag value is unset.
    let a = args(&[
        "--local-agent=0",
        "--local-agent-id",
        "other",
        "--local-agent-ip",
        "",
        "--local-agent-nvml-lib",
        "/opt/nvml.so",
        "--local-agent-cmdline=no",
    ]);
    let cfg = resolve(&a, Some(&c), None).expect("resolves");
    assert!(!cfg.local_agent.enabled);
    assert_eq!(cfg.local_agent.id.as_deref(), Some("other"));
    assert_eq!(cfg.local_agent.ip.as_deref(), Some("10.0.0.2"));
    assert_eq!(
        cfg.local_agent.nvml_lib,
        Some(PathBuf::from("/opt/nvml.so"))
    );
    assert!(!cfg.local_agent.cmdline);
    // `enabled = false` keeps the settings but not the agent.
    let c = file("[local_agent]\nenabled = false\nid = \"x\"\n");
    let cfg = resolve(&args(&[]), Some(&c), None).expect("resolves");
    assert!(!cfg.local_agent.enabled);
}

#[test]
fn a_bad_local_agent_setting_is_refused_with_its_line() {
    let (line, msg) = file_err("listen = \"127.0.0.1:1\"\n[local_agent]\nid = \"a/b\"\n");
    assert_eq!(line, 3, "{msg}");
    assert!(msg.contains("a/b"), "{msg}");
    let (line, msg) = file_err("[local_agent]\nnvml = \"x\"\n");
    assert_eq!(line, 2, "{msg}");
    assert!(msg.contains("nvml"), "{msg}");
    let (_, msg) = file_err("local_agent = \"yes\"\n");
    assert!(msg.contains("[local_agent] table"), "{msg}");
}

#[test]
fn the_local_agent_reads_no_agent_variable() {
    let help = Args::command().render_long_help().to_string();
    for var in [
        "HMON_LOCAL_AGENT_ID",
        "HMON_LOCAL_AGENT_IP",
        "HMON_LOCAL_AGENT_NVML_LIB",
        "HMON_LOCAL_AGENT_CMDLINE",
    ] {
        assert!(help.contains(var), "{var} missing from --help");
    }
    // The agent's own names mean nothing to the hub's local agent.
    for var in ["HMON_ID", "HMON_IP", "HMON_NVML_LIB", "HMON_CMDLINE"] {
        assert!(
            !help.contains(&format!("env: {var}=")),
            "{var} in the hub's --help"
        );
    }
}

#[test]
fn allowed_origins_and_hosts_from_flags_or_file_and_bad_ones_named() {
    let c = file("allowed_origins = [\"https://Grafana.lab/\"]\nallowed_hosts = [\"hub.lab\", \"10.0.0.5\"]\n");
    let cfg = resolve(&args(&[]), Some(&c), None).expect("resolves");
    assert_eq!(cfg.allowed_origins, ["https://grafana.lab"]);
    assert_eq!(cfg.allowed_hosts, ["hub.lab", "10.0.0.5"]);
    let a = args(&[
        "--allowed-origins",
        "http://a.lab:3000,https://b.lab",
        "--allowed-hosts",
        "x.lab",
    ]);
    let cfg = resolve(&a, Some(&c), None).expect("resolves");
    assert_eq!(cfg.allowed_origins, ["http://a.lab:3000", "https://b.lab"]);
    assert_eq!(cfg.allowed_hosts, ["x.lab"]);
    let (line, msg) =
        file_err("listen = \"127.0.0.1:1\"\nallowed_origins = [\"evil.example/path\"]\n");
    assert_eq!(line, 2, "{msg}");
    assert!(msg.contains("evil.example/path"), "{msg}");
    let err = parse(&["hmonitor-hub", "--allowed-hosts", "a b"])
        .expect_err("refused")
        .to_string();
    assert!(err.contains("a b"), "{err}");
    let help = Args::command().render_long_help().to_string();
    assert!(help.contains("HMON_ALLOWED_ORIGINS") && help.contains("HMON_ALLOWED_HOSTS"));
}

#[test]
fn the_http_head_timeout_from_flag_or_file() {
    assert_eq!(
        resolve(&args(&[]), None, None)
            .expect("defaults")
            .http_head_timeout,
        Duration::from_secs(30)
    );
    let c = file("http_head_timeout = \"5s\"\n");
    let cfg = resolve(&args(&[]), Some(&c), None).expect("resolves");
    assert_eq!(cfg.http_head_timeout, Duration::from_secs(5));
    let cfg = resolve(&args(&["--http-head-timeout", "2s"]), Some(&c), None).expect("resolves");
    assert_eq!(cfg.http_head_timeout, Duration::from_secs(2));
    let (_, msg) = file_err("http_head_timeout = \"soon\"\n");
    assert!(msg.contains("soon"), "{msg}");
}

#[test]
fn max_hosts_from_flag_or_file_and_zero_is_refused() {
    assert_eq!(
        resolve(&args(&[]), None, None).expect("defaults").max_hosts,
        20_000
    );
    let c = file("max_hosts = 50\n");
    assert_eq!(
        resolve(&args(&[]), Some(&c), None)
            .expect("resolves")
            .max_hosts,
        50
    );
    let a = args(&["--max-hosts", "7"]);
    assert_eq!(resolve(&a, Some(&c), None).expect("resolves").max_hosts, 7);
    let (line, msg) = file_err("listen = \"127.0.0.1:1\"\nmax_hosts = 0\n");
    assert_eq!(line, 2, "{msg}");
    assert!(parse(&["hmonitor-hub", "--max-hosts", "0"]).is_err());
}

#[test]
fn tokens_come_from_files_flags_and_systemd_credentials_and_never_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        p
    };
    let enroll = write("enroll", "from-a-file\n");
    let creds = tempfile::tempdir().expect("tempdir");
    std::fs::write(creds.path().join(CREDENTIAL_VIEWER), "viewer-cred").expect("write");
    std::fs::write(creds.path().join(CREDENTIAL_ADMIN), "admin-cred").expect("write");
    let a = args(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--token-file",
        enroll.to_str().expect("utf-8"),
        "--credentials-directory",
        creds.path().to_str().expect("utf-8"),
    ]);
    let (cfg, generated) = load(&a, None).expect("loads");
    assert!(generated.is_none());
    assert_eq!(cfg.enrollment_token.as_deref(), Some("from-a-file"));
    assert_eq!(cfg.viewer_token.as_deref(), Some("viewer-cred"));
    assert_eq!(cfg.admin_token.as_deref(), Some("admin-cred"));
    assert!(!dir
        .path()
        .join(crate::enrollment::ADMIN_TOKEN_FILE)
        .exists());
    let shown = format!("{cfg:?} {a:?} {}", cfg.sources.join(" "));
    for secret in ["from-a-file", "viewer-cred", "admin-cred"] {
        assert!(!shown.contains(secret), "{shown}");
    }

    // A value beats its file; the file's keys are relative to the file.
    let toml = write(
        "hub.toml",
        "admin_token_file = \"admin\"\nviewer_token_file = \"viewer\"\n",
    );
    write("admin", "admin-from-toml");
    write("viewer", "viewer-from-toml");
    let b = args(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--config",
        toml.to_str().expect("utf-8"),
        "--viewer-token",
        "viewer-flag",
    ]);
    let (cfg, _) = load(&b, None).expect("loads");
    assert_eq!(cfg.admin_token.as_deref(), Some("admin-from-toml"));
    assert_eq!(cfg.viewer_token.as_deref(), Some("viewer-flag"));

    // A named file that is missing, empty or holds a space is an error naming it.
    for (name, text, why) in [
        ("missing", None, "no such file"),
        ("empty", Some("\n"), "is empty"),
        ("spaced", Some("a b"), "printable ASCII"),
    ] {
        let p = dir.path().join(name);
        if let Some(t) = text {
            std::fs::write(&p, t).expect("write");
        }
        let c = args(&[
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--admin-token-file",
            p.to_str().expect("utf-8"),
        ]);
        let err = load(&c, None).expect_err(name).to_string();
        assert!(
            err.contains("admin token") && err.contains(name) && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn an_admin_token_is_generated_once_in_the_data_dir_and_the_new_keys_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = args(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--max-clock-skew",
        "90s",
        "--http-idle-timeout",
        "2m",
    ]);
    let (cfg, _) = load(&a, None).expect("loads");
    let admin = cfg.admin_token.clone().expect("admin token");
    assert_eq!(admin.len(), 64);
    let path = dir.path().join(crate::enrollment::ADMIN_TOKEN_FILE);
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(cfg.max_clock_skew, Duration::from_secs(90));
    assert_eq!(cfg.http_idle_timeout, Duration::from_secs(120));
    let (again, _) = load(&a, None).expect("loads");
    assert_eq!(again.admin_token.as_deref(), Some(admin.as_str()));
    let d = HubConfig::default();
    assert_eq!(d.max_clock_skew, Duration::from_secs(300));
    assert_eq!(d.http_idle_timeout, Duration::from_secs(60));
    assert_eq!(d.http_head_timeout, Duration::from_secs(30));

    let toml = dir.path().join("hub.toml");
    std::fs::write(&toml, "max_clock_skew = \"10m\"\nhttp_idle_timeout = 5\n").expect("write");
    let f = args(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--config",
        toml.to_str().expect("utf-8"),
    ]);
    let (cfg, _) = load(&f, None).expect("loads");
    assert_eq!(cfg.max_clock_skew, Duration::from_secs(600));
    assert_eq!(cfg.http_idle_timeout, Duration::from_secs(5));
}

#[test]
fn enroll_line_names_the_hub_and_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = args(&[
        "--data-dir",
        dir.path().to_str().expect("utf-8"),
        "--listen",
        "10.1.2.3:5000",
    ]);
    let cfg = resolve(&a, None, None).expect("resolves");
    let err = crate::admin_cli::enroll_line(&cfg)
        .expect_err("no token yet")
        .to_string();
    assert!(err.contains("enrollment-token"), "{err}");
    let (loaded, generated) = load(&a, None).expect("loads");
    let token = generated.expect("generated").token;
    let line =
        crate::admin_cli::enroll_line(&resolve(&a, None, None).expect("resolves")).expect("line");
    assert_eq!(
        line,
        format!("HMON_HUB=ws://10.1.2.3:5000/api/agent HMON_TOKEN={token} hmonitor")
    );
    assert_eq!(loaded.enrollment_token.as_deref(), Some(token.as_str()));
}

fn resolve_err(text: &str) -> (usize, String) {
    let f = match ConfigFile::parse(Path::new("hub.toml"), text.to_owned()) {
        Ok(f) => f,
        Err(ConfigError::Invalid { line, message, .. }) => return (line, message),
        Err(other) => panic!("unexpected error {other}"),
    };
    match resolve(&args(&[]), Some(&f), None) {
        Err(ConfigError::Invalid { line, message, .. }) => (line, message),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

const ALERTS: &str = r#"
[alerts]
interval = "2s"
page_url = "https://hub.lab.example/"
timezone = "Asia/Shanghai"

[[alerts.channel]]
name = "lab"
kind = "webhook"
url = "http://127.0.0.1:9/hook"
template = '{"text": {{ summary }}}'
rate_limit = "10/m"

[[alerts.channel]]
name = "feishu"
kind = "lark"
url = "https://open.feishu.cn/open-apis/bot/v2/hook/x"
secret = "demo"

[[alerts.channel]]
name = "mail"
kind = "email"
smtp = "smtp.lab.example:587"
from = "hmonitor <hmonitor@lab.example>"
to = ["admins@lab.example"]

[[alerts.rule]]
kind = "host_down"
for = "2m"
notify = ["lab"]

[[alerts.rule]]
name = "hot"
kind = "gpu_temp"
threshold = 88
quiet_hours = "23:00-07:30"
hosts = ["gpu*", "!gpu-test*"]
notify = ["lab", "feishu"]

[[alerts.rule]]
kind = "idle_hog"
min_mem = "20GiB"
max_util = 2
for = "3h"
escalate_after = "1h"
notify = ["mail"]

[users.alice]
email = "alice@lab.example"
feishu = "ou_123"
"#;

#[test]
fn alerts_are_read_with_their_channels_rules_and_users() {
    let f = file(ALERTS);
    let cfg = resolve(&args(&[]), Some(&f), None).expect("resolves");
    let a = &cfg.alerts;
    assert_eq!(a.interval, Duration::from_secs(2));
    assert_eq!(
        a.channels
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["lab", "feishu", "mail"]
    );
    assert_eq!(
        a.channels[1].kind,
        crate::alerts::config::ChannelKind::Feishu
    );
    assert_eq!(a.channels[2].email.as_ref().map(|e| e.port), Some(587));
    assert_eq!(a.rules.len(), 3);
    assert_eq!(a.rules[0].name, "host_down");
    assert_eq!(a.rules[0].for_, Duration::from_secs(120));
    assert_eq!(a.rules[1].threshold, 88.0);
    assert_eq!(a.rules[1].notify, [0, 1]);
    assert!(a.rules[1].scope.hosts.allows(&["gpu-3"]));
    assert!(!a.rules[1].scope.hosts.allows(&["gpu-test1"]));
    assert_eq!(a.rules[2].min_mem, 20 << 30);
    assert_eq!(a.rules[2].escalate_after, Some(Duration::from_secs(3600)));
    assert_eq!(a.users["alice"].feishu.as_deref(), Some("ou_123"));
    // No secret reaches a log.
    assert!(!format!("{cfg:?}").contains("demo"));
}

#[test]
fn alert_mistakes_are_refused_with_their_line() {
    let base = "[[alerts.channel]]\nname = \"lab\"\nkind = \"webhook\"\nurl = \"http://x/\"\n";
    let (line, msg) = resolve_err(&format!(
        "{base}\n[[alerts.rule]]\nkind = \"host_down\"\nnotify = [\"lab\", \"nope\"]\n"
    ));
    assert_eq!(line, 8, "{msg}");
    assert!(
        msg.contains("unknown channel \"nope\"") && msg.contains("lab"),
        "{msg}"
    );
    let (line, msg) = resolve_err(&format!(
        "{base}\n[[alerts.rule]]\nkind = \"gpu_melted\"\nnotify = [\"lab\"]\n"
    ));
    assert_eq!(line, 7, "{msg}");
    assert!(msg.contains("gpu_melted"), "{msg}");
    let (line, msg) = resolve_err(&format!(
        "{base}\n[[alerts.rule]]\nkind = \"host_down\"\nfor = \"soon\"\nnotify = [\"lab\"]\n"
    ));
    assert_eq!(line, 8, "{msg}");
    assert!(msg.contains("soon"), "{msg}");
    let (line, msg) =
        resolve_err("[[alerts.channel]]\nname = \"x\"\nkind = \"pager\"\nurl = \"http://x/\"\n");
    assert_eq!(line, 3, "{msg}");
    assert!(msg.contains("pager"), "{msg}");
    let (line, msg) = resolve_err(&format!(
        "{base}\n[[alerts.rule]]\nkind = \"host_down\"\nthreshold = 3\nnotify = [\"lab\"]\n"
    ));
    assert_eq!(line, 6, "{msg}");
    assert!(msg.contains("threshold"), "{msg}");
    let (_, msg) = resolve_err("[[alerts.channel]]\nname = \"x\"\nkind = \"slack\"\n");
    assert!(msg.contains("needs a url"), "{msg}");
    let (line, msg) = resolve_err(&format!("{base}[users.bob]\nemail = \"bob@x\"\n"));
    assert_eq!(line, 5, "{msg}");
    assert!(msg.contains("no email channel"), "{msg}");
    let (line, msg) = resolve_err(&format!("{base}\n[[alerts.rule]]\nkind = \"host_down\"\nquiet_hours = \"late\"\nnotify = [\"lab\"]\n"));
    assert_eq!(line, 8, "{msg}");
}

#[test]
fn alert_secrets_come_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("hook.url"),
        "https://oapi.dingtalk.com/robot/send?access_token=t\n",
    )
    .expect("writes");
    std::fs::write(dir.path().join("ding.secret"), "SECabc\n").expect("writes");
    let text = "[[alerts.channel]]\nname = \"ding\"\nkind = \"dingtalk\"\nurl_file = \"hook.url\"\nsecret_file = \"ding.secret\"\n";
    let f = ConfigFile::parse(&dir.path().join("hub.toml"), text.to_owned()).expect("parses");
    let cfg = resolve(&args(&[]), Some(&f), None).expect("resolves");
    let c = &cfg.alerts.channels[0];
    assert_eq!(c.url, "https://oapi.dingtalk.com/robot/send?access_token=t");
    assert_eq!(c.secret.as_deref(), Some("SECabc"));
    let missing = text.replace("ding.secret", "absent.secret");
    let f = ConfigFile::parse(&dir.path().join("hub.toml"), missing).expect("parses");
    match resolve(&args(&[]), Some(&f), None) {
        Err(ConfigError::Invalid { message, .. }) => {
            assert!(message.contains("absent.secret"), "{message}")
        }
        other => panic!("accepted or odd: {:?}", other.map(|_| ())),
    }
}
