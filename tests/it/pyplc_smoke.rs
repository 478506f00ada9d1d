//! The pymodbus PLC simulator (tests/plc/pymodbus_plc.py) and its harness (tests/common/pyplc.rs)
//! do what the other tests rely on: client writes are reported with the simulator's
//! CLOCK_MONOTONIC, values set through the harness are what a Modbus client reads at the same
//! protocol address, injected exceptions arrive as Modbus exceptions, unserved unit ids and stalls
//! get no answer, and RTU works over a socat pty pair.
//!
//! Needs scripts/setup.sh (python venv with pymodbus and pyserial; socat). No timing is asserted:
//! every timeout here is a generous bound on something that either happens or must not happen.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::pyplc::{self, monotonic_ns, monotonic_ns_now, real_timeout, Area, PlcWrite, PtyPair, PyPlc};
use serde_json::Value;
use tokio_modbus::client::{rtu, tcp, Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

const T: Duration = Duration::from_secs(30);
/// How long a request that must get no answer is given.
const SILENCE: Duration = Duration::from_secs(2);

async fn client(plc: &PyPlc, unit: u8) -> Context {
    tokio::time::timeout(T, tcp::connect_slave(plc.addr(), Slave(unit))).await.expect("connect timeout").unwrap()
}

/// A call that must succeed: no timeout, no transport error, no exception.
macro_rules! ok {
    ($e:expr) => {
        tokio::time::timeout(T, $e).await.expect("no answer").expect("transport error").expect("modbus exception")
    };
}

#[tokio::test]
async fn client_writes_are_reported_with_monotonic_timestamps() {
    let plc = PyPlc::tcp(&[1]).await;
    let mut ctx = client(&plc, 1).await;

    let plc_before = plc.now_ns().await;
    let rust_before = monotonic_ns_now();
    ok!(ctx.write_single_coil(10, true));
    ok!(ctx.write_single_register(100, 0xBEEF));
    ok!(ctx.write_multiple_registers(200, &[1, 2, 3]));
    ok!(ctx.write_multiple_coils(20, &[true, false, true]));
    let rust_after = monotonic_ns_now();
    let plc_after = plc.now_ns().await;

    let coil = plc.wait_for_write(|w| w.coil(10).is_some(), T).await.expect("coil write reported");
    assert_eq!((coil.area, coil.fc, coil.unit, coil.address, coil.values.clone()), (Area::Coil, 5, 1, 10, vec![1]));
    let reg = plc.wait_for_write(|w| w.hr(100).is_some(), T).await.expect("register write reported");
    assert_eq!((reg.area, reg.fc, reg.address, reg.values.clone()), (Area::Holding, 6, 100, vec![0xBEEF]));
    let regs = plc.wait_for_write(|w| w.fc == 16, T).await.expect("fc16 reported");
    assert_eq!((regs.address, regs.values.clone()), (200, vec![1, 2, 3]));
    assert_eq!(regs.hr(202), Some(3));
    let coils = plc.wait_for_write(|w| w.fc == 15, T).await.expect("fc15 reported");
    assert_eq!((coils.address, coils.bits()), (20, vec![true, false, true]));
    assert_eq!(coils.coil(21), Some(false));

    // All four, in order, each stamped between the two readings of either clock: Python's
    // monotonic_ns and Rust's Instant are the same CLOCK_MONOTONIC.
    plc.sync().await;
    let all = plc.writes();
    assert_eq!(all.len(), 4, "{all:?}");
    let ts: Vec<u64> = all.iter().map(|w| w.t_ns).collect();
    assert!(ts.windows(2).all(|p| p[0] <= p[1]), "{ts:?}");
    for w in &all {
        assert!(plc_before <= w.t_ns && w.t_ns <= plc_after, "{w:?} not within [{plc_before}, {plc_after}]");
        assert!(rust_before <= w.t_ns && w.t_ns <= rust_after, "{w:?} not within [{rust_before}, {rust_after}]");
        assert!(w.wall > 1.6e9, "wall clock {w:?}");
    }

    // The datastore has them at the same protocol addresses.
    assert_eq!(plc.get_hr(99, 2).await, vec![0, 0xBEEF]);
    assert_eq!(plc.get_hr(200, 4).await, vec![1, 2, 3, 0]);
    assert_eq!(plc.get_coils(9, 2).await, vec![false, true]);
    assert_eq!(plc.get_coils(20, 3).await, vec![true, false, true]);

    // Values set through the harness are not client writes.
    plc.set_hr(300, &[7]).await;
    plc.set_coils(30, &[true]).await;
    plc.sync().await;
    assert_eq!(plc.writes().len(), 4);
    plc.clear_writes();
    assert!(plc.writes().is_empty());
    ok!(ctx.write_single_register(301, 8));
    assert!(plc.wait_for_write(|w| w.hr(301) == Some(8), T).await.is_some());
}

#[tokio::test]
async fn clocks_agree() {
    let plc = PyPlc::tcp(&[1]).await;
    for _ in 0..5 {
        let a = monotonic_ns_now();
        let p = plc.now_ns().await;
        let b = monotonic_ns_now();
        assert!(a <= p && p <= b, "rust {a} <= plc {p} <= rust {b}");
    }
    let t = Instant::now();
    assert!(monotonic_ns(t) <= monotonic_ns(t + Duration::from_nanos(1)));
}

#[tokio::test]
async fn values_set_are_read_back_at_the_same_protocol_address() {
    let plc = PyPlc::tcp(&[1, 2]).await;
    let mut ctx = client(&plc, 1).await;

    plc.set_di(7, &[true, false, true]).await;
    plc.set_ir(0, &[11, 12]).await;
    plc.set_ir(9999, &[0xFFFF]).await;
    plc.set_hr(42, &[4242]).await;
    plc.set_coils(0, &[true]).await;

    assert_eq!(ok!(ctx.read_discrete_inputs(6, 5)), vec![false, true, false, true, false]);
    assert_eq!(ok!(ctx.read_input_registers(0, 3)), vec![11, 12, 0]);
    assert_eq!(ok!(ctx.read_input_registers(9998, 2)), vec![0, 0xFFFF]);
    assert_eq!(ok!(ctx.read_holding_registers(41, 3)), vec![0, 4242, 0]);
    assert_eq!(ok!(ctx.read_coils(0, 2)), vec![true, false]);
    assert_eq!(plc.get_di(7, 3).await, vec![true, false, true]);
    assert_eq!(plc.get_ir(0, 2).await, vec![11, 12]);

    // 10000 of each area: address 10000 is out of range for the client too.
    let r = tokio::time::timeout(T, ctx.read_holding_registers(9999, 2)).await.unwrap().unwrap();
    assert_eq!(r, Err(ExceptionCode::IllegalDataAddress));

    // Each unit has its own memory.
    plc.set_on(2, Area::Holding, 42, &[2222]).await;
    let mut ctx2 = client(&plc, 2).await;
    assert_eq!(ok!(ctx2.read_holding_registers(42, 1)), vec![2222]);
    assert_eq!(ok!(ctx.read_holding_registers(42, 1)), vec![4242]);
    ok!(ctx2.write_single_coil(5, true));
    let w = plc.wait_for_write(|w| w.coil(5).is_some(), T).await.unwrap();
    assert_eq!(w.unit, 2);
    assert_eq!(plc.get_on(2, Area::Coil, 5, 1).await, vec![1]);
    assert_eq!(plc.get_coils(5, 1).await, vec![false]);
}

#[tokio::test]
async fn injected_exceptions_are_modbus_exceptions() {
    let plc = PyPlc::tcp(&[1]).await;
    let mut ctx = client(&plc, 1).await;

    plc.exception(5, 10, 2).await;
    plc.exception(3, 50, 6).await;
    let r =
        tokio::time::timeout(T, ctx.write_single_coil(10, true)).await.expect("an answer").expect("no transport error");
    assert_eq!(r, Err(ExceptionCode::IllegalDataAddress));
    let r = tokio::time::timeout(T, ctx.read_holding_registers(48, 5))
        .await
        .expect("an answer")
        .expect("no transport error");
    assert_eq!(r, Err(ExceptionCode::ServerDeviceBusy));
    // Other addresses and function codes are unaffected, on the same connection.
    ok!(ctx.write_single_coil(11, true));
    assert_eq!(ok!(ctx.read_holding_registers(51, 1)), vec![0]);
    ok!(ctx.write_single_register(50, 5)); // fc 6, not 3

    // The refused write was neither stored nor reported.
    plc.sync().await;
    assert!(plc.writes().iter().all(|w| w.coil(10).is_none()), "{:?}", plc.writes());
    assert_eq!(plc.get_coils(10, 2).await, vec![false, true]);

    plc.clear_exceptions().await;
    ok!(ctx.write_single_coil(10, true));
    assert_eq!(ok!(ctx.read_holding_registers(50, 1)), vec![5]);
}

#[tokio::test]
async fn unserved_unit_and_stall_get_no_answer() {
    let plc = PyPlc::tcp(&[1]).await;

    let mut stranger = client(&plc, 7).await;
    assert!(
        tokio::time::timeout(SILENCE, stranger.read_holding_registers(0, 1)).await.is_err(),
        "unit 7 is not served: no answer expected"
    );
    drop(stranger); // a context that timed out may hold a late reply (tokio-modbus #59): not reused

    let mut ctx = client(&plc, 1).await;
    assert_eq!(ok!(ctx.read_holding_registers(0, 1)), vec![0]);

    plc.stall(Duration::from_secs(600)).await;
    assert!(tokio::time::timeout(SILENCE, ctx.write_single_register(3, 33)).await.is_err(), "stalled: no answer");
    drop(ctx);
    plc.stall(Duration::ZERO).await; // end it early
    let mut ctx = client(&plc, 1).await;
    assert_eq!(ok!(ctx.read_holding_registers(3, 1)), vec![0], "the write sent during the stall was dropped");
    plc.sync().await;
    assert!(plc.writes().is_empty(), "{:?}", plc.writes());
}

/// The harness never uses tokio's clock: it works with the clock paused, where a tokio timeout
/// would fire at once while the simulator process is still starting.
#[tokio::test(start_paused = true)]
async fn harness_works_with_a_paused_tokio_clock() {
    let plc = PyPlc::tcp(&[1]).await;
    plc.set_hr(1, &[10]).await;
    assert_eq!(plc.get_hr(1, 1).await, vec![10]);
    let mut ctx = tcp::connect_slave(plc.addr(), Slave(1)).await.unwrap();
    ctx.write_single_register(2, 20).await.unwrap().unwrap();
    let w = plc.wait_for_write(|w| w.hr(2) == Some(20), T).await;
    assert!(w.is_some());
    // and a real timeout still expires when nothing comes
    assert!(plc.wait_for_write(|w| w.hr(3).is_some(), Duration::from_millis(300)).await.is_none());
    assert!(real_timeout(Duration::from_millis(50), std::future::pending::<()>()).await.is_none());
}

#[tokio::test]
async fn exits_cleanly_on_eof_and_on_sigterm() {
    let plc = PyPlc::tcp(&[1]).await;
    plc.ping().await;
    let status = plc.shutdown(T).expect("exits on stdin EOF");
    assert!(status.success(), "{status}");

    let plc = PyPlc::tcp(&[1]).await;
    plc.ping().await;
    let status = plc.terminate(T).expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
}

fn open_serial(path: &std::path::Path, unit: u8) -> Context {
    let builder = tokio_serial::new(path.to_string_lossy(), 19200)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None) // ptys refuse parity (EINVAL)
        .stop_bits(tokio_serial::StopBits::One);
    let port = tokio_serial::SerialStream::open(&builder).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    rtu::attach_slave(port, Slave(unit))
}

/// RTU with linesight's own client stack (tokio-modbus `rtu` + tokio-serial) against pymodbus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_with_tokio_modbus_over_a_socat_pty_pair() {
    let pty = PtyPair::new();
    let plc = PyPlc::rtu(&pty.b, 19200, &[1, 2]).await;
    plc.set_di(4, &[false, true]).await;
    plc.set_on(2, Area::Input, 9, &[99]).await;
    plc.exception(6, 77, 4).await;

    let mut ctx = open_serial(&pty.a, 1);
    ok!(ctx.write_single_coil(3, true));
    assert_eq!(ok!(ctx.read_discrete_inputs(3, 3)), vec![false, false, true]);
    assert_eq!(ok!(ctx.read_coils(3, 1)), vec![true]);
    let r = tokio::time::timeout(T, ctx.write_single_register(77, 1))
        .await
        .expect("an answer")
        .expect("no transport error");
    assert_eq!(r, Err(ExceptionCode::ServerDeviceFailure));
    ctx.set_slave(Slave(2));
    ok!(ctx.write_multiple_registers(10, &[100, 200]));
    assert_eq!(ok!(ctx.read_holding_registers(10, 2)), vec![100, 200]);
    assert_eq!(ok!(ctx.read_input_registers(9, 1)), vec![99]);
    ctx.set_slave(Slave(9));
    assert!(tokio::time::timeout(SILENCE, ctx.read_coils(0, 1)).await.is_err(), "unit 9 is not served: no answer");
    drop(ctx); // after a timeout the context is not reused (tokio-modbus #59)

    let mut ctx = open_serial(&pty.a, 1);
    assert_eq!(ok!(ctx.read_holding_registers(10, 2)), vec![0, 0], "unit 1 has its own memory");

    plc.sync().await;
    let w: Vec<(u8, u8, u16, Vec<u16>)> =
        plc.writes().iter().map(|w| (w.unit, w.fc, w.address, w.values.clone())).collect();
    assert_eq!(w, vec![(1, 5, 3, vec![1]), (2, 16, 10, vec![100, 200])]);
}

/// RTU with an independent client too: pymodbus's own serial client, run from the test.
const RTU_CLIENT: &str = r#"
import json, sys
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ModbusIOException
c = ModbusSerialClient(sys.argv[1], baudrate=int(sys.argv[2]), parity="N", stopbits=1, bytesize=8, timeout=1, retries=0)
assert c.connect(), "cannot open " + sys.argv[1]
out = {}
def call(name, f):
    try:
        r = f()
        if r.isError():
            out[name] = {"exception": getattr(r, "exception_code", None)}
        else:
            out[name] = {"bits": r.bits, "registers": r.registers}
    except ModbusIOException as e:
        out[name] = {"no_answer": str(e)}
call("write_coil", lambda: c.write_coil(3, True, device_id=1))
call("write_regs", lambda: c.write_registers(10, [100, 200], device_id=2))
call("read_di", lambda: c.read_discrete_inputs(4, count=2, device_id=1))
call("read_regs_2", lambda: c.read_holding_registers(10, count=2, device_id=2))
call("read_regs_1", lambda: c.read_holding_registers(10, count=2, device_id=1))
call("stranger", lambda: c.read_holding_registers(0, count=1, device_id=9))
call("exception", lambda: c.write_register(77, 1, device_id=1))
call("after", lambda: c.read_coils(3, count=1, device_id=1))
c.close()
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_a_socat_pty_pair() {
    let pty = PtyPair::new();
    let plc = PyPlc::rtu(&pty.b, 19200, &[1, 2]).await;
    assert_eq!(plc.device(), Some(pty.b.as_path()));
    plc.set_di(4, &[false, true]).await;
    plc.exception(6, 77, 4).await;

    let python = pyplc::venv_python();
    let a = pty.a.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .args(["-c", RTU_CLIENT, &a.display().to_string(), "19200"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the python RTU client");
        // The client's own timeouts bound it (1 s per request); this only guards against a hang.
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python RTU client failed: {}\n{stderr}", out.status);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));

    assert_eq!(r["write_coil"]["bits"][0], true, "{r}");
    assert!(r["write_regs"].get("registers").is_some(), "{r}");
    assert_eq!(r["read_di"]["bits"].as_array().unwrap()[..2], [Value::Bool(false), Value::Bool(true)], "{r}");
    assert_eq!(r["read_regs_2"]["registers"], serde_json::json!([100, 200]), "{r}");
    assert_eq!(r["read_regs_1"]["registers"], serde_json::json!([0, 0]), "units are separate: {r}");
    assert!(r["stranger"].get("no_answer").is_some(), "unit 9 must not answer: {r}");
    assert_eq!(r["exception"]["exception"], 4, "{r}");
    assert_eq!(r["after"]["bits"][0], true, "the bus works after the silent request: {r}");

    plc.sync().await;
    let w: Vec<(u8, u8, u16, Vec<u16>)> =
        plc.writes().iter().map(|w: &PlcWrite| (w.unit, w.fc, w.address, w.values.clone())).collect();
    assert_eq!(w, vec![(1, 5, 3, vec![1]), (2, 16, 10, vec![100, 200])]);
}
