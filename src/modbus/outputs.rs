//! The declared outputs, and the one task per device that writes them.
//!
//! This is the only place in linesight that writes to a device, and it can
//! only write the outputs the config declares: callers hold an
//! [`OutputHandle`] for a named output, never an address.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::link::{LinkError, ModbusLink, TcpLink};
use crate::config::{wire_address, Config, Level, OutputArea};

struct WriteCmd {
    output: Arc<str>,
    area: OutputArea,
    address: u16,
    on: bool,
    reply: oneshot::Sender<Result<(), LinkError>>,
}

/// Per-device link state and counters, read by telemetry.
#[derive(Debug, Default)]
pub struct DeviceStats {
    pub connected: AtomicBool,
    pub writes: AtomicU64,
    pub failures: AtomicU64,
}

/// A handle to one declared output.
#[derive(Clone)]
pub struct OutputHandle {
    pub name: Arc<str>,
    pub device: Arc<str>,
    area: OutputArea,
    address: u16,
    pub safe_state: Level,
    tx: mpsc::Sender<WriteCmd>,
}

impl OutputHandle {
    /// Drive the output on or off and wait for the device's acknowledgement.
    pub async fn set(&self, on: bool) -> Result<(), LinkError> {
        let (reply, rx) = oneshot::channel();
        let cmd = WriteCmd { output: self.name.clone(), area: self.area, address: self.address, on, reply };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| LinkError::Down(format!("device task for `{}` has stopped", self.device)))?;
        rx.await.unwrap_or_else(|_| Err(LinkError::Down(format!("device task for `{}` has stopped", self.device))))
    }

    pub async fn to_safe_state(&self) -> Result<(), LinkError> {
        self.set(self.safe_state.is_on()).await
    }
}

/// Every declared output, by name, and the device tasks behind them.
#[derive(Clone, Default)]
pub struct Outputs {
    outputs: BTreeMap<String, OutputHandle>,
    pub devices: BTreeMap<String, Arc<DeviceStats>>,
}

impl Outputs {
    /// Start one task per device with a real TCP link.
    pub fn start(config: &Config) -> Self {
        Self::start_with(config, |name, dev| TcpLink::new(name, &dev.tcp, dev.unit, dev.timeout.get()))
    }

    /// Start with links from `make_link` (tests pass a recording double).
    pub fn start_with<L, F>(config: &Config, mut make_link: F) -> Self
    where
        L: ModbusLink,
        F: FnMut(&str, &crate::config::ModbusDeviceConfig) -> L,
    {
        let mut senders = BTreeMap::new();
        let mut devices = BTreeMap::new();
        for (name, dev) in &config.modbus.devices {
            let used = config.modbus.outputs.values().any(|o| &o.device == name);
            if !used {
                continue;
            }
            let (tx, rx) = mpsc::channel(64);
            let stats = Arc::new(DeviceStats::default());
            tokio::spawn(device_task(name.clone(), make_link(name, dev), rx, stats.clone()));
            senders.insert(name.clone(), tx);
            devices.insert(name.clone(), stats);
        }
        let mut outputs = BTreeMap::new();
        for (name, out) in &config.modbus.outputs {
            let (Some(tx), Some(dev)) = (senders.get(&out.device), config.modbus.devices.get(&out.device)) else {
                continue; // validation guarantees the device exists
            };
            outputs.insert(
                name.clone(),
                OutputHandle {
                    name: name.as_str().into(),
                    device: out.device.as_str().into(),
                    area: out.area,
                    address: wire_address(dev.addressing, out.address),
                    safe_state: out.safe_state,
                    tx: tx.clone(),
                },
            );
        }
        Outputs { outputs, devices }
    }

    pub fn get(&self, name: &str) -> Option<&OutputHandle> {
        self.outputs.get(name)
    }

    /// Drive every output to its safe state, all devices in parallel; returns the failures.
    pub async fn all_to_safe_state(&self) -> Vec<(String, LinkError)> {
        let mut set = tokio::task::JoinSet::new();
        for (name, h) in &self.outputs {
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

async fn device_task<L: ModbusLink>(
    name: String,
    mut link: L,
    mut rx: mpsc::Receiver<WriteCmd>,
    stats: Arc<DeviceStats>,
) {
    // Log a failing device once, and its recovery, rather than every write:
    // at line rate a dead PLC would otherwise flood the journal.
    let mut failing = false;
    while let Some(cmd) = rx.recv().await {
        let result = match cmd.area {
            OutputArea::Coil => link.write_coil(cmd.address, cmd.on).await,
            OutputArea::HoldingRegister => link.write_register(cmd.address, u16::from(cmd.on)).await,
        };
        stats.writes.fetch_add(1, Ordering::Relaxed);
        stats.connected.store(link.is_connected(), Ordering::Relaxed);
        match &result {
            Ok(()) => {
                if failing {
                    tracing::info!(device = %name, "device writes succeed again");
                    failing = false;
                }
                tracing::debug!(device = %name, output = %cmd.output, on = cmd.on, "output written");
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                if failing {
                    tracing::debug!(device = %name, output = %cmd.output, on = cmd.on, error = %e, "output write failed");
                } else {
                    tracing::warn!(device = %name, output = %cmd.output, on = cmd.on, error = %e, "output write failed; further failures of this device are logged at debug level until it recovers");
                    failing = true;
                }
            }
        }
        let _ = cmd.reply.send(result);
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recording link for unit tests.
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    pub struct Recorder {
        pub writes: Arc<Mutex<Vec<(tokio::time::Instant, u16, bool)>>>,
        pub fail: Arc<AtomicBool>,
    }

    impl ModbusLink for Recorder {
        async fn write_coil(&mut self, address: u16, on: bool) -> Result<(), LinkError> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(LinkError::Down("test link down".into()));
            }
            self.writes.lock().unwrap().push((tokio::time::Instant::now(), address, on));
            Ok(())
        }
        async fn write_register(&mut self, address: u16, value: u16) -> Result<(), LinkError> {
            self.write_coil(address, value != 0).await
        }
        fn is_connected(&self) -> bool {
            true
        }
    }
}
