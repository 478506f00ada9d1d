//! Machine health: CPU per thread group, memory, disk space, temperatures and the Jetson GPU's
//! load, read from `/proc` and `/sys` every few seconds by one sampler thread.
//!
//! Why it is here: an inspection node fails slowly before it fails hard. A thermal zone near its
//! trip point throttles the clocks (inference gets slower, parts time out to ERROR), a full disk
//! stops the MQTT queue, a leak eats the memory the iGPU shares. These figures let the plant see
//! it coming, and the supervisor raises alarms on them (`health:` in the config).
//!
//! One [`Machine`] per node, held by [`super::NodeStats`]; its sampler thread is the one writer
//! and every view (stats message, Sparkplug, the HTTP page) reads [`Machine::latest`], a clone of
//! a small struct under a lock held only for the copy. Nothing here runs on an inspection thread.
//!
//! Every reader takes the root of the tree it reads (`/proc`, `/sys`), so tests point them at a
//! fake tree. A file that is missing or unreadable means "not available" (`None`, or an absent
//! entry), never an error: most of these files exist only on some boards and releases.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;

/// How often the sampler reads the machine. CPU figures are averages over this interval.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Clock ticks per second of `utime` and `stime` in `/proc/*/stat` (USER_HZ). The kernel's ABI
/// fixes it at 100 on x86_64 and aarch64, whatever the kernel's own HZ.
const USER_HZ: f64 = 100.0;

/// The roots the readers read below: `/proc` and `/sys` on a real machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots { proc: PathBuf::from("/proc"), sys: PathBuf::from("/sys") }
    }
}

/// Which part of the pipeline a thread belongs to, told by the name linesight gives it.
///
/// Linux shows at most 15 bytes of a thread's name, and a new thread inherits its creator's
/// name: ONNX Runtime's intra-op pool threads carry the name of the thread that created the
/// session, `ort-<model>` (see docs/mqtt.md, "Machine health").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// `cam-<camera>`: a camera's capture thread (grab, rotate, crop, queue).
    Capture,
    /// `infer-<model>`: a model's inference worker (batching, pre- and postprocessing, the
    /// ONNX Runtime call); `ort-<model>`: ONNX Runtime's intra-op pool of that model (made on a
    /// thread of that name, whose name its threads inherit).
    Inference,
    /// `rt-worker`: the async runtime's threads, shared by telemetry (MQTT, Sparkplug), Modbus
    /// polling and outputs, the decision controllers and gates, the supervisor, and its
    /// blocking pool (model warm-up, some file I/O).
    Runtime,
    /// Anything else: the main thread, the disk queues' writers, this sampler.
    Other,
}

impl Stage {
    /// Every stage, in the order reports list them.
    pub const ALL: [Stage; 4] = [Stage::Capture, Stage::Inference, Stage::Runtime, Stage::Other];

    /// The stage of a thread, by its name as the kernel shows it.
    pub fn of(thread_name: &str) -> Stage {
        if thread_name.starts_with("cam-") {
            Stage::Capture
        } else if thread_name.starts_with("infer-") || thread_name.starts_with("ort-") {
            Stage::Inference
        } else if thread_name == RUNTIME_THREAD_NAME {
            Stage::Runtime
        } else {
            Stage::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Inference => "inference",
            Stage::Runtime => "runtime",
            Stage::Other => "other",
        }
    }
}

/// The name of the async runtime's threads (`main.rs` builds the runtime with it).
pub const RUNTIME_THREAD_NAME: &str = "rt-worker";

/// CPU use of the threads that share one name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThreadCpu {
    /// Threads with this name now.
    pub threads: u32,
    /// CPU time over the interval, as a fraction of one core (0..number of cores).
    pub cores: f64,
}

/// Free space of the file system holding one folder the node writes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// The folder as configured (its nearest existing parent is measured while it does not exist yet).
    pub path: PathBuf,
    /// Bytes an unprivileged process may still write (statvfs `f_bavail * f_frsize`).
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
}

/// One reading of the machine. Sizes in bytes, temperatures in degrees Celsius, loads and CPU as
/// fractions (0..1 of the GPU, 0..N cores of CPU); `None` where the machine does not say.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSample {
    /// When it was read.
    pub taken: SystemTime,
    /// The interval the CPU figures cover (since the sample before); None on the first sample.
    pub interval: Option<Duration>,
    /// The whole process's CPU over the interval, in cores (threads that ended included).
    pub cpu_process: Option<f64>,
    /// CPU per thread name over the interval; empty on the first sample.
    pub threads: BTreeMap<String, ThreadCpu>,
    /// `MemTotal` of /proc/meminfo (the Jetson's GPU shares it).
    pub memory_total_bytes: Option<u64>,
    /// `MemAvailable` of /proc/meminfo: what can be had without swapping.
    pub memory_available_bytes: Option<u64>,
    /// This process's resident set (`VmRSS` of /proc/self/status).
    pub rss_bytes: Option<u64>,
    /// Free space by role: `state_dir` (`runtime.state_dir`), `mqtt_queue` (`mqtt.queue.dir`).
    pub disks: BTreeMap<String, Disk>,
    /// Thermal zones by their `type` (`cpu-thermal`, `gpu-thermal`, ...; a repeated type gets
    /// `-<zone number>`); the set is fixed when the node starts, a zone that cannot be read at
    /// the moment is None.
    pub temperatures_c: BTreeMap<String, Option<f64>>,
    /// The Jetson GPU's load (0..1), from `gpu.0/load`; None off a Jetson.
    pub gpu_load: Option<f64>,
}

impl MachineSample {
    /// CPU per [`Stage`], in cores; None before an interval was measured.
    pub fn cpu_by_stage(&self) -> Vec<(Stage, Option<f64>)> {
        Stage::ALL
            .into_iter()
            .map(|stage| {
                let sum = self.threads.iter().filter(|(n, _)| Stage::of(n) == stage).map(|(_, t)| t.cores).sum();
                (stage, self.interval.map(|_| sum))
            })
            .collect()
    }

    /// The hottest thermal zone, if any can be read: (its name, degrees C).
    pub fn hottest(&self) -> Option<(&str, f64)> {
        self.temperatures_c.iter().filter_map(|(n, t)| t.map(|t| (n.as_str(), t))).max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// The node's machine health: the latest [`MachineSample`], kept fresh by one sampler thread.
#[derive(Debug)]
pub struct Machine {
    roots: Roots,
    disks: Vec<(String, PathBuf)>,
    /// Thermal zones (name, folder), found once at start: a metric's set must not change
    /// after the Sparkplug birth.
    zones: Vec<(String, PathBuf)>,
    /// CPU ticks at the last sample; only the sampler touches it.
    before: Mutex<Option<Ticks>>,
    latest: Mutex<MachineSample>,
}

#[derive(Debug, Clone)]
struct Ticks {
    at: Instant,
    process: Option<u64>,
    /// By thread id: (name, utime + stime).
    threads: BTreeMap<u32, (String, u64)>,
}

impl Machine {
    /// A machine read below `roots`, measuring the free space of `disks` (role, folder).
    /// Takes the first sample at once (without CPU figures: they need an interval).
    pub fn new(roots: Roots, disks: Vec<(String, PathBuf)>) -> Machine {
        let zones = thermal_zones(&roots.sys);
        let first = MachineSample {
            taken: SystemTime::now(),
            interval: None,
            cpu_process: None,
            threads: BTreeMap::new(),
            memory_total_bytes: None,
            memory_available_bytes: None,
            rss_bytes: None,
            disks: BTreeMap::new(),
            temperatures_c: BTreeMap::new(),
            gpu_load: None,
        };
        let m = Machine { roots, disks, zones, before: Mutex::new(None), latest: Mutex::new(first) };
        m.sample();
        m
    }

    /// The real machine, with the folders `config` writes to.
    pub fn for_config(config: &Config) -> Machine {
        let mut disks = vec![("state_dir".to_string(), config.runtime.state_dir.clone())];
        if let Some(q) = config.mqtt.as_ref().and_then(|m| m.queue.as_ref()) {
            disks.push(("mqtt_queue".to_string(), q.dir.clone()));
        }
        Machine::new(Roots::default(), disks)
    }

    /// The latest sample (a copy: the lock is held only for it).
    pub fn latest(&self) -> MachineSample {
        self.latest.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Read the machine now and make it the latest sample. Called by the sampler; tests call it
    /// directly.
    pub fn sample(&self) {
        let now = Instant::now();
        let ticks = Ticks {
            at: now,
            process: read_process_ticks(&self.roots.proc),
            threads: read_threads(&self.roots.proc)
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.tid, (t.name, t.ticks)))
                .collect(),
        };
        let before = self.before.lock().unwrap_or_else(|e| e.into_inner()).replace(ticks.clone());
        let (interval, cpu_process, threads) = match before {
            Some(b) if now > b.at => {
                let secs = (now - b.at).as_secs_f64();
                let process = ticks.process.zip(b.process).map(|(n, p)| n.saturating_sub(p) as f64 / USER_HZ / secs);
                (Some(now - b.at), process, thread_cpu(&b, &ticks, secs))
            }
            _ => (None, None, BTreeMap::new()),
        };
        let (memory_total_bytes, memory_available_bytes) = read_meminfo(&self.roots.proc);
        let sample = MachineSample {
            taken: SystemTime::now(),
            interval,
            cpu_process,
            threads,
            memory_total_bytes,
            memory_available_bytes,
            rss_bytes: read_rss(&self.roots.proc),
            disks: self.disks.iter().map(|(role, path)| (role.clone(), read_disk(path))).collect(),
            temperatures_c: self.zones.iter().map(|(n, dir)| (n.clone(), read_celsius(&dir.join("temp")))).collect(),
            gpu_load: read_gpu_load(&self.roots.sys),
        };
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = sample;
    }

    /// Start the sampler thread (`machine`): a sample every `every`, until the last `Arc` of
    /// this machine is dropped (it holds only a weak reference). The first comes after at most
    /// a second: CPU figures need two readings, and a scrape just after start should find them.
    pub fn start_sampler(self: &Arc<Self>, every: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
        let weak: Weak<Machine> = Arc::downgrade(self);
        let mut wait = every.min(Duration::from_secs(1));
        std::thread::Builder::new().name("machine".into()).spawn(move || loop {
            std::thread::sleep(wait);
            wait = every;
            match weak.upgrade() {
                Some(m) => m.sample(),
                None => return,
            }
        })
    }
}

/// CPU per thread name between two readings, in cores. A thread that appeared since counts
/// from zero; one that ended is gone from both sides (the process figure still has it).
fn thread_cpu(before: &Ticks, now: &Ticks, secs: f64) -> BTreeMap<String, ThreadCpu> {
    let mut out: BTreeMap<String, ThreadCpu> = BTreeMap::new();
    for (tid, (name, ticks)) in &now.threads {
        let prev = before.threads.get(tid).map_or(0, |(_, t)| *t);
        let e = out.entry(name.clone()).or_insert(ThreadCpu { threads: 0, cores: 0.0 });
        e.threads += 1;
        e.cores += ticks.saturating_sub(prev) as f64 / USER_HZ / secs;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Readers. Each returns None (or nothing) for a file that is missing or says something else.

/// One thread of this process: its id, its name, its CPU time in ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadTicks {
    tid: u32,
    name: String,
    ticks: u64,
}

/// The name and utime + stime of a `stat` line (`pid (comm) state ...`; comm may hold spaces
/// and parentheses, so it runs to the last `)`).
fn parse_stat(line: &str) -> Option<(String, u64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); the slice starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Every thread of this process (`<proc>/self/task/*/stat`).
fn read_threads(proc: &Path) -> Option<Vec<ThreadTicks>> {
    let dir = std::fs::read_dir(proc.join("self/task")).ok()?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else { continue };
        // A thread that ended between the listing and the read is simply not there.
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some((name, ticks)) = parse_stat(&text) {
            out.push(ThreadTicks { tid, name, ticks });
        }
    }
    Some(out)
}

/// utime + stime of the whole process (`<proc>/self/stat`), threads that ended included.
fn read_process_ticks(proc: &Path) -> Option<u64> {
    parse_stat(&std::fs::read_to_string(proc.join("self/stat")).ok()?).map(|(_, t)| t)
}

/// A `Key:   123 kB` line's value in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let mut parts = line.split(':').nth(1)?.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// (MemTotal, MemAvailable) in bytes.
fn read_meminfo(proc: &Path) -> (Option<u64>, Option<u64>) {
    match std::fs::read_to_string(proc.join("meminfo")) {
        Ok(t) => (kb_field(&t, "MemTotal"), kb_field(&t, "MemAvailable")),
        Err(_) => (None, None),
    }
}

/// This process's resident set in bytes.
fn read_rss(proc: &Path) -> Option<u64> {
    kb_field(&std::fs::read_to_string(proc.join("self/status")).ok()?, "VmRSS")
}

/// Free and total space of the file system holding `path` (or its nearest existing parent:
/// `runtime.state_dir` is created only when first needed).
// statvfs's field types differ between platforms (u64 on 64-bit Linux, u32 on some 32-bit ones).
#[allow(clippy::unnecessary_cast)]
fn read_disk(path: &Path) -> Disk {
    let measured = path.ancestors().find(|p| !p.as_os_str().is_empty() && p.exists());
    let st = measured.and_then(|p| nix::sys::statvfs::statvfs(p).ok());
    let frsize = st.as_ref().map(|s| s.fragment_size() as u64);
    Disk {
        path: path.to_path_buf(),
        free_bytes: st.as_ref().zip(frsize).map(|(s, f)| (s.blocks_available() as u64).saturating_mul(f)),
        total_bytes: st.as_ref().zip(frsize).map(|(s, f)| (s.blocks() as u64).saturating_mul(f)),
    }
}

/// The thermal zones under `<sys>/class/thermal`, by their `type`, in zone order.
fn thermal_zones(sys: &Path) -> Vec<(String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(sys.join("class/thermal")) else { return Vec::new() };
    let mut zones: Vec<(u32, PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix("thermal_zone")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    zones.sort();
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (n, path) in zones {
        let Ok(ty) = std::fs::read_to_string(path.join("type")) else { continue };
        let ty = ty.trim();
        let ty = if ty.is_empty() { format!("zone{n}") } else { ty.to_string() };
        let name = if out.iter().any(|(t, _)| *t == ty) { format!("{ty}-{n}") } else { ty };
        out.push((name, path));
    }
    out
}

/// A `temp` file in millidegrees Celsius, as degrees.
fn read_celsius(path: &Path) -> Option<f64> {
    let milli: i64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    Some(milli as f64 / 1000.0)
}

/// The Jetson GPU's load, 0..1, from its per-mille `load` file: `devices/platform/gpu.0/load`
/// (JetPack 6 and 7), else `devices/gpu.0/load` (the path older L4T releases use).
fn read_gpu_load(sys: &Path) -> Option<f64> {
    ["devices/platform/gpu.0/load", "devices/gpu.0/load"].iter().find_map(|p| {
        let per_mille: u32 = std::fs::read_to_string(sys.join(p)).ok()?.trim().parse().ok()?;
        Some(f64::from(per_mille.min(1000)) / 1000.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A `stat` line with the given name and ticks (fields as proc(5) orders them).
    fn stat(tid: u32, name: &str, utime: u64, stime: u64) -> String {
        format!("{tid} ({name}) S 1 1 1 0 -1 4194624 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 100 0 0\n")
    }

    fn fake_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "proc/self/stat", &stat(10, "linesight", 300, 100));
        write(r, "proc/self/task/10/stat", &stat(10, "linesight", 10, 0));
        write(r, "proc/self/task/11/stat", &stat(11, "cam-top", 50, 10));
        write(r, "proc/self/task/12/stat", &stat(12, "infer-surface", 200, 20));
        write(r, "proc/self/task/13/stat", &stat(13, "infer-surface", 5, 5));
        write(
            r,
            "proc/meminfo",
            "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n",
        );
        write(r, "proc/self/status", "Name:\tlinesight\nVmPeak:\t  900000 kB\nVmRSS:\t  123456 kB\n");
        write(r, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n");
        write(r, "sys/class/thermal/thermal_zone0/temp", "47500\n");
        write(r, "sys/class/thermal/thermal_zone1/type", "gpu-thermal\n");
        write(r, "sys/class/thermal/thermal_zone1/temp", "51250\n");
        // A zone whose temperature cannot be read (some report EINVAL while their sensor is off).
        write(r, "sys/class/thermal/thermal_zone2/type", "tj-thermal\n");
        write(r, "sys/class/thermal/thermal_zone10/type", "cpu-thermal\n");
        write(r, "sys/class/thermal/thermal_zone10/temp", "-1500\n");
        write(r, "sys/class/thermal/cooling_device0/type", "pwm-fan\n");
        write(r, "sys/devices/platform/gpu.0/load", "437\n");
        dir
    }

    fn roots(dir: &Path) -> Roots {
        Roots { proc: dir.join("proc"), sys: dir.join("sys") }
    }

    #[test]
    fn stat_lines_with_odd_names() {
        assert_eq!(parse_stat(&stat(5, "a (b) c", 7, 3)), Some(("a (b) c".into(), 10)));
        assert_eq!(parse_stat("5 (x) S 1 2"), None, "too short");
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn every_figure_of_a_fake_tree() {
        let dir = fake_tree();
        let r = roots(dir.path());
        let mut threads = read_threads(&r.proc).unwrap();
        threads.sort_by_key(|t| t.tid);
        assert_eq!(
            threads.iter().map(|t| (t.tid, t.name.as_str(), t.ticks)).collect::<Vec<_>>(),
            vec![(10, "linesight", 10), (11, "cam-top", 60), (12, "infer-surface", 220), (13, "infer-surface", 10)]
        );
        assert_eq!(read_process_ticks(&r.proc), Some(400));
        assert_eq!(read_meminfo(&r.proc), (Some(16_384_000 * 1024), Some(8_192_000 * 1024)));
        assert_eq!(read_rss(&r.proc), Some(123_456 * 1024));
        let zones = thermal_zones(&r.sys);
        let names: Vec<&str> = zones.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["cpu-thermal", "gpu-thermal", "tj-thermal", "cpu-thermal-10"],
            "in zone order, not name order"
        );
        let temps: Vec<Option<f64>> = zones.iter().map(|(_, d)| read_celsius(&d.join("temp"))).collect();
        assert_eq!(temps, [Some(47.5), Some(51.25), None, Some(-1.5)]);
        assert_eq!(read_gpu_load(&r.sys), Some(0.437));
    }

    #[test]
    fn the_older_gpu_path_and_an_out_of_range_load() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "devices/gpu.0/load", "1200\n");
        assert_eq!(read_gpu_load(dir.path()), Some(1.0));
    }

    #[test]
    fn missing_files_are_not_available_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        let r = roots(dir.path());
        assert_eq!(read_threads(&r.proc), None);
        assert_eq!(read_process_ticks(&r.proc), None);
        assert_eq!(read_meminfo(&r.proc), (None, None));
        assert_eq!(read_rss(&r.proc), None);
        assert!(thermal_zones(&r.sys).is_empty());
        assert_eq!(read_gpu_load(&r.sys), None);
        write(dir.path(), "proc/meminfo", "MemTotal: lots\n");
        assert_eq!(read_meminfo(&r.proc), (None, None));
        let m = Machine::new(r, vec![]);
        let s = m.latest();
        assert_eq!((s.interval, s.cpu_process, s.gpu_load, s.rss_bytes), (None, None, None, None));
        assert!(s.threads.is_empty() && s.temperatures_c.is_empty());
        m.sample();
        assert!(m.latest().interval.is_some(), "a second sample has an interval");
        assert_eq!(m.latest().cpu_process, None);
    }

    #[test]
    fn disk_space_of_a_folder_not_made_yet() {
        let dir = tempfile::tempdir().unwrap();
        let d = read_disk(&dir.path().join("not/yet"));
        assert_eq!(d.path, dir.path().join("not/yet"));
        let (free, total) = (d.free_bytes.unwrap(), d.total_bytes.unwrap());
        assert!(total > 0 && free <= total, "{free} of {total}");
    }

    #[test]
    fn cpu_over_an_interval_by_thread_name_and_stage() {
        let dir = fake_tree();
        let r = dir.path();
        let m = Machine::new(roots(r), vec![("state_dir".into(), r.join("state"))]);
        let first = m.latest();
        assert_eq!(first.interval, None);
        assert_eq!(first.memory_available_bytes, Some(8_192_000 * 1024));
        assert_eq!(first.temperatures_c["gpu-thermal"], Some(51.25));
        assert_eq!(first.temperatures_c["tj-thermal"], None);
        assert_eq!(first.hottest(), Some(("gpu-thermal", 51.25)));
        assert_eq!(first.gpu_load, Some(0.437));
        assert!(first.disks["state_dir"].free_bytes.is_some());
        assert!(first.cpu_by_stage().iter().all(|(_, c)| c.is_none()));

        // Ticks go on: the camera 100 more, one inference thread 300 more, the other ends, an
        // ONNX Runtime pool thread appears with the worker's name and 50 ticks.
        write(r, "proc/self/stat", &stat(10, "linesight", 700, 200));
        write(r, "proc/self/task/11/stat", &stat(11, "cam-top", 140, 20));
        write(r, "proc/self/task/12/stat", &stat(12, "infer-surface", 450, 70));
        fs::remove_dir_all(r.join("proc/self/task/13")).unwrap();
        write(r, "proc/self/task/14/stat", &stat(14, "infer-surface", 40, 10));
        write(r, "proc/self/task/15/stat", &stat(15, RUNTIME_THREAD_NAME, 0, 0));
        // Pretend the interval was exactly 2 s, so the figures are exact.
        m.before.lock().unwrap().as_mut().unwrap().at -= Duration::from_secs(2);
        m.sample();
        let s = m.latest();
        let secs = s.interval.unwrap().as_secs_f64();
        assert!((2.0..3.0).contains(&secs), "{secs}");
        let cores = |ticks: f64| ticks / 100.0 / secs;
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(s.cpu_process.unwrap(), cores(500.0)));
        assert_eq!(s.threads["cam-top"].threads, 1);
        assert!(close(s.threads["cam-top"].cores, cores(100.0)));
        assert_eq!(s.threads["infer-surface"].threads, 2);
        assert!(close(s.threads["infer-surface"].cores, cores(300.0 + 50.0)));
        assert!(close(s.threads["linesight"].cores, 0.0));
        let by_stage: BTreeMap<Stage, f64> = s.cpu_by_stage().into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        assert!(close(by_stage[&Stage::Capture], cores(100.0)));
        assert!(close(by_stage[&Stage::Inference], cores(350.0)));
        assert!(close(by_stage[&Stage::Runtime], 0.0));
        assert!(close(by_stage[&Stage::Other], 0.0));

        // A zone found at start keeps its place when it cannot be read; a new one is not added.
        fs::remove_file(r.join("sys/class/thermal/thermal_zone0/temp")).unwrap();
        write(r, "sys/class/thermal/thermal_zone3/type", "soc0-thermal\n");
        write(r, "sys/class/thermal/thermal_zone3/temp", "40000\n");
        m.sample();
        let t = m.latest().temperatures_c;
        assert_eq!(t.keys().collect::<Vec<_>>(), ["cpu-thermal", "cpu-thermal-10", "gpu-thermal", "tj-thermal"]);
        assert_eq!(t["cpu-thermal"], None);
    }

    #[test]
    fn stages_by_thread_name() {
        assert_eq!(Stage::of("cam-top"), Stage::Capture);
        assert_eq!(Stage::of("infer-surface"), Stage::Inference);
        assert_eq!(Stage::of("ort-surface"), Stage::Inference);
        assert_eq!(Stage::of(RUNTIME_THREAD_NAME), Stage::Runtime);
        assert_eq!(Stage::of("linesight"), Stage::Other);
        assert_eq!(Stage::of("MQTT queue"), Stage::Other);
    }

    #[test]
    fn the_real_machine_reads_without_error() {
        // Whatever this machine has: nothing here may panic, and /proc is always there on Linux.
        let m = Machine::new(Roots::default(), vec![("state_dir".into(), std::env::temp_dir())]);
        m.sample();
        let s = m.latest();
        assert!(s.memory_total_bytes.is_some() && s.rss_bytes.is_some());
        assert!(!s.threads.is_empty(), "this test's own thread at least");
    }
}
