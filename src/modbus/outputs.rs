//! The declared outputs and the devices behind them.
//!
//! This is the only place in linesight that hands out the right to write to
//! a device, and it only hands out what the config declares: callers hold an
//! [`OutputHandle`] or a [`RegisterHandle`] for a named output, never an
//! address. Every write is logged (target `linesight::audit`) and
//! rate-limited, so a runaway loop or a flood of commands cannot hammer a PLC.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::bus::{Bus, Device, ReadData};
use super::link::{Link, LinkError, ModbusLink, Transport};
use crate::config::{wire_address, Level, ModbusConfig, ModbusDeviceConfig, OutputArea, PointArea};
use crate::part::actuator::{Actuator, Written};

/// A token bucket: `rate` writes per second on average, `burst` at once.
#[derive(Debug)]
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: f64, burst: f64) -> Self {
        RateLimit { rate, burst, tokens: burst, last: Instant::now() }
    }

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Writes per second one output may take, on average and in a burst. A
/// reject gate at 50 parts/s needs 100 (on and off); more is a bug.
pub const OUTPUT_RATE: (f64, f64) = (200.0, 50.0);

/// A handle to one declared on/off output.
#[derive(Clone)]
pub struct OutputHandle {
    pub name: Arc<str>,
    pub device: Device,
    area: OutputArea,
    address: u16,
    pub safe_state: Level,
    limit: Arc<Mutex<RateLimit>>,
    /// The last writes' times from the call to the device acting on it.
    reach: Arc<Mutex<std::collections::VecDeque<Duration>>>,
}

/// Writes whose reach is kept: the lead is their median.
const REACH_KEPT: usize = 32;
/// The most a gate is told to send early: beyond this a link is broken rather than slow.
const MAX_LEAD: Duration = Duration::from_millis(20);

impl OutputHandle {
    /// Drive the output on or off and wait for the device's acknowledgement.
    pub async fn set(&self, on: bool) -> Result<(), LinkError> {
        if !self.limit.lock().unwrap_or_else(|p| p.into_inner()).allow() {
            tracing::warn!(target: "linesight::audit", output = %self.name, on, "write refused: above the rate limit");
            return Err(LinkError::Refused(format!("output `{}` is written faster than its rate limit", self.name)));
        }
        let called = Instant::now();
        let (result, at) = match self.area {
            OutputArea::Coil => self.device.write_coil_timed(self.address, on).await,
            OutputArea::HoldingRegister => self.device.write_register_timed(self.address, u16::from(on)).await,
        };
        if let (Ok(()), Some(at)) = (&result, at) {
            let mut r = self.reach.lock().unwrap_or_else(|p| p.into_inner());
            r.push_back(at.saturating_duration_since(called));
            if r.len() > REACH_KEPT {
                r.pop_front();
            }
        }
        tracing::debug!(target: "linesight::audit", output = %self.name, device = %self.device.name, address = self.address, on, ok = result.is_ok(), "write");
        result
    }

    pub async fn to_safe_state(&self) -> Result<(), LinkError> {
        self.set(self.safe_state.is_on()).await
    }

    /// Write the safe state and read it back: confirmed only when the device holds it.
    pub async fn confirm_safe(&self) -> Result<(), String> {
        self.to_safe_state().await.map_err(|e| e.to_string())?;
        let safe = self.safe_state.is_on();
        let held = match self.area {
            OutputArea::Coil => match self.device.read(PointArea::Coil, self.address, 1).await {
                Ok(ReadData::Bits(b)) => b.first().copied(),
                Ok(_) => None,
                Err(e) => return Err(format!("written, but the read-back failed: {e}")),
            },
            OutputArea::HoldingRegister => match self.device.read(PointArea::HoldingRegister, self.address, 1).await {
                Ok(ReadData::Words(w)) => w.first().map(|v| *v != 0),
                Ok(_) => None,
                Err(e) => return Err(format!("written, but the read-back failed: {e}")),
            },
        };
        match held {
            Some(h) if h == safe => Ok(()),
            Some(h) => Err(format!("written, but the device reads back {}", if h { "on" } else { "off" })),
            None => Err("written, but the read-back had no value".into()),
        }
    }
}

/// A reject gate drives its output through [`Actuator`]: decision does no I/O of its own.
impl Actuator for OutputHandle {
    fn name(&self) -> &str {
        &self.name
    }

    fn set(&self, on: bool) -> Written<'_> {
        Box::pin(async move { OutputHandle::set(self, on).await.map_err(|e| e.to_string()) })
    }

    /// The median time from a write's call to the device acting on it (the wait behind a poll in
    /// flight, half the round trip), over the last writes; at most `MAX_LEAD`.
    fn lead(&self) -> Duration {
        let r = self.reach.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_empty() {
            return Duration::ZERO;
        }
        let mut v: Vec<Duration> = r.iter().copied().collect();
        v.sort();
        v[v.len() / 2].min(MAX_LEAD)
    }
}

/// A handle to a declared block of holding registers (the heartbeat, a
/// result block, a writable point): it can write inside its block only.
#[derive(Clone)]
pub struct RegisterHandle {
    pub name: Arc<str>,
    pub device: Device,
    /// First protocol address of the block.
    pub address: u16,
    pub len: u16,
    limit: Arc<Mutex<RateLimit>>,
}

impl RegisterHandle {
    /// Write `values` at `offset` within the block (one request).
    pub async fn write(&self, offset: u16, values: Vec<u16>) -> Result<(), LinkError> {
        let n = values.len() as u16;
        if n == 0 || offset.checked_add(n).map_or(true, |end| end > self.len) {
            // A bug, not a device problem: never write outside the declared block.
            tracing::error!(target: "linesight::audit", output = %self.name, offset, n, "write outside the declared block refused");
            return Err(LinkError::Refused(format!("write outside output `{}` refused", self.name)));
        }
        if !self.limit.lock().unwrap_or_else(|p| p.into_inner()).allow() {
            tracing::warn!(target: "linesight::audit", output = %self.name, "write refused: above the rate limit");
            return Err(LinkError::Refused(format!("output `{}` is written faster than its rate limit", self.name)));
        }
        let address = self.address + offset;
        let result = if n == 1 {
            self.device.write_register(address, values[0]).await
        } else {
            self.device.write_registers(address, values.clone()).await
        };
        tracing::debug!(target: "linesight::audit", output = %self.name, device = %self.device.name, address, ?values, ok = result.is_ok(), "write");
        result
    }

    /// Read registers of the block back (the PLC's acknowledgement).
    pub async fn read(&self, offset: u16, count: u16) -> Result<Vec<u16>, LinkError> {
        match self.device.read(crate::config::PointArea::HoldingRegister, self.address + offset, count).await? {
            super::bus::ReadData::Words(w) => Ok(w),
            super::bus::ReadData::Bits(_) => Err(LinkError::Down("bits where registers were asked".into())),
        }
    }
}

/// Every device and every declared output, by name.
#[derive(Clone, Default)]
pub struct Outputs {
    outputs: BTreeMap<String, OutputHandle>,
    registers: BTreeMap<String, RegisterHandle>,
    /// Writable coil points: device, protocol address, rate limit.
    coil_points: BTreeMap<String, (Device, u16, Arc<Mutex<RateLimit>>)>,
    pub devices: BTreeMap<String, Device>,
}

/// What a link connects to, and under which name it is reported.
pub fn transport_of(name: &str, dev: &ModbusDeviceConfig) -> (String, Transport) {
    match (&dev.tcp, &dev.rtu) {
        (Some(tcp), _) => (name.to_string(), Transport::Tcp(tcp.clone())),
        (None, Some(rtu)) => (rtu.port.display().to_string(), Transport::Rtu(rtu.clone())),
        (None, None) => (name.to_string(), Transport::Tcp(String::new())),
    }
}

impl Outputs {
    /// Start one bus task per TCP device and per serial port, with real links.
    pub fn start(modbus: &ModbusConfig) -> Self {
        Self::start_with(modbus, |bus_name, transport, dev| {
            let gap = dev.gap.map(|g| g.get()).unwrap_or_else(|| transport.default_gap());
            Link::new(bus_name, transport.clone(), dev.timeout.get().max(Duration::from_millis(500)), gap)
        })
    }

    /// Start with links from `make_link` (tests pass a recording double).
    /// Devices on one serial port share one bus, hence one link.
    pub fn start_with<L, F>(modbus: &ModbusConfig, mut make_link: F) -> Self
    where
        L: ModbusLink,
        F: FnMut(&str, &Transport, &ModbusDeviceConfig) -> L,
    {
        let mut buses: BTreeMap<String, Bus> = BTreeMap::new();
        let mut devices = BTreeMap::new();
        for (name, dev) in &modbus.devices {
            let (bus_name, transport) = transport_of(name, dev);
            let bus = buses
                .entry(bus_name.clone())
                .or_insert_with(|| Bus::spawn(make_link(&bus_name, &transport, dev)).0)
                .clone();
            devices.insert(name.clone(), Device::new(name, dev.unit, dev.timeout.get(), bus));
        }
        let mut outputs = BTreeMap::new();
        for (name, out) in &modbus.outputs {
            let (Some(device), Some(dev)) = (devices.get(&out.device), modbus.devices.get(&out.device)) else {
                continue; // validation guarantees the device exists
            };
            outputs.insert(
                name.clone(),
                OutputHandle {
                    name: name.as_str().into(),
                    device: device.clone(),
                    area: out.area,
                    address: wire_address(dev.addressing, out.address),
                    safe_state: out.safe_state,
                    limit: Arc::new(Mutex::new(RateLimit::new(OUTPUT_RATE.0, OUTPUT_RATE.1))),
                    reach: Default::default(),
                },
            );
        }
        let mut registers = BTreeMap::new();
        let mut block = |name: String, device: &str, address: u32, len: u32, rate: (f64, f64)| {
            if let (Some(d), Some(cfg)) = (devices.get(device), modbus.devices.get(device)) {
                registers.insert(
                    name.clone(),
                    RegisterHandle {
                        name: name.into(),
                        device: d.clone(),
                        address: wire_address(cfg.addressing, address),
                        len: len as u16,
                        limit: Arc::new(Mutex::new(RateLimit::new(rate.0, rate.1))),
                    },
                );
            }
        };
        if let Some(hb) = &modbus.heartbeat {
            block("heartbeat".into(), &hb.device, hb.address, 1, OUTPUT_RATE);
        }
        if let Some(fw) = &modbus.fault_word {
            block("fault_word".into(), &fw.device, fw.address, 1, OUTPUT_RATE);
        }
        for (name, rb) in &modbus.result_blocks {
            block(
                format!("result_blocks.{name}"),
                &rb.device,
                rb.address,
                crate::config::RESULT_BLOCK_REGISTERS,
                OUTPUT_RATE,
            );
        }
        let mut coil_points = BTreeMap::new();
        for (name, p) in &modbus.points {
            if p.writable && p.area == crate::config::PointArea::HoldingRegister {
                let len = p.value_type().registers(p.length).max(1);
                block(format!("points.{name}"), &p.device, p.address, u32::from(len), COMMAND_RATE);
            }
            if let (true, crate::config::PointArea::Coil, Some(d), Some(cfg)) =
                (p.writable, p.area, devices.get(&p.device), modbus.devices.get(&p.device))
            {
                let limit = Arc::new(Mutex::new(RateLimit::new(COMMAND_RATE.0, COMMAND_RATE.1)));
                coil_points.insert(name.clone(), (d.clone(), wire_address(cfg.addressing, p.address), limit));
            }
        }
        Outputs { outputs, registers, coil_points, devices }
    }

    pub fn get(&self, name: &str) -> Option<&OutputHandle> {
        self.outputs.get(name)
    }

    /// The heartbeat register, if declared.
    pub fn heartbeat(&self) -> Option<&RegisterHandle> {
        self.registers.get("heartbeat")
    }

    /// The fault word's register, if declared.
    pub fn fault_word(&self) -> Option<&RegisterHandle> {
        self.registers.get("fault_word")
    }

    /// A declared result block.
    pub fn result_block(&self, name: &str) -> Option<&RegisterHandle> {
        self.registers.get(&format!("result_blocks.{name}"))
    }

    /// A writable holding-register point.
    pub fn point_register(&self, name: &str) -> Option<&RegisterHandle> {
        self.registers.get(&format!("points.{name}"))
    }

    /// Set a point the config marks writable, from a command's value.
    /// Anything else is refused: this is the only way a command writes.
    pub async fn write_point(
        &self,
        name: &str,
        spec: &super::codec::PointSpec,
        value: &serde_json::Value,
    ) -> Result<(), String> {
        if let Some((device, address, limit)) = self.coil_points.get(name) {
            let on = super::codec::encode_bit(value)?;
            if !limit.lock().unwrap_or_else(|p| p.into_inner()).allow() {
                return Err(format!("point `{name}` is written faster than its rate limit ({} per s)", COMMAND_RATE.0));
            }
            let r = device.write_coil(*address, on).await;
            tracing::info!(target: "linesight::audit", point = %name, device = %device.name, address, on, ok = r.is_ok(), "write");
            return r.map_err(|e| format!("device `{}`: {e}", device.name));
        }
        let Some(reg) = self.point_register(name) else {
            return Err(format!("point `{name}` is not writable: the config does not mark it `writable`"));
        };
        if spec.bit.is_some() {
            return Err(format!("point `{name}` is one bit of a register; writing it would race the PLC"));
        }
        within_limits(name, spec, value)?;
        let words = super::codec::encode_registers(spec, value)?;
        tracing::info!(target: "linesight::audit", point = %name, value = %value, "set-point");
        reg.write(0, words).await.map_err(|e| format!("device `{}`: {e}", reg.device.name))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.outputs.keys().map(String::as_str)
    }

    /// Drive every on/off output to its safe state, all in parallel; returns the failures.
    pub async fn all_to_safe_state(&self) -> Vec<(String, LinkError)> {
        self.to_safe_state(|_| true).await
    }

    /// Drive every output to its safe state and read each back, retrying the ones not yet
    /// confirmed until `deadline`; returns the outputs still not confirmed, with why.
    pub async fn confirm_all_safe(&self, deadline: Instant) -> Vec<(String, String)> {
        let mut pending: Vec<(String, OutputHandle)> =
            self.outputs.iter().map(|(n, h)| (n.clone(), h.clone())).collect();
        let mut failures = Vec::new();
        while !pending.is_empty() {
            let mut set = tokio::task::JoinSet::new();
            for (name, h) in pending.drain(..) {
                set.spawn(async move {
                    let r = h.confirm_safe().await;
                    (name, h, r)
                });
            }
            let until = tokio::time::timeout_at(deadline, async {
                let mut round = Vec::new();
                while let Some(Ok(r)) = set.join_next().await {
                    round.push(r);
                }
                round
            });
            let Ok(round) = until.await else {
                // Out of time with writes in flight: whatever did not answer is unconfirmed.
                failures.push(("(some outputs)".to_string(), "no answer before the stop deadline".to_string()));
                return failures;
            };
            failures.clear();
            for (name, h, r) in round {
                if let Err(why) = r {
                    failures.push((name.clone(), why));
                    pending.push((name, h));
                }
            }
            if pending.is_empty() || Instant::now() + RETRY_SAFE >= deadline {
                break;
            }
            tokio::time::sleep(RETRY_SAFE).await;
        }
        failures
    }

    /// Drive the outputs `which` selects to their safe state; returns the failures.
    pub async fn to_safe_state(&self, which: impl Fn(&str) -> bool) -> Vec<(String, LinkError)> {
        let mut set = tokio::task::JoinSet::new();
        for (name, h) in self.outputs.iter().filter(|(n, _)| which(n)) {
            let h = h.clone();
            let name = name.clone();
            set.spawn(async move { (name, h.to_safe_state().await) });
        }
        let mut failures = Vec::new();
        while let Some(res) = set.join_next().await {
            if let Ok((name, Err(e))) = res {
                tracing::error!(output = %name, error = %e, "output could not be driven to its safe state");
                failures.push((name, e));
            }
        }
        failures
    }
}

/// Between rounds of safe-state writes that were not confirmed.
const RETRY_SAFE: Duration = Duration::from_millis(250);

/// A writable number's value against its engineering limits (`min`, `max`), before anything is
/// encoded or sent. A number without limits is refused: check-config requires them.
fn within_limits(name: &str, spec: &super::codec::PointSpec, value: &serde_json::Value) -> Result<(), String> {
    use crate::config::PointType;
    if matches!(spec.ty, PointType::Bool | PointType::String) {
        return Ok(());
    }
    let Some((min, max)) = spec.limits else {
        return Err(format!(
            "point `{name}` has no engineering limits: set `modbus.points.{name}.min` and `max` in the config"
        ));
    };
    let Some(v) = value.as_f64() else {
        return Err(format!("point `{name}` takes a number, not {value}"));
    };
    if !(v >= min && v <= max) {
        return Err(format!(
            "set-point refused: {v} is outside the limits of point `{name}`, {min} to {max} (`modbus.points.{name}.min` and `max`); nothing was written; to write it, change the limits in the config"
        ));
    }
    Ok(())
}

/// Writes per second a remote command may make to one writable point.
pub const COMMAND_RATE: (f64, f64) = (5.0, 5.0);

#[cfg(test)]
pub(crate) mod testing {
    //! A recording link for unit tests.
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio_modbus::{Request, Response};

    /// One write: when, protocol address, values (a coil as 0/1).
    pub type Write = (tokio::time::Instant, u16, Vec<u16>);

    #[derive(Clone, Default)]
    pub struct Recorder {
        pub writes: Arc<Mutex<Vec<Write>>>,
        /// Holding registers the "PLC" holds, for reads.
        pub registers: Arc<Mutex<BTreeMap<u16, u16>>>,
        pub fail: Arc<AtomicBool>,
    }

    /// The outputs a `modbus:` section declares, every device behind one
    /// shared recorder. `modbus` is the section's body, indented two spaces.
    pub fn recorded(modbus: &str) -> (Recorder, Outputs) {
        let yaml = format!(
            "node: {{ group_id: g, node_id: n }}\nmodbus:\n{modbus}\ncameras: {{}}\nmodels: {{}}\ntasks: {{}}\n"
        );
        // Only the Modbus part matters here: build the struct without file checks.
        let cfg: crate::config::Config =
            crate::config::yaml::from_node(&crate::config::yaml::parse(&yaml).unwrap()).unwrap();
        let rec = Recorder::default();
        let rec2 = rec.clone();
        let outputs = Outputs::start_with(&cfg.modbus, move |_, _, _| rec2.clone());
        (rec, outputs)
    }

    impl ModbusLink for Recorder {
        async fn call(
            &mut self,
            _unit: u8,
            request: Request<'static>,
            _limit: Duration,
        ) -> Result<Response, LinkError> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(LinkError::Down("test link down".into()));
            }
            let now = tokio::time::Instant::now();
            let mut regs = self.registers.lock().unwrap();
            Ok(match request {
                Request::WriteSingleCoil(a, on) => {
                    self.writes.lock().unwrap().push((now, a, vec![u16::from(on)]));
                    Response::WriteSingleCoil(a, on)
                }
                Request::WriteSingleRegister(a, v) => {
                    self.writes.lock().unwrap().push((now, a, vec![v]));
                    regs.insert(a, v);
                    Response::WriteSingleRegister(a, v)
                }
                Request::WriteMultipleRegisters(a, v) => {
                    for (i, x) in v.iter().enumerate() {
                        regs.insert(a + i as u16, *x);
                    }
                    self.writes.lock().unwrap().push((now, a, v.to_vec()));
                    Response::WriteMultipleRegisters(a, v.len() as u16)
                }
                Request::ReadHoldingRegisters(a, n) => {
                    Response::ReadHoldingRegisters((0..n).map(|i| regs.get(&(a + i)).copied().unwrap_or(0)).collect())
                }
                Request::ReadInputRegisters(_, n) => Response::ReadInputRegisters(vec![0; n as usize]),
                Request::ReadCoils(_, n) => Response::ReadCoils(vec![false; n as usize]),
                Request::ReadDiscreteInputs(_, n) => Response::ReadDiscreteInputs(vec![false; n as usize]),
                other => return Err(LinkError::Refused(format!("test double does not serve {other:?}"))),
            })
        }
        fn is_connected(&self) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::recorded;
    use crate::modbus::codec::PointSpec;
    use serde_json::json;

    const SECTION: &str = "  devices: { plc: { tcp: \"127.0.0.1:502\" } }\n  points:\n    speed: { device: plc, area: holding-register, address: 40, type: u16, scale: 0.01, poll: 1s, writable: true, min: 0.2, max: 1.5 }\n    bare: { device: plc, area: holding-register, address: 41, type: u16, poll: 1s, writable: true }";

    fn spec(name: &str) -> PointSpec {
        let yaml = format!(
            "node: {{ group_id: g, node_id: n }}\nmodbus:\n{SECTION}\ncameras: {{}}\nmodels: {{}}\ntasks: {{}}\n"
        );
        let cfg: crate::config::Config =
            crate::config::yaml::from_node(&crate::config::yaml::parse(&yaml).unwrap()).unwrap();
        PointSpec::from_config(&cfg.modbus.points[name], &cfg.modbus.devices["plc"])
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_outside_the_limits_is_refused_and_never_sent() {
        let (rec, outputs) = recorded(SECTION);
        let speed = spec("speed");
        for v in [json!(1.6), json!(0.1), json!(-3), json!(1e9)] {
            let e = outputs.write_point("speed", &speed, &v).await.unwrap_err();
            assert!(e.contains("outside the limits of point `speed`, 0.2 to 1.5"), "{e}");
            assert!(e.contains("`modbus.points.speed.min` and `max`"), "{e}");
        }
        assert!(rec.writes.lock().unwrap().is_empty(), "a refused value never reaches the device");
        outputs.write_point("speed", &speed, &json!(1.5)).await.unwrap();
        outputs.write_point("speed", &speed, &json!(0.2)).await.unwrap();
        let writes: Vec<Vec<u16>> = rec.writes.lock().unwrap().iter().map(|(_, _, v)| v.clone()).collect();
        assert_eq!(writes, vec![vec![150], vec![20]], "the limits are inclusive, in engineering units");
        // A writable number without limits (check-config refuses it) is never written either.
        let e = outputs.write_point("bare", &spec("bare"), &json!(1)).await.unwrap_err();
        assert!(e.contains("no engineering limits"), "{e}");
        assert_eq!(rec.writes.lock().unwrap().len(), 2);
    }
}
