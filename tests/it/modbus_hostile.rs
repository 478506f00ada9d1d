//! Hostile Modbus TCP servers (reliability.md item 11): what [`Link`] does
//! when the device on the other end of the socket answers wrongly, partly,
//! late or not at all.
//!
//! tokio-modbus 0.17 has no timeout and no reconnect, and after a timeout the
//! late reply stays in the stream: the next call on the same connection reads
//! it as its own answer (a transaction-id mismatch at best). `src/modbus/link.rs`
//! therefore puts a timeout on every request and drops the connection after a
//! timeout or any transport or protocol error, reconnecting on the next call
//! after a backoff (100 ms at first). A Modbus exception is the device saying
//! no: it is reported as [`LinkError::Refused`] and the connection is kept.
//!
//! What is proven here, against a hand-written server that speaks raw bytes
//! (no tokio-modbus server, so it can lie in every field) and is scripted per
//! connection:
//! - every bad reply (wrong transaction id, wrong unit id, MBAP length 0, 1,
//!   255 or 65535, a truncated frame then silence or a close, garbage, a
//!   reply to another function code, a stall, a late reply) ends the call
//!   with `Timeout` or `Down` within a bounded time, without a panic;
//! - the link drops that connection (the server sees it close);
//! - after the backoff the SAME `Link` reconnects and reads the right values
//!   from a server that now answers correctly: nothing of the bad exchange
//!   leaks into the next one (no lost sync), in particular not a late reply;
//! - an exception comes back as `Refused` and the connection is kept;
//! - the same holds through a [`Device`] on a [`Bus`], with its statistics;
//!   a well-formed reply with the wrong number of registers is refused by
//!   the device without losing step;
//! - and, as a control, a correct reply that arrives a byte at a time is
//!   read, on one connection.
//!
//! One test runs the late reply against a bare tokio-modbus context, to show
//! that the server really produces the desync the link has to defend against.
//!
//! Timings are never asserted: every call is wrapped in a generous guard, and
//! the server reports what it sees (connections, requests, closes) on a
//! channel that the tests await. The only sleep waits out the link's backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use linesight::config::PointArea;
use linesight::modbus::bus::{Bus, ReadData};
use linesight::modbus::{Device, Link, LinkError, ModbusLink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_modbus::{Request, Response};

/// The unit id the tests talk to.
const UNIT: u8 = 7;
/// The registers the tests read.
const ADDR: u16 = 100;
const COUNT: u16 = 2;
/// What a late (or forged) reply carries, so that taking it would show.
const STALE: u16 = 0xDEAD;
/// The request limit for calls that are expected to time out.
const SHORT: Duration = Duration::from_millis(250);
/// The request limit for calls that are expected to be answered.
const LIMIT: Duration = Duration::from_secs(2);
const CONNECT: Duration = Duration::from_secs(2);
/// The outer bound on anything awaited; generous, never a measured timing.
const GUARD: Duration = Duration::from_secs(5);
/// Longer than the link's first backoff (100 ms ± 25 % jitter, so at most
/// 125 ms; it starts over at every successful connect, so every test here
/// sees the first one).
const PAST_BACKOFF: Duration = Duration::from_millis(150);

/// What a correct server holds: holding register `a` contains `0x1000 + a`.
fn values(addr: u16, count: u16) -> Vec<u16> {
    (0..count).map(|i| 0x1000u16.wrapping_add(addr).wrapping_add(i)).collect()
}

fn read() -> Request<'static> {
    Request::ReadHoldingRegisters(ADDR, COUNT)
}

fn expected() -> Response {
    Response::ReadHoldingRegisters(values(ADDR, COUNT))
}

async fn guard<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(GUARD, f).await.unwrap_or_else(|_| panic!("{what}: nothing within {GUARD:?}"))
}

// ---------------------------------------------------------------------------
// Frames, built by hand.

/// An MBAP frame whose length field is `len`, whatever the body is.
fn frame_with_len(tid: u16, len: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(7 + pdu.len());
    f.extend_from_slice(&tid.to_be_bytes());
    f.extend_from_slice(&[0, 0]); // protocol id: Modbus
    f.extend_from_slice(&len.to_be_bytes());
    f.push(unit);
    f.extend_from_slice(pdu);
    f
}

/// A well-formed MBAP frame.
fn frame(tid: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let len = u16::try_from(pdu.len() + 1).expect("test frames are small");
    frame_with_len(tid, len, unit, pdu)
}

/// The PDU of a register read reply: function, byte count, big-endian words.
fn registers_pdu(function: u8, words: &[u16]) -> Vec<u8> {
    let mut pdu = vec![function, u8::try_from(words.len() * 2).expect("test replies are small")];
    for w in words {
        pdu.extend_from_slice(&w.to_be_bytes());
    }
    pdu
}

/// The correct reply PDU to a register read.
fn good_pdu(r: &Req) -> Vec<u8> {
    registers_pdu(r.function, &values(r.addr, r.count))
}

/// What a correct server answers: the registers, or exception 1 (illegal
/// function) to anything but a register read.
fn answer(r: &Req) -> Vec<u8> {
    match r.function {
        0x03 | 0x04 => frame(r.tid, r.unit, &good_pdu(r)),
        f => frame(r.tid, r.unit, &[f | 0x80, 0x01]),
    }
}

// ---------------------------------------------------------------------------
// The server.

/// A request as the server parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Req {
    tid: u16,
    unit: u8,
    function: u8,
    addr: u16,
    count: u16,
}

/// What the server saw, by connection number (1 for the first).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Accepted(usize),
    Request(usize, Req),
    /// The script wrote something (a reply, a late reply, garbage).
    Sent(usize),
    /// The client closed (or reset) the connection.
    PeerClosed(usize),
}

/// One accepted connection, handed to a script.
struct Conn {
    n: usize,
    stream: TcpStream,
    events: mpsc::UnboundedSender<Event>,
}

impl Conn {
    /// Read one request (MBAP header and PDU); `None` once the client is gone.
    async fn request(&mut self) -> Option<Req> {
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head).await.ok()?;
        let len = u16::from_be_bytes([head[4], head[5]]);
        let mut pdu = vec![0u8; usize::from(len).saturating_sub(1)];
        self.stream.read_exact(&mut pdu).await.ok()?;
        let word = |i: usize| pdu.get(i..i + 2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let req = Req {
            tid: u16::from_be_bytes([head[0], head[1]]),
            unit: head[6],
            function: pdu.first().copied().unwrap_or(0),
            addr: word(1),
            count: word(3),
        };
        let _ = self.events.send(Event::Request(self.n, req));
        Some(req)
    }

    /// Write bytes; the client may be gone already, which is not an error here.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
        let _ = self.stream.flush().await;
        let _ = self.events.send(Event::Sent(self.n));
    }

    /// Say nothing more; report when the client closes the connection.
    async fn until_closed(mut self) {
        let mut sink = [0u8; 512];
        while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        let _ = self.events.send(Event::PeerClosed(self.n));
    }

    /// Answer every request correctly until the client closes.
    async fn serve(mut self) {
        while let Some(r) = self.request().await {
            self.send(&answer(&r)).await;
        }
        let _ = self.events.send(Event::PeerClosed(self.n));
    }
}

type Script = Box<dyn FnOnce(Conn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

fn script<F, Fut>(f: F) -> Script
where
    F: FnOnce(Conn) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move |c| Box::pin(f(c)))
}

/// Read the request, send what `make` builds from it, then stay silent (and
/// report the client's close).
fn reply_then_silence(make: impl FnOnce(&Req) -> Vec<u8> + Send + 'static) -> Script {
    script(move |mut c: Conn| async move {
        if let Some(r) = c.request().await {
            c.send(&make(&r)).await;
        }
        c.until_closed().await;
    })
}

/// Read the request, send what `make` builds from it, then close the connection.
fn reply_then_close(make: impl FnOnce(&Req) -> Vec<u8> + Send + 'static) -> Script {
    script(move |mut c: Conn| async move {
        if let Some(r) = c.request().await {
            c.send(&make(&r)).await;
        }
        let _ = c.stream.shutdown().await;
        drop(c);
    })
}

/// Read the request, wait for `go`, then answer it with [`STALE`] values and
/// the right transaction id: a reply that comes after the client gave up.
/// Then either stay silent or go on answering correctly on this connection.
fn late_reply(go: oneshot::Receiver<()>, then_serve: bool) -> Script {
    script(move |mut c: Conn| async move {
        let Some(r) = c.request().await else { return };
        if go.await.is_err() {
            return;
        }
        c.send(&frame(r.tid, r.unit, &registers_pdu(r.function, &vec![STALE; usize::from(r.count)]))).await;
        if then_serve {
            c.serve().await;
        } else {
            c.until_closed().await;
        }
    })
}

/// A scripted server: connection `i` (from 1) runs `scripts[i - 1]`; the ones
/// after the scripts answer correctly.
struct Server {
    addr: String,
    accepted: Arc<AtomicUsize>,
    events: mpsc::UnboundedReceiver<Event>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(scripts: Vec<Script>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, events) = mpsc::unbounded_channel();
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut scripts = scripts.into_iter();
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = tx.send(Event::Accepted(n));
                let conn = Conn { n, stream, events: tx.clone() };
                match scripts.next() {
                    Some(s) => tokio::spawn(s(conn)),
                    None => tokio::spawn(conn.serve()),
                };
            }
        });
        Server { addr, accepted, events, task }
    }

    /// How many connections the server has accepted.
    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Wait until the server reports `want`, skipping other events.
    async fn wait_for(&mut self, want: Event) {
        guard(&format!("server event {want:?}"), async {
            loop {
                match self.events.recv().await {
                    Some(e) if e == want => return,
                    Some(_) => {}
                    None => panic!("the server stopped before {want:?}"),
                }
            }
        })
        .await
    }

    /// The next request the server read on connection `n`.
    async fn request_on(&mut self, n: usize) -> Req {
        guard(&format!("a request on connection {n}"), async {
            loop {
                match self.events.recv().await {
                    Some(Event::Request(c, r)) if c == n => return r,
                    Some(_) => {}
                    None => panic!("the server stopped before a request on connection {n}"),
                }
            }
        })
        .await
    }

    /// Everything reported so far and not yet consumed.
    fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// The shape of every bad case.

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Nothing complete ever arrives: only the request limit can end the call.
    Timeout,
    /// The connection ends mid-frame: a transport error.
    Down,
    /// The codec judges the bytes: it may reject them at once (`Down`) or
    /// wait for more (`Timeout`). Either is fine; a success is not.
    Failure,
}

/// After the first call failed: wait out the backoff, and read again on the
/// same link, which must reconnect and get the right values.
async fn recover(link: &mut Link, server: &mut Server, connections: usize) {
    // Waits out the link's timer; there is nothing to synchronise with.
    tokio::time::sleep(PAST_BACKOFF).await;
    let reply = guard("the call after the backoff", link.call(UNIT, read(), LIMIT))
        .await
        .unwrap_or_else(|e| panic!("a server that answers correctly must be read after the backoff: {e}"));
    assert_eq!(reply, expected(), "the reply to this request, not anything left from the bad exchange");
    assert!(link.is_connected());
    assert_eq!(server.connections(), connections, "the link reconnected exactly once");
    let req = server.request_on(connections).await;
    assert_eq!((req.unit, req.function, req.addr, req.count), (UNIT, 0x03, ADDR, COUNT));
}

/// The first connection runs `bad`; the call must fail as `expect`, the link
/// must drop the connection (seen by the server, unless the server closed it
/// first), and after the backoff the same link reads correct values from a
/// second connection. Returns the error, for cases that look closer.
async fn bad_case(bad: Script, expect: Expect, server_closes: bool) -> LinkError {
    let mut server = Server::start(vec![bad]).await;
    let mut link = Link::tcp("hostile", &server.addr, CONNECT);
    let err = guard("the call to the hostile server", link.call(UNIT, read(), SHORT))
        .await
        .expect_err("a hostile reply must not be taken as an answer");
    match expect {
        Expect::Timeout => assert_eq!(err, LinkError::Timeout(SHORT.as_millis() as u64)),
        Expect::Down => assert!(matches!(err, LinkError::Down(_)), "expected Down, got {err:?}"),
        Expect::Failure => {
            assert!(matches!(err, LinkError::Timeout(_) | LinkError::Down(_)), "expected Timeout or Down, got {err:?}")
        }
    }
    assert!(err.is_link_failure());
    assert!(!link.is_connected(), "the connection is dropped after {err:?}");

    let req = server.request_on(1).await;
    assert_eq!((req.unit, req.function, req.addr, req.count), (UNIT, 0x03, ADDR, COUNT));
    if !server_closes {
        server.wait_for(Event::PeerClosed(1)).await;
    }
    recover(&mut link, &mut server, 2).await;
    err
}

// ---------------------------------------------------------------------------
// Wrong ids and function codes.

#[tokio::test]
async fn wrong_transaction_id_drops_the_connection() {
    let err =
        bad_case(reply_then_silence(|r| frame(r.tid.wrapping_add(1), r.unit, &good_pdu(r))), Expect::Failure, false)
            .await;
    eprintln!("wrong transaction id: {err}");
}

#[tokio::test]
async fn wrong_unit_id_drops_the_connection() {
    let err =
        bad_case(reply_then_silence(|r| frame(r.tid, r.unit.wrapping_add(1), &good_pdu(r))), Expect::Failure, false)
            .await;
    eprintln!("wrong unit id: {err}");
}

#[tokio::test]
async fn reply_to_another_function_code_drops_the_connection() {
    // A well-formed "read input registers" reply to a holding register read.
    let err = bad_case(
        reply_then_silence(|r| frame(r.tid, r.unit, &registers_pdu(0x04, &values(r.addr, r.count)))),
        Expect::Failure,
        false,
    )
    .await;
    eprintln!("another function code: {err}");
}

#[tokio::test]
async fn exception_for_another_function_code_drops_the_connection() {
    // An exception is a refusal only if it is about the request that was sent.
    let err = bad_case(reply_then_silence(|r| frame(r.tid, r.unit, &[0x84, 0x02])), Expect::Failure, false).await;
    eprintln!("exception for another function code: {err}");
}

// ---------------------------------------------------------------------------
// MBAP length field lies. The body sent is the correct 6-byte PDU unless said
// otherwise.

#[tokio::test]
async fn mbap_length_0() {
    let err =
        bad_case(reply_then_silence(|r| frame_with_len(r.tid, 0, r.unit, &good_pdu(r))), Expect::Failure, false).await;
    eprintln!("MBAP length 0: {err}");
}

#[tokio::test]
async fn mbap_length_1() {
    // A frame of the unit id alone, no function code; the PDU follows as stray bytes.
    let err =
        bad_case(reply_then_silence(|r| frame_with_len(r.tid, 1, r.unit, &good_pdu(r))), Expect::Failure, false).await;
    eprintln!("MBAP length 1: {err}");
}

#[tokio::test]
async fn mbap_length_255_with_a_short_body() {
    let err =
        bad_case(reply_then_silence(|r| frame_with_len(r.tid, 255, r.unit, &good_pdu(r))), Expect::Failure, false)
            .await;
    eprintln!("MBAP length 255, short body: {err}");
}

#[tokio::test]
async fn mbap_length_255_with_a_full_body() {
    // 254 bytes of PDU: one more than Modbus allows.
    let err = bad_case(
        reply_then_silence(|r| {
            let mut pdu = good_pdu(r);
            pdu.resize(254, 0);
            frame_with_len(r.tid, 255, r.unit, &pdu)
        }),
        Expect::Failure,
        false,
    )
    .await;
    eprintln!("MBAP length 255, full body: {err}");
}

#[tokio::test]
async fn mbap_length_65535_with_a_short_body() {
    let err =
        bad_case(reply_then_silence(|r| frame_with_len(r.tid, 65535, r.unit, &good_pdu(r))), Expect::Failure, false)
            .await;
    eprintln!("MBAP length 65535, short body: {err}");
}

#[tokio::test]
async fn mbap_length_65535_with_a_full_body() {
    // All 65534 bytes the header announces.
    let err = bad_case(
        reply_then_silence(|r| {
            let mut pdu = good_pdu(r);
            pdu.resize(65534, 0xA5);
            frame_with_len(r.tid, 65535, r.unit, &pdu)
        }),
        Expect::Failure,
        false,
    )
    .await;
    eprintln!("MBAP length 65535, full body: {err}");
}

// ---------------------------------------------------------------------------
// Truncated frames, garbage, stalls.

/// The first 10 of the 13 bytes of the correct reply.
fn truncated(r: &Req) -> Vec<u8> {
    let mut f = frame(r.tid, r.unit, &good_pdu(r));
    f.truncate(10);
    f
}

#[tokio::test]
async fn truncated_frame_then_silence_times_out() {
    bad_case(reply_then_silence(truncated), Expect::Timeout, false).await;
}

#[tokio::test]
async fn truncated_frame_then_close_is_down() {
    bad_case(reply_then_close(truncated), Expect::Down, true).await;
}

#[tokio::test]
async fn truncated_header_then_close_is_down() {
    bad_case(
        reply_then_close(|r| {
            let mut f = truncated(r);
            f.truncate(4);
            f
        }),
        Expect::Down,
        true,
    )
    .await;
}

#[tokio::test]
async fn garbage_then_silence() {
    // Bytes from a fixed pseudo-random sequence, not a frame.
    let err = bad_case(
        reply_then_silence(|_| {
            let mut x: u32 = 0x2545_F491;
            (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x.to_be_bytes()[0]
                })
                .collect()
        }),
        Expect::Failure,
        false,
    )
    .await;
    eprintln!("garbage: {err}");
}

#[tokio::test]
async fn garbage_with_a_bad_protocol_id() {
    // A complete MBAP frame, but the protocol id is not Modbus.
    let err = bad_case(
        reply_then_silence(|r| {
            let mut f = frame(r.tid, r.unit, &good_pdu(r));
            f[2] = 0xBE;
            f[3] = 0xEF;
            f
        }),
        Expect::Failure,
        false,
    )
    .await;
    eprintln!("bad protocol id: {err}");
}

#[tokio::test]
async fn text_garbage_then_close() {
    // Something that is not a Modbus server at all on the port.
    let err = bad_case(
        reply_then_close(|_| b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n".to_vec()),
        Expect::Failure,
        true,
    )
    .await;
    eprintln!("text garbage: {err}");
}

#[tokio::test]
async fn stall_times_out() {
    // Accept, read the request, never answer.
    bad_case(
        script(|mut c: Conn| async move {
            let _ = c.request().await;
            c.until_closed().await;
        }),
        Expect::Timeout,
        false,
    )
    .await;
}

// ---------------------------------------------------------------------------
// The late reply: the classic desync.

#[tokio::test]
async fn late_reply_is_not_taken_as_the_next_answer() {
    let (go, go_rx) = oneshot::channel();
    let mut server = Server::start(vec![late_reply(go_rx, false)]).await;
    let mut link = Link::tcp("late", &server.addr, CONNECT);

    let err = guard("the unanswered call", link.call(UNIT, read(), SHORT)).await.expect_err("no reply in time");
    assert_eq!(err, LinkError::Timeout(SHORT.as_millis() as u64));
    assert!(!link.is_connected());

    // Now the device answers the first request, after the client gave up.
    go.send(()).expect("the server waits for the go");
    server.wait_for(Event::Sent(1)).await;
    server.wait_for(Event::PeerClosed(1)).await;

    recover(&mut link, &mut server, 2).await;
    // And the link stays in step afterwards.
    let again = guard("a further call", link.call(UNIT, read(), LIMIT)).await.expect("still in step");
    assert_eq!(again, expected());
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn late_reply_desynchronises_a_bare_tokio_modbus_context() {
    // The control: without the link's reconnect, the same server makes the
    // next call fail (or worse). This is what the link exists for.
    use tokio_modbus::client::Client;

    let (go, go_rx) = oneshot::channel();
    let mut server = Server::start(vec![late_reply(go_rx, true)]).await;
    let addr = server.addr.parse().expect("a socket address");
    let mut ctx = guard("connect", tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(UNIT)))
        .await
        .expect("connect");

    assert!(tokio::time::timeout(SHORT, ctx.call(read())).await.is_err(), "the first call gets no reply in time");
    go.send(()).expect("the server waits for the go");
    server.wait_for(Event::Sent(1)).await;

    let second = guard("the second call on the same context", ctx.call(read())).await;
    assert!(
        !matches!(second, Ok(Ok(ref r)) if *r == expected()),
        "a bare context read the late reply as its answer and still got the right value: {second:?}"
    );
    assert!(
        matches!(second, Err(tokio_modbus::Error::Protocol(tokio_modbus::ProtocolError::HeaderMismatch { .. }))),
        "expected a transaction id mismatch, got {second:?}"
    );
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn late_reply_through_a_device_on_a_bus() {
    let (go, go_rx) = oneshot::channel();
    let mut server = Server::start(vec![late_reply(go_rx, false)]).await;
    let (bus, bus_task) = Bus::spawn(Link::tcp("press", &server.addr, CONNECT));
    let device = Device::new("press", UNIT, SHORT, bus);

    let err = guard("the unanswered read", device.read(PointArea::HoldingRegister, ADDR, COUNT))
        .await
        .expect_err("no reply in time");
    assert_eq!(err, LinkError::Timeout(SHORT.as_millis() as u64));
    assert_eq!(device.stats.state().as_str(), "down");
    assert_eq!(device.stats.failures.load(Ordering::Relaxed), 1);

    go.send(()).expect("the server waits for the go");
    server.wait_for(Event::Sent(1)).await;
    server.wait_for(Event::PeerClosed(1)).await;

    tokio::time::sleep(PAST_BACKOFF).await;
    let data = guard("the read after the backoff", device.read(PointArea::HoldingRegister, ADDR, COUNT))
        .await
        .unwrap_or_else(|e| panic!("a server that answers correctly must be read after the backoff: {e}"));
    assert_eq!(data, ReadData::Words(values(ADDR, COUNT)));
    assert_eq!(device.stats.state().as_str(), "connected");
    assert_eq!(device.stats.reads.load(Ordering::Relaxed), 2);
    assert_eq!(device.stats.failures.load(Ordering::Relaxed), 1);
    assert_eq!(server.connections(), 2);

    // The bus task ends, without a panic, once the last handle is gone.
    drop(device);
    guard("the bus task to end", bus_task).await.expect("the bus task ends cleanly");
}

// ---------------------------------------------------------------------------
// An exception is a refusal, not a broken link.

#[tokio::test]
async fn exception_is_refused_and_keeps_the_connection() {
    let refuse = script(|mut c: Conn| async move {
        if let Some(r) = c.request().await {
            c.send(&frame(r.tid, r.unit, &[r.function | 0x80, 0x02])).await;
        }
        c.serve().await;
    });
    let mut server = Server::start(vec![refuse]).await;
    let mut link = Link::tcp("refusing", &server.addr, CONNECT);

    let err = guard("the refused call", link.call(UNIT, read(), LIMIT)).await.expect_err("an exception is an error");
    assert!(matches!(err, LinkError::Refused(ref why) if why.contains("Illegal data address")), "got {err:?}");
    assert!(!err.is_link_failure());
    assert!(link.is_connected(), "an exception keeps the connection");

    // No backoff: the next call goes out at once, on the same connection.
    let reply = guard("the call after the refusal", link.call(UNIT, read(), LIMIT)).await.expect("answered");
    assert_eq!(reply, expected());
    assert_eq!(server.connections(), 1, "no reconnect after an exception");
    let events = server.drain();
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Request(1, _))).count(), 2, "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::PeerClosed(_))), "the connection was closed: {events:?}");
}

// ---------------------------------------------------------------------------
// Neighbours of the bad cases.

#[tokio::test]
async fn close_without_a_reply_is_down() {
    let err = bad_case(reply_then_close(|_| Vec::new()), Expect::Down, true).await;
    eprintln!("close without a reply: {err}");
}

#[tokio::test]
async fn reply_in_fragments_is_read() {
    // A slow but correct device: the reply comes a byte at a time. Not an
    // error, and no reconnect.
    let dribble = script(|mut c: Conn| async move {
        let _ = c.stream.set_nodelay(true);
        while let Some(r) = c.request().await {
            for b in answer(&r) {
                c.send(&[b]).await;
                tokio::task::yield_now().await;
            }
        }
        let _ = c.events.send(Event::PeerClosed(c.n));
    });
    let server = Server::start(vec![dribble]).await;
    let mut link = Link::tcp("slow", &server.addr, CONNECT);
    for _ in 0..3 {
        let reply = guard("a fragmented reply", link.call(UNIT, read(), LIMIT)).await.expect("answered");
        assert_eq!(reply, expected());
    }
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn wrong_register_count_through_a_device_keeps_step() {
    // A complete, well-formed frame with one register where two were asked:
    // the stream is still in step (the frame was consumed whole), so the
    // connection may stay; the device must not hand the short data on.
    let short = script(|mut c: Conn| async move {
        if let Some(r) = c.request().await {
            c.send(&frame(r.tid, r.unit, &registers_pdu(r.function, &[STALE]))).await;
        }
        c.serve().await;
    });
    let server = Server::start(vec![short]).await;
    let (bus, bus_task) = Bus::spawn(Link::tcp("press", &server.addr, CONNECT));
    let device = Device::new("press", UNIT, LIMIT, bus);

    let err = guard("the short read", device.read(PointArea::HoldingRegister, ADDR, COUNT))
        .await
        .expect_err("one register is not the two asked for");
    assert!(matches!(err, LinkError::Down(ref why) if why.contains("does not match")), "got {err:?}");

    let data = guard("the next read", device.read(PointArea::HoldingRegister, ADDR, COUNT))
        .await
        .unwrap_or_else(|e| panic!("the next read must get its own reply: {e}"));
    assert_eq!(data, ReadData::Words(values(ADDR, COUNT)));
    assert_eq!(device.stats.state().as_str(), "connected");
    assert!(server.connections() <= 2, "at most one reconnect");

    drop(device);
    guard("the bus task to end", bus_task).await.expect("the bus task ends cleanly");
}

/// A device that accepts connections but never answers properly (here: a
/// wrong protocol id, as from something that is not a Modbus server) should
/// see the reconnect backoff grow, 100 ms doubling to 5 s: only a good
/// answer resets it, not a successful TCP connect (PLCs have few connection
/// slots).
#[tokio::test]
async fn backoff_grows_while_the_device_accepts_but_never_answers_well() {
    let bad = || {
        reply_then_silence(|r| {
            let mut f = frame(r.tid, r.unit, &good_pdu(r));
            f[2] = 0xBE;
            f
        })
    };
    let server = Server::start((0..64).map(|_| bad()).collect()).await;
    let mut link = Link::tcp("not-modbus", &server.addr, CONNECT);
    // Poll every 20 ms for 1.5 s. With 100, 200, 400, 800 ms between
    // attempts (at least 75, 150, 300, 600 ms with the ±25 % jitter) there
    // are at most 5 connections (fewer on a slow machine); with the backoff
    // stuck at 100 ms there are 10 or more even at +25 %.
    let end = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < end {
        let r = guard("a poll", link.call(UNIT, read(), SHORT)).await;
        assert!(r.is_err());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.connections() <= 6, "{} connections in 1.5 s: the backoff did not grow", server.connections());
}
