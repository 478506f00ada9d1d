//! A PLC simulator on pymodbus (tests/plc/pymodbus_plc.py) driven from integration tests, and a
//! socat pty pair for Modbus RTU. pymodbus is an independent Modbus implementation: what
//! linesight writes is checked by code nobody here wrote.
//!
//! ```ignore
//! let plc = PyPlc::tcp(&[1]).await;                     // serves unit 1 on 127.0.0.1:<free port>
//! plc.set_di(0, &[true]).await;                         // the line raises an input
//! // ... run linesight against plc.addr() ...
//! let w = plc.wait_for_write(|w| w.coil(10) == Some(true), Duration::from_secs(30)).await.unwrap();
//! let t0 = plc.now_ns().await;                          // same clock as w.t_ns (CLOCK_MONOTONIC)
//! ```
//!
//! Waits in here use real time (a timer thread), never tokio's clock: they keep working in tests
//! that pause tokio's clock (`start_paused`), where a tokio timeout would fire at once while the
//! simulator, a separate process, is still answering.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};

/// Start-up (python + pymodbus import + bind) and command round trips. Generous: CI machines
/// are slow and loaded; nothing waits this long when things work.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STDERR_TAIL: usize = 60;

/// The four Modbus areas, as named in the simulator's stdin protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    Coil,
    DiscreteInput,
    Holding,
    Input,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Coil => "coil",
            Area::DiscreteInput => "di",
            Area::Holding => "hr",
            Area::Input => "ir",
        }
    }

    fn parse(s: &str) -> Area {
        match s {
            "coil" => Area::Coil,
            "di" => Area::DiscreteInput,
            "hr" => Area::Holding,
            "ir" => Area::Input,
            other => panic!("pymodbus_plc: unknown area {other:?}"),
        }
    }

    fn is_bits(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }
}

/// One write request from a Modbus client (function code 5, 6, 15, 16; also 22, 23), as the
/// simulator stored it. Writes made through the harness (`set_*`) are not reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PlcWrite {
    /// `Area::Coil` (fc 5, 15) or `Area::Holding` (fc 6, 16, 22, 23).
    pub area: Area,
    pub fc: u8,
    pub unit: u8,
    /// Protocol (0-based) address of `values[0]`.
    pub address: u16,
    /// Registers, or coils as 0/1.
    pub values: Vec<u16>,
    /// CLOCK_MONOTONIC nanoseconds (Python's `time.monotonic_ns()`), taken right after the values
    /// were stored and before the response was sent. Same clock as [`PyPlc::now_ns`],
    /// [`monotonic_ns`] and `std::time::Instant` on Linux.
    pub t_ns: u64,
    /// Wall clock (`time.time()`, seconds since the epoch) at the same moment.
    pub wall: f64,
}

impl PlcWrite {
    /// The value this write gave coil `addr`, if it wrote that coil.
    pub fn coil(&self, addr: u16) -> Option<bool> {
        if self.area != Area::Coil {
            return None;
        }
        self.value_at(addr).map(|v| v != 0)
    }

    /// The value this write gave holding register `addr`, if it wrote that register.
    pub fn hr(&self, addr: u16) -> Option<u16> {
        if self.area != Area::Holding {
            return None;
        }
        self.value_at(addr)
    }

    /// Coil values as booleans.
    pub fn bits(&self) -> Vec<bool> {
        self.values.iter().map(|&v| v != 0).collect()
    }

    fn value_at(&self, addr: u16) -> Option<u16> {
        let i = addr.checked_sub(self.address)? as usize;
        self.values.get(i).copied()
    }

    fn from_json(v: &Value) -> Option<PlcWrite> {
        Some(PlcWrite {
            area: Area::parse(v["write"].as_str()?),
            fc: v["fc"].as_u64()? as u8,
            unit: v["unit"].as_u64()? as u8,
            address: v["address"].as_u64()? as u16,
            values: v["values"].as_array()?.iter().map(json_u16).collect::<Option<_>>()?,
            t_ns: v["t_ns"].as_u64()?,
            wall: v["wall"].as_f64()?,
        })
    }
}

fn json_u16(v: &Value) -> Option<u16> {
    match v {
        Value::Bool(b) => Some(*b as u16),
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        _ => None,
    }
}

/// CLOCK_MONOTONIC nanoseconds of `t`, comparable with [`PlcWrite::t_ns`] and
/// [`PyPlc::now_ns`]. std does not expose the raw value and libc is not a dependency, so this
/// reads it from `Instant`'s Debug output (`Instant { tv_sec: .., tv_nsec: .. }` on Linux);
/// the smoke test checks it against the simulator's clock.
pub fn monotonic_ns(t: Instant) -> u64 {
    let s = format!("{t:?}");
    let field = |name: &str| -> Option<u64> {
        let rest = &s[s.find(name)? + name.len()..];
        let digits: String = rest.trim_start_matches([':', ' ']).chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    match (field("tv_sec"), field("tv_nsec")) {
        (Some(sec), Some(nsec)) => sec * 1_000_000_000 + nsec,
        _ => panic!("cannot read CLOCK_MONOTONIC from {s:?}: use PyPlc::now_ns() (the simulator's clock) instead"),
    }
}

/// [`monotonic_ns`] of now.
pub fn monotonic_ns_now() -> u64 {
    monotonic_ns(Instant::now())
}

// ---------------------------------------------------------------------------------------------
// Real-time timeouts: one timer thread for the whole test binary.

type TimerMsg = (Instant, oneshot::Sender<()>);

fn timer() -> &'static mpsc::Sender<TimerMsg> {
    static TIMER: OnceLock<mpsc::Sender<TimerMsg>> = OnceLock::new();
    TIMER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<TimerMsg>();
        std::thread::Builder::new()
            .name("pyplc-timer".into())
            .spawn(move || {
                let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
                let mut fire: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
                let mut seq = 0u64;
                loop {
                    let now = Instant::now();
                    while let Some(Reverse((t, k))) = heap.peek().copied() {
                        if t > now {
                            break;
                        }
                        heap.pop();
                        if let Some(s) = fire.remove(&k) {
                            let _ = s.send(());
                        }
                    }
                    let msg = match heap.peek() {
                        Some(Reverse((t, _))) => rx.recv_timeout(t.saturating_duration_since(now)),
                        None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    };
                    match msg {
                        Ok((t, s)) => {
                            seq += 1;
                            heap.push(Reverse((t, seq)));
                            fire.insert(seq, s);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawn the pyplc timer thread");
        tx
    })
}

/// `Some(output)`, or `None` when `d` of real time passes first (tokio's clock is not used).
pub async fn real_timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
    let (tx, rx) = oneshot::channel();
    timer().send((Instant::now() + d, tx)).expect("pyplc timer thread is gone");
    tokio::select! {
        v = f => Some(v),
        _ = rx => None,
    }
}

// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `$LINESIGHT_PYTHON` (set by scripts/env.sh), else the project venv's python.
pub fn venv_python() -> PathBuf {
    let p = std::env::var_os("LINESIGHT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache/venv/bin/python3"));
    if p.components().count() > 1 && !p.is_file() {
        panic!(
            "python with pymodbus not found at {}: run scripts/setup.sh (it creates the venv .cache/venv)",
            p.display()
        );
    }
    p
}

pub fn plc_script() -> PathBuf {
    repo().join("tests/plc/pymodbus_plc.py")
}

#[derive(Default)]
struct State {
    writes: Vec<PlcWrite>,
    pending: HashMap<u64, oneshot::Sender<Value>>,
    ready: Option<oneshot::Sender<Value>>,
    /// Lines without an id that are not writes (e.g. an error for an unparsable command).
    other: Vec<Value>,
    stderr: VecDeque<String>,
    exited: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every write and when the simulator's stdout closes.
    changed: watch::Sender<u64>,
}

impl Shared {
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn stderr_tail(&self) -> String {
        let st = self.state.lock().unwrap();
        if st.stderr.is_empty() {
            "(nothing on stderr)".into()
        } else {
            st.stderr.iter().cloned().collect::<Vec<_>>().join("\n")
        }
    }
}

/// The pymodbus PLC simulator, one child process. Killed on drop.
pub struct PyPlc {
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    addr: Option<SocketAddr>,
    device: Option<PathBuf>,
    units: Vec<u8>,
}

impl PyPlc {
    /// Modbus TCP on 127.0.0.1 and a port the simulator picks (no reservation race), serving
    /// `units` (requests to other unit ids get no answer).
    pub async fn tcp(units: &[u8]) -> PyPlc {
        PyPlc::start(&["--tcp".into(), "127.0.0.1:0".into()], units, None).await
    }

    /// Modbus RTU on `device` (e.g. [`PtyPair::b`]), 8N1. Parity none because Linux ptys refuse
    /// parity (tcsetattr with PARENB fails with EINVAL); use [`PyPlc::rtu_with`] on a real port.
    pub async fn rtu(device: &Path, baud: u32, units: &[u8]) -> PyPlc {
        PyPlc::rtu_with(device, baud, 'N', 1, units).await
    }

    /// Modbus RTU with explicit parity (`'N'`, `'E'`, `'O'`) and stop bits (1, 2).
    pub async fn rtu_with(device: &Path, baud: u32, parity: char, stopbits: u8, units: &[u8]) -> PyPlc {
        let args = [
            "--rtu".into(),
            device.display().to_string(),
            "--baud".into(),
            baud.to_string(),
            "--parity".into(),
            parity.to_string(),
            "--stopbits".into(),
            stopbits.to_string(),
        ];
        PyPlc::start(&args, units, Some(device.to_path_buf())).await
    }

    async fn start(link: &[String], units: &[u8], device: Option<PathBuf>) -> PyPlc {
        assert!(!units.is_empty(), "PyPlc: serve at least one unit id");
        let python = venv_python();
        let script = plc_script();
        let mut cmd = Command::new(&python);
        cmd.arg(&script).args(link).arg("--unit").args(units.iter().map(|u| u.to_string()));
        cmd.env("PYTHONUNBUFFERED", "1").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {} {}: {e}: run scripts/setup.sh (it creates the venv)",
                python.display(),
                script.display()
            )
        });
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdin = child.stdin.take().unwrap();

        let (ready_tx, ready_rx) = oneshot::channel();
        let (changed, _) = watch::channel(0u64);
        let shared =
            Arc::new(Shared { state: Mutex::new(State { ready: Some(ready_tx), ..Default::default() }), changed });

        let sh = shared.clone();
        std::thread::Builder::new()
            .name("pyplc-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        eprintln!("[pyplc] unexpected stdout line: {line}");
                        continue;
                    };
                    let mut st = sh.state.lock().unwrap();
                    if v.get("write").is_some() {
                        match PlcWrite::from_json(&v) {
                            Some(w) => st.writes.push(w),
                            None => eprintln!("[pyplc] malformed write line: {line}"),
                        }
                        drop(st);
                        sh.bump();
                    } else if let Some(id) = v.get("id").and_then(Value::as_u64) {
                        if let Some(tx) = st.pending.remove(&id) {
                            let _ = tx.send(v);
                        }
                    } else if v.get("ready").is_some() {
                        if let Some(tx) = st.ready.take() {
                            let _ = tx.send(v);
                        }
                    } else {
                        st.other.push(v);
                    }
                }
                let mut st = sh.state.lock().unwrap();
                st.exited = true;
                st.pending.clear(); // waiters see their sender dropped
                st.ready = None;
                drop(st);
                sh.bump();
            })
            .expect("spawn the pyplc stdout thread");

        let sh = shared.clone();
        std::thread::Builder::new()
            .name("pyplc-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[pyplc] {line}");
                    let mut st = sh.state.lock().unwrap();
                    if st.stderr.len() == STDERR_TAIL {
                        st.stderr.pop_front();
                    }
                    st.stderr.push_back(line);
                }
            })
            .expect("spawn the pyplc stderr thread");

        let mut plc = PyPlc {
            child: Mutex::new(child),
            stdin: Mutex::new(Some(stdin)),
            shared,
            next_id: AtomicU64::new(1),
            addr: None,
            device,
            units: units.to_vec(),
        };
        let ready = match real_timeout(START_TIMEOUT, ready_rx).await {
            Some(Ok(v)) => v,
            Some(Err(_)) => plc.fail("exited before it was ready (is pymodbus installed? run scripts/setup.sh)"),
            None => plc.fail(&format!("not ready within {START_TIMEOUT:?}")),
        };
        if let Some(port) = ready["port"].as_u64() {
            plc.addr = Some(SocketAddr::from(([127, 0, 0, 1], port as u16)));
        }
        plc
    }

    /// Panic with what the simulator said on stderr and its exit status.
    fn fail(&self, what: &str) -> ! {
        // Give a dying process a moment so its status and last stderr lines are in.
        let status = {
            let mut child = self.child.lock().unwrap();
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match child.try_wait() {
                    Ok(Some(s)) => break format!("{s}"),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Ok(None) => break "still running".to_string(),
                    Err(e) => break format!("unknown ({e})"),
                }
            }
        };
        panic!(
            "pymodbus PLC simulator ({}) {what}; status: {status}; its stderr:\n{}",
            plc_script().display(),
            self.shared.stderr_tail()
        );
    }

    /// TCP address (127.0.0.1:port). Panics for an RTU simulator.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("PyPlc::addr(): this simulator serves RTU, not TCP")
    }

    /// Serial device of an RTU simulator.
    pub fn device(&self) -> Option<&Path> {
        self.device.as_deref()
    }

    pub fn units(&self) -> &[u8] {
        &self.units
    }

    /// Send one command and wait for its reply (matched by id). Panics on an `{"error":..}`
    /// reply, on timeout, or when the simulator is gone.
    pub async fn request(&self, mut cmd: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        cmd["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state.lock().unwrap();
            if st.exited {
                drop(st);
                self.fail(&format!("is gone (command {cmd})"));
            }
            st.pending.insert(id, tx);
        }
        let sent = {
            let mut stdin = self.stdin.lock().unwrap();
            match stdin.as_mut() {
                Some(s) => writeln!(s, "{cmd}").and_then(|_| s.flush()).map_err(|e| e.to_string()),
                None => Err("stdin already closed".to_string()),
            }
        };
        if let Err(e) = sent {
            self.fail(&format!("did not take command {cmd}: {e}"));
        }
        match real_timeout(REQUEST_TIMEOUT, rx).await {
            Some(Ok(v)) => {
                if let Some(e) = v.get("error") {
                    panic!("pymodbus PLC simulator refused {cmd}: {e}");
                }
                v
            }
            Some(Err(_)) => self.fail(&format!("exited while answering {cmd}")),
            None => self.fail(&format!("did not answer {cmd} within {REQUEST_TIMEOUT:?}")),
        }
    }

    /// Round trip through the simulator. Every write line it printed before is in
    /// [`PyPlc::writes`] once this returns: a client write whose response has arrived is listed.
    pub async fn ping(&self) {
        let id = self.next_id.load(Ordering::Relaxed);
        let v = self.request(json!({ "ping": id })).await;
        assert_eq!(v["pong"], json!(id), "pong {v}");
    }

    /// Same as [`PyPlc::ping`].
    pub async fn sync(&self) {
        self.ping().await
    }

    /// The simulator's CLOCK_MONOTONIC in ns (Python's `time.monotonic_ns()`).
    pub async fn now_ns(&self) -> u64 {
        self.request(json!({"now": true})).await["now_ns"].as_u64().expect("now_ns")
    }

    /// Write `values` into `area` of `unit`. Bits as 0/1. Not reported as a client write.
    pub async fn set_on(&self, unit: u8, area: Area, addr: u16, values: &[u16]) {
        let vals: Vec<Value> = values.iter().map(|&v| if area.is_bits() { json!(v != 0) } else { json!(v) }).collect();
        self.request(json!({"set": area.as_str(), "address": addr, "values": vals, "unit": unit})).await;
    }

    /// Read `count` values of `area` of `unit` (bits as 0/1).
    pub async fn get_on(&self, unit: u8, area: Area, addr: u16, count: u16) -> Vec<u16> {
        let v = self.request(json!({"get": area.as_str(), "address": addr, "count": count, "unit": unit})).await;
        v["values"].as_array().expect("values").iter().map(|x| json_u16(x).expect("value")).collect()
    }

    fn unit0(&self) -> u8 {
        self.units[0]
    }

    fn bits(v: &[bool]) -> Vec<u16> {
        v.iter().map(|&b| b as u16).collect()
    }

    /// The `set_*`/`get_*` helpers address the first served unit.
    pub async fn set_di(&self, addr: u16, v: &[bool]) {
        self.set_on(self.unit0(), Area::DiscreteInput, addr, &Self::bits(v)).await
    }
    pub async fn set_coils(&self, addr: u16, v: &[bool]) {
        self.set_on(self.unit0(), Area::Coil, addr, &Self::bits(v)).await
    }
    pub async fn set_ir(&self, addr: u16, v: &[u16]) {
        self.set_on(self.unit0(), Area::Input, addr, v).await
    }
    pub async fn set_hr(&self, addr: u16, v: &[u16]) {
        self.set_on(self.unit0(), Area::Holding, addr, v).await
    }
    pub async fn get_hr(&self, addr: u16, count: u16) -> Vec<u16> {
        self.get_on(self.unit0(), Area::Holding, addr, count).await
    }
    pub async fn get_ir(&self, addr: u16, count: u16) -> Vec<u16> {
        self.get_on(self.unit0(), Area::Input, addr, count).await
    }
    pub async fn get_coils(&self, addr: u16, count: u16) -> Vec<bool> {
        self.get_on(self.unit0(), Area::Coil, addr, count).await.into_iter().map(|v| v != 0).collect()
    }
    pub async fn get_di(&self, addr: u16, count: u16) -> Vec<bool> {
        self.get_on(self.unit0(), Area::DiscreteInput, addr, count).await.into_iter().map(|v| v != 0).collect()
    }

    /// From now on, requests with function code `fc` whose range covers `address` (any served
    /// unit) are answered with Modbus exception `code` (1-8, 10, 11), until [`clear_exceptions`].
    /// A write answered with an exception is not stored and not reported.
    ///
    /// [`clear_exceptions`]: PyPlc::clear_exceptions
    pub async fn exception(&self, fc: u8, address: u16, code: u8) {
        self.request(json!({"exception": {"fc": fc, "address": address, "code": code}})).await;
    }

    pub async fn clear_exceptions(&self) {
        self.request(json!({"clear_exceptions": true})).await;
    }

    /// For `d` from now, requests get no answer at all (they are dropped, not queued: a write
    /// sent meanwhile is not stored). `Duration::ZERO` ends a stall early.
    pub async fn stall(&self, d: Duration) {
        self.request(json!({ "stall": d.as_secs_f64() })).await;
    }

    /// All client writes received so far, in order. Call [`PyPlc::sync`] first to be sure the
    /// writes whose responses a client already has are in.
    pub fn writes(&self) -> Vec<PlcWrite> {
        self.shared.state.lock().unwrap().writes.clone()
    }

    /// Forget the writes received so far.
    pub fn clear_writes(&self) {
        self.shared.state.lock().unwrap().writes.clear();
    }

    /// The first write (received so far or arriving within `timeout`) that matches `pred`.
    /// `None` on timeout or when the simulator is gone.
    pub async fn wait_for_write(&self, pred: impl Fn(&PlcWrite) -> bool, timeout: Duration) -> Option<PlcWrite> {
        let mut rx = self.shared.changed.subscribe();
        let mut seen = 0;
        real_timeout(timeout, async {
            loop {
                rx.borrow_and_update();
                {
                    let st = self.shared.state.lock().unwrap();
                    seen = seen.min(st.writes.len()); // clear_writes() meanwhile
                    if let Some(w) = st.writes[seen..].iter().find(|w| pred(w)) {
                        return Some(w.clone());
                    }
                    seen = st.writes.len();
                    if st.exited {
                        return None;
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .flatten()
    }

    /// Lines the simulator printed that were neither replies nor writes.
    pub fn other_lines(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().other.clone()
    }

    /// The simulator's recent stderr.
    pub fn stderr(&self) -> String {
        self.shared.stderr_tail()
    }

    /// Close its stdin (the simulator exits cleanly on EOF) and wait for the exit, killing it
    /// after `timeout`. Returns `None` if it had to be killed.
    pub fn shutdown(&self, timeout: Duration) -> Option<ExitStatus> {
        self.stdin.lock().unwrap().take();
        self.wait_exit(timeout)
    }

    /// SIGTERM (via kill(1): libc is not a dependency), then as [`PyPlc::shutdown`].
    pub fn terminate(&self, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.child.lock().unwrap().id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        self.wait_exit(timeout)
    }

    fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.lock().unwrap();
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PyPlc {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------

/// Two connected ptys made by socat (`a` for the client, `b` for the simulator, or the other
/// way round), as symlinks in a private temporary folder. socat is stopped on drop, and also when
/// the test process dies without dropping it: socat runs under a small shell that kills it when
/// its stdin (a pipe from this process) closes.
pub struct PtyPair {
    pub a: PathBuf,
    pub b: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

const SOCAT_UNDER_SH: &str = r#"socat "$@" </dev/null & pid=$!
read -r _ || true
kill "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit 0"#;

impl PtyPair {
    /// Returns once socat has both ptys open and is relaying ("starting data transfer loop").
    pub fn new() -> PtyPair {
        match Command::new("socat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Ok(_) => {}
            Err(e) => panic!("cannot run socat: {e}: run scripts/setup.sh (Debian package socat)"),
        }
        let dir = tempfile::Builder::new().prefix("linesight-pty-").tempdir().expect("temp dir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        let mut child = Command::new("sh")
            .args(["-c", SOCAT_UNDER_SH, "sh", "-d", "-d"])
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sh for socat: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("socat-stderr".into())
            .spawn(move || {
                let mut log = Vec::new();
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(t) = tx.take() {
                        if line.contains("starting data transfer loop") {
                            let _ = t.send(Ok(()));
                            continue;
                        }
                        log.push(line.clone());
                        if line.contains("] E ") {
                            let _ = t.send(Err(log.join("\n")));
                            continue;
                        }
                        tx = Some(t);
                    }
                    // After start-up socat's notices are not needed; the pipe is still drained.
                }
                if let Some(t) = tx {
                    let _ = t.send(Err(log.join("\n")));
                }
            })
            .expect("spawn the socat stderr thread");
        let outcome = rx.recv_timeout(START_TIMEOUT);
        let linked = a.exists() && b.exists();
        let pair = PtyPair { a, b, child, _dir: dir };
        match outcome {
            Ok(Ok(())) if linked => pair,
            other => {
                panic!("socat did not make the pty pair ({} and {}): {other:?}", pair.a.display(), pair.b.display())
            }
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        // Closing the shell's stdin makes it kill socat and exit; kill the shell if it lingers.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.child.try_wait() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.wait();
    }
}
