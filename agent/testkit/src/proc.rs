//! The programs under test as child processes: a scrubbed environment (none of the caller's
//! `GOHM_*`, `HMON_*` or systemd's `STATE_DIRECTORY` leaks in), stderr collected line by line,
//! killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `cmd` without the caller's hmonitor settings, logging at info.
pub fn clean(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("GOHM_") || k.starts_with("HMON_") || k == "STATE_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    cmd.env("HMON_LOG", "info").stdin(Stdio::null());
    cmd
}

/// A child process whose stderr lines are collected; killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` and collects its stderr; waits for nothing.
    pub fn start(cmd: Command) -> Self {
        Self::start_watching(cmd, |_| {})
    }

    /// Starts `cmd`; each stderr line is also handed to `on_line` as it comes.
    pub fn start_watching(
        mut cmd: Command,
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let stderr = child.stderr.take().expect("stderr");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                on_line(&line);
                sink.lock().expect("log").push(line);
            }
        });
        Self { child, log }
    }

    /// Starts `cmd` and returns once a stderr line containing `ready` appears, with the word
    /// after it (up to a space or comma): an address, say. Panics with the log after `limit`.
    pub fn spawn_ready(cmd: Command, ready: &str, limit: Duration) -> (Self, String) {
        let ready = ready.to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let proc = Self::start_watching(cmd, move |line| {
            if let Some(rest) = line.split(ready.as_str()).nth(1) {
                let word = rest.split([',', ' ']).next().unwrap_or_default().to_owned();
                let _ = tx.send(word);
            }
        });
        let word = rx
            .recv_timeout(limit)
            .unwrap_or_else(|_| panic!("process not ready: {:#?}", proc.log.lock().expect("log")));
        (proc, word)
    }

    /// The stderr lines so far that contain `needle`.
    pub fn lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn whole_log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal");
    }

    /// SIGTERM, as systemd stops a service; waits (bounded) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "process did not exit within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
