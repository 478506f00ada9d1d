//! The operator page in a real browser (issue 15): headless Chromium driven through
//! chromedriver's W3C WebDriver protocol (plain HTTP and JSON, no client library). The daemon
//! runs the sample video against the simulated PLC; the test checks that the counts grow and the
//! live image changes while the page is never reloaded, opens a rejected part's detail, and saves
//! two screenshots. `LINESIGHT_SCREENSHOTS=docs/images cargo test --test it browser::` writes
//! them where the docs show them; otherwise they go to the test's temporary folder.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::http::{get, page_yaml, request};
use linesight::sim::plc::SimPlc;

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        let port = linesight::sim::broker::free_port().unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; scripts/setup.sh installs it)");
        let d = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let t0 = Instant::now();
        let what = format!("{method} {path}");
        let body = if method == "GET" || method == "DELETE" { Vec::new() } else { body.to_string().into_bytes() };
        let (status, _, out) = request(self.port, method, path, &[("Content-Type", "application/json")], &body);
        let doc: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        assert_eq!(status, 200, "WebDriver {method} {path}: {doc}");
        if t0.elapsed() > Duration::from_secs(5) {
            eprintln!("WebDriver {what}: {:.1} s", t0.elapsed().as_secs_f64());
        }
        doc["value"].clone()
    }
}

/// One browser session.
struct Browser<'a> {
    driver: &'a Driver,
    id: String,
}

impl Browser<'_> {
    fn open(driver: &Driver) -> Browser<'_> {
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1000"]
        }}}});
        let v = driver.call("POST", "/session", caps);
        Browser { driver, id: v["sessionId"].as_str().expect("a session id").to_string() }
    }

    fn go(&self, url: &str) {
        self.driver.call("POST", &format!("/session/{}/url", self.id), json!({"url": url}));
    }

    fn js(&self, script: &str) -> Value {
        self.driver.call("POST", &format!("/session/{}/execute/sync", self.id), json!({"script": script, "args": []}))
    }

    fn click(&self, css: &str) {
        let el = self.driver.call(
            "POST",
            &format!("/session/{}/element", self.id),
            json!({"using": "css selector", "value": css}),
        );
        let id =
            el.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("an element").to_string();
        self.driver.call("POST", &format!("/session/{}/element/{id}/click", self.id), json!({}));
    }

    /// Scroll `css` into view (a screenshot shows the window only).
    fn scroll_to(&self, css: &str) {
        self.js(&format!("document.querySelector({}).scrollIntoView(); return true;", json!(css)));
    }

    fn screenshot(&self, to: &Path) {
        let b64 = self.driver.call("GET", &format!("/session/{}/screenshot", self.id), Value::Null);
        let png = base64(b64.as_str().expect("base64 PNG"));
        assert_eq!(&png[1..4], b"PNG");
        std::fs::write(to, png).unwrap();
    }

    /// Wait until `script` returns true.
    fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.js(script) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "in the browser: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = request(self.driver.port, "DELETE", &format!("/session/{}", self.id), &[], b"");
    }
}

/// Standard base64 (the screenshot), without a crate for one test.
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).map(val).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64("aGVsbG8="), b"hello");
    assert_eq!(base64("aGVsbG8h"), b"hello!");
}

#[test]
fn the_page_updates_live_in_chromium_and_shows_why_a_part_was_rejected() {
    require_ort();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plc = rt.block_on(SimPlc::start("127.0.0.1:0")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (yaml, port) = page_yaml(&plc.addr.to_string(), dir.path(), true);
    let cfg = write_config(dir.path(), &yaml);
    let log = dir.path().join("daemon.log");
    let mut child = run_daemon(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/readyz").0 == 200) {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }

    let driver = Driver::start();
    let b = Browser::open(&driver);
    b.go(&format!("http://127.0.0.1:{port}/"));
    // A marker on the window: gone if the page were reloaded.
    b.js("window.__sameLoad = 42; return true;");
    b.until("the tasks table fills", "return document.querySelectorAll('#tasks tbody tr').length === 1");
    b.until(
        "a live image shows",
        "const i = document.querySelector('#live img'); return !!i && i.complete && i.naturalWidth > 0",
    );
    let ok_count = |b: &Browser| -> u64 {
        let v = b.js("return document.querySelector('#tasks tbody td:nth-child(5)').textContent");
        v.as_str().unwrap().trim().parse().unwrap()
    };
    let first_ok = ok_count(&b);
    let first_src = b.js("return document.querySelector('#live img').src");
    b.until(
        "the counts grow and the live image changes",
        &format!(
            "return Number(document.querySelector('#tasks tbody td:nth-child(5)').textContent) > {first_ok} \
             && document.querySelector('#live img').src !== {first_src}"
        ),
    );
    assert!(ok_count(&b) > first_ok);
    assert_eq!(b.js("return window.__sameLoad"), json!(42), "the page was not reloaded");
    assert_eq!(b.js("return document.getElementById('ready').textContent"), json!("inspecting"));

    let shots = std::env::var_os("LINESIGHT_SCREENSHOTS").map_or_else(|| dir.path().to_path_buf(), Into::into);
    std::fs::create_dir_all(&shots).unwrap();
    b.until(
        "the gallery shows rejected parts with their pictures",
        "const i = document.querySelector('#gallery img'); return !!i && i.complete && i.naturalWidth > 0",
    );
    b.screenshot(&shots.join("operator-page.png"));
    b.scroll_to("#gallery");

    // Why was it rejected: the first kept part's detail.
    b.click("#gallery a");
    b.until("the detail opens", "return getComputedStyle(document.getElementById('detail')).display === 'flex'");
    b.until(
        "the detail's picture loads",
        "const i = document.getElementById('detail-img'); return i.complete && i.naturalWidth > 0",
    );
    let detail: Value =
        serde_json::from_str(b.js("return document.getElementById('detail-doc').textContent").as_str().unwrap())
            .expect("the detail is the part's JSON");
    assert!(["NG", "UNCERTAIN", "ERROR"].contains(&detail["verdict"].as_str().unwrap()), "{detail}");
    assert!(detail["part_id"].as_u64().is_some() && detail["model"].as_str().unwrap().contains('@'), "{detail}");
    assert!(detail["threshold"].as_f64().unwrap() > 0.0, "{detail}");
    b.screenshot(&shots.join("reject-detail.png"));
    drop(b);

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
