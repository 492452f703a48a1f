//! Sampling off the request path.
//!
//! Each source (NVML, host facts, disks) is sampled by its own thread on a fixed interval and
//! published through a `watch` channel; readers (the pull API, the push client, `--once`) only
//! take the latest samples and assemble a report, so they never call NVML or `statvfs`
//! themselves. A source that hangs (a stuck driver call, a hung NFS mount) stalls only its own
//! thread: its last sample keeps being served, marked stale once it is older than the deadline,
//! while the other sources stay fresh.

use std::ffi::OsString;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hmonitor_proto::{unix_ms, DiskInfo, ErrorKind, HostInfo};
use tokio::sync::watch;

use crate::collect::gpu::{GpuCollector, GpuSample};
use crate::collect::host::{HostFacts, HostReader};
use crate::collect::redact::Redactor;
use crate::collect::{disks, procs::ProcReader};

/// How often a failed NVML initialisation is retried (the driver may load after the agent
/// starts at boot). Loading a missing library is cheap, but a driver that is present and
/// failing can take seconds per attempt.
const NVML_RETRY: Duration = Duration::from_secs(30);

/// Longest command line reported when command lines are on, in bytes: enough to tell jobs
/// apart, bounded so one process cannot bloat every frame.
pub const CMDLINE_MAX: usize = 512;

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Host id (HMON_ID; by default the hostname).
    pub id: Option<String>,
    /// Overrides the primary address (HMON_IP).
    pub ip: Option<String>,
    pub interval: Duration,
    /// A sample older than this is stale.
    pub stale_after: Duration,
    /// NVML library to load; `None` = `libnvidia-ml.so.1` through the loader path.
    pub nvml_lib: Option<OsString>,
    /// Report command lines, cut to this many bytes; `None` = off.
    pub cmdline_max: Option<usize>,
    /// Name parts whose values are masked in command lines, besides the built-in ones
    /// (`collect::redact::SECRET_NAMES`).
    pub redact: Vec<String>,
}

impl SamplerConfig {
    pub fn new(interval: Duration) -> Self {
        Self {
            id: None,
            ip: None,
            interval,
            stale_after: interval * 3,
            nvml_lib: None,
            cmdline_max: None,
            redact: Vec::new(),
        }
    }
}

/// One sample of one source, with when it was taken.
#[derive(Debug)]
pub struct Stamped<T> {
    pub at: SystemTime,
    pub taken: Instant,
    pub value: T,
}

type Part<T> = watch::Receiver<Option<Arc<Stamped<T>>>>;

/// What the GPU thread publishes: a sample, or why NVML could not be used.
pub type GpuPart = Result<GpuSample, (ErrorKind, String)>;

/// Adds what the sampler does not know to every report (the agent's GPU holds).
pub type Annotate = Box<dyn Fn(&mut HostInfo) + Send + Sync>;

/// A handle on the running sampler threads; cheap to clone. The threads stop by themselves
/// once every handle is dropped.
#[derive(Clone)]
pub struct Sampler {
    gpu: Part<GpuPart>,
    host: Part<HostFacts>,
    disks: Part<Vec<DiskInfo>>,
    id: Arc<str>,
    started: Instant,
    stale_after: Duration,
    interval: Duration,
    annotate: Arc<std::sync::OnceLock<Annotate>>,
}

impl Sampler {
    pub fn start(cfg: SamplerConfig) -> std::io::Result<Self> {
        let interval = cfg.interval;
        let mut host_reader = HostReader::new(cfg.ip.clone());
        // The host id is fixed for the life of the process: the hub keys its state on it.
        let first_host = host_reader.sample();
        let id: Arc<str> = cfg
            .id
            .clone()
            .unwrap_or_else(|| first_host.hostname.clone())
            .into();

        let mut first = Some(first_host);
        let host = spawn_part("hmon-host", interval, move || {
            first.take().unwrap_or_else(|| host_reader.sample())
        })?;
        let disks = spawn_part("hmon-disks", interval, disks::read_disks)?;

        let lib = cfg.nvml_lib.clone();
        let cmdline_max = cfg.cmdline_max;
        let redactor = Redactor::new(&cfg.redact);
        let mut collector: Option<GpuCollector> = None;
        let mut last_failure: Option<(Instant, (ErrorKind, String))> = None;
        let gpu = spawn_part("hmon-nvml", interval, move || {
            if collector.is_none() {
                match &last_failure {
                    Some((when, err)) if when.elapsed() < NVML_RETRY => return Err(err.clone()),
                    _ => {}
                }
                let procs = ProcReader::new(cmdline_max).with_redactor(redactor.clone());
                match GpuCollector::open(lib.as_deref(), procs) {
                    Ok(c) => {
                        tracing::info!("NVML initialised");
                        collector = Some(c);
                        last_failure = None;
                    }
                    Err(e) => {
                        if last_failure.is_none() {
                            tracing::warn!("{e}");
                        }
                        let err = (e.kind(), e.to_string());
                        last_failure = Some((Instant::now(), err.clone()));
                        return Err(err);
                    }
                }
            }
            match collector.as_mut() {
                Some(c) => Ok(c.sample()),
                None => Err((ErrorKind::Unknown, "NVML is not initialised".to_owned())),
            }
        })?;

        Ok(Self {
            gpu,
            host,
            disks,
            id,
            started: Instant::now(),
            stale_after: cfg.stale_after,
            interval,
            annotate: Arc::default(),
        })
    }

    /// Sets what every later [`Sampler::report`] passes its report through (once; a second
    /// call is ignored).
    pub fn set_annotate(&self, f: Annotate) {
        let _ = self.annotate.set(f);
    }

    /// The sampling interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Waits until every source has published once, or `deadline` has passed (a hung source
    /// then shows up as stale in the report rather than blocking the caller).
    pub async fn ready(&self, deadline: Duration) {
        let wait_all = async {
            let _ = self.gpu.clone().wait_for(Option::is_some).await;
            let _ = self.host.clone().wait_for(Option::is_some).await;
            let _ = self.disks.clone().wait_for(Option::is_some).await;
        };
        let _ = tokio::time::timeout(deadline, wait_all).await;
    }

    /// Waits for the next GPU sample (one per interval): the push client's clock. The GPU
    /// thread is the slowest source and the one readers care about most, so a report taken
    /// right after its sample is the freshest there is. If that thread hangs, this returns
    /// after 1.5 intervals anyway, so reports keep flowing and show the GPU readings stale.
    /// Returns false once the sampling threads are gone.
    pub async fn changed(&mut self) -> bool {
        match tokio::time::timeout(self.interval * 3 / 2, self.gpu.changed()).await {
            Ok(r) => r.is_ok(),
            Err(_) => true,
        }
    }

    /// The latest report, assembled from the newest sample of each source, annotated.
    pub fn report(&self) -> HostInfo {
        let mut info = self.report_raw();
        if let Some(f) = self.annotate.get() {
            f(&mut info);
        }
        info
    }

    /// The latest report as sampled, without annotations.
    pub fn report_raw(&self) -> HostInfo {
        let gpu = self.gpu.borrow().clone();
        let host = self.host.borrow().clone();
        let disks = self.disks.borrow().clone();
        assemble(
            &self.id,
            gpu.as_deref(),
            host.as_deref(),
            disks.as_deref(),
            self.started.elapsed(),
            self.stale_after,
        )
    }
}

/// Builds one report from the latest samples. Pure apart from reading the clock through the
/// samples' `taken` instants, so staleness can be tested.
pub fn assemble(
    id: &str,
    gpu: Option<&Stamped<GpuPart>>,
    host: Option<&Stamped<HostFacts>>,
    disks: Option<&Stamped<Vec<DiskInfo>>>,
    running_for: Duration,
    stale_after: Duration,
) -> HostInfo {
    let mut info = HostInfo {
        id: id.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let mut errors: Vec<String> = Vec::new();
    let mut oldest: Option<SystemTime> = None;
    let mut note = |what: &str, taken: Option<Instant>, at: Option<SystemTime>| -> bool {
        let stale = match taken {
            Some(t) => {
                let age = t.elapsed();
                if age > stale_after {
                    errors.push(format!(
                        "{what} are {} s old: the source has not answered since",
                        age.as_secs()
                    ));
                    true
                } else {
                    false
                }
            }
            None if running_for > stale_after => {
                errors.push(format!(
                    "{what} not available: no answer in {} s",
                    running_for.as_secs()
                ));
                true
            }
            None => false,
        };
        if let Some(at) = at {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        stale
    };

    let host_stale = note("host readings", host.map(|h| h.taken), host.map(|h| h.at));
    let disks_stale = note("disk readings", disks.map(|d| d.taken), disks.map(|d| d.at));
    let gpu_stale = note("GPU readings", gpu.map(|g| g.taken), gpu.map(|g| g.at));
    info.stale = host_stale || disks_stale || gpu_stale;
    if gpu_stale {
        info.err_kind = ErrorKind::Timeout as i32;
    }

    if let Some(h) = host {
        let f = &h.value;
        info.hostname = f.hostname.clone();
        info.ip = f.ip.clone().unwrap_or_default();
        info.cpu_util = f.cpu_util;
        info.cpu_count = f.cpu_count;
        info.mem_used = f.mem_used;
        info.mem_total = f.mem_total;
        info.load = f.load;
        info.uptime_s = f.uptime_s;
        info.kernel = f.kernel.clone();
        info.os = f.os.clone();
    }
    if let Some(d) = disks {
        info.disks = d.value.clone();
    }
    if let Some(g) = gpu {
        match &g.value {
            Ok(sample) => {
                info.gpus = sample.gpus.clone();
                info.driver_version = sample.driver_version.clone();
                info.cuda_version = sample.cuda_version.clone();
                if let Some((kind, text)) = &sample.err {
                    info.err_kind = *kind as i32;
                    errors.insert(0, text.clone());
                }
            }
            Err((kind, text)) => {
                info.err_kind = *kind as i32;
                errors.insert(0, text.clone());
            }
        }
    }
    info.err = errors.join("; ");
    info.timestamp_ms = oldest.map(unix_ms).unwrap_or(0);
    info
}

/// Starts a thread that calls `sample` every `interval` and publishes each result. The thread
/// ends when every receiver is gone.
fn spawn_part<T, F>(name: &str, interval: Duration, mut sample: F) -> std::io::Result<Part<T>>
where
    T: Send + Sync + 'static,
    F: FnMut() -> T + Send + 'static,
{
    let (tx, rx) = watch::channel(None);
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            let start = Instant::now();
            let value = sample();
            let stamped = Stamped {
                at: SystemTime::now(),
                taken: Instant::now(),
                value,
            };
            if tx.send(Some(Arc::new(stamped))).is_err() {
                return;
            }
            // Fixed rate, not fixed delay: a slow sample does not shift every later one.
            thread::sleep(interval.saturating_sub(start.elapsed()));
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped<T>(value: T, age: Duration) -> Stamped<T> {
        Stamped {
            at: SystemTime::now() - age,
            taken: Instant::now() - age,
            value,
        }
    }

    #[test]
    fn an_old_gpu_sample_marks_the_report_stale_but_keeps_host_facts_fresh() {
        let gpu = stamped(Ok(GpuSample::default()), Duration::from_secs(20));
        let disks = stamped(vec![DiskInfo::default()], Duration::ZERO);
        let info = assemble(
            "h",
            Some(&gpu),
            None,
            Some(&disks),
            Duration::from_secs(30),
            Duration::from_secs(6),
        );
        assert!(info.stale);
        assert_eq!(info.err_kind, ErrorKind::Timeout as i32);
        assert!(
            info.err.contains("GPU readings are 20 s old"),
            "{}",
            info.err
        );
        assert!(
            info.err.contains("host readings not available"),
            "{}",
            info.err
        );
        assert_eq!(info.disks.len(), 1);
    }

    #[test]
    fn fresh_samples_are_not_stale_and_a_missing_driver_is_said_plainly() {
        let gpu: Stamped<GpuPart> = stamped(
            Err((
                ErrorKind::NoDriver,
                "NVIDIA driver library not found".into(),
            )),
            Duration::ZERO,
        );
        let info = assemble(
            "h",
            Some(&gpu),
            None,
            None,
            Duration::from_secs(1),
            Duration::from_secs(6),
        );
        assert!(!info.stale);
        assert_eq!(info.err, "NVIDIA driver library not found");
        assert_eq!(info.err_kind, ErrorKind::NoDriver as i32);
    }
}
