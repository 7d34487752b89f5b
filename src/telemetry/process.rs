//! The process's own metrics in Prometheus's standard names (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`), read from `/proc/self` at each scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The gauges, registered unprefixed; [`Process::update`] refreshes them.
#[derive(Debug, Default)]
pub struct Process {
    rss: Gauge,
    cpu: Counter<f64, AtomicU64>,
    fds: Gauge,
}

impl Process {
    /// Registers the metrics in `registry` (the unprefixed root).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            self.rss.clone(),
        );
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            self.cpu.clone(),
        );
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            self.fds.clone(),
        );
    }

    /// Reads `/proc/self`; a value that cannot be read keeps its last one.
    pub fn update(&self) {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command (which may hold spaces): state is field 3.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
            let ticks = rustix::param::clock_ticks_per_second() as f64;
            if let (Some(utime), Some(stime)) = (field(14), field(15))
                && ticks > 0.0
            {
                let total = (utime + stime) as f64 / ticks;
                let now = self.cpu.get();
                if total > now {
                    self.cpu.inc_by(total - now);
                }
            }
            if let Some(pages) = field(24) {
                let bytes = pages.saturating_mul(rustix::param::page_size() as u64);
                self.rss.set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(dir.count() as i64);
        }
    }
}
