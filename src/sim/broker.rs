//! A throwaway mosquitto broker on a free loopback port, for the demo and
//! tests. The broker is the real one from Debian's `mosquitto` package; it
//! is killed when the handle drops.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub port: u16,
    child: Child,
    dir: PathBuf,
    exe: PathBuf,
}

/// Where mosquitto is: Debian installs it in /usr/sbin, often not on a user's PATH.
pub fn mosquitto_path() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("mosquitto")).collect())
        .unwrap_or_default();
    candidates.push("/usr/sbin/mosquitto".into());
    candidates.into_iter().find(|p| p.is_file())
}

/// A free TCP port on loopback (bound and released). The kernel may hand
/// a released port out again at once, so this process never returns the
/// same port twice: two tests starting brokers at the same moment must not
/// end up sharing one (their daemons would take over each other's session).
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

impl Broker {
    pub fn start() -> Result<Broker, String> {
        Self::start_with(false, "")
    }

    /// A broker whose listener takes extra mosquitto options, e.g. TLS
    /// (`cafile`, `certfile`, `keyfile`, `require_certificate`), a password
    /// file or an ACL file. Started as root, mosquitto reads them as its own
    /// user: the files and their folders must be readable by others.
    pub fn start_configured(listener_options: &str) -> Result<Broker, String> {
        Self::start_with(false, listener_options)
    }

    /// A broker that keeps sessions and queued messages across [`Broker::restart`]
    /// (persistence on, saved when it is stopped gracefully).
    pub fn start_persistent() -> Result<Broker, String> {
        Self::start_with(true, "")
    }

    fn start_with(persistent: bool, options: &str) -> Result<Broker, String> {
        // The free port is only free when it is picked: another test may take
        // it first, and then our mosquitto exits while theirs answers. Retry.
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(persistent, options) {
                Ok(b) => return Ok(b),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(persistent: bool, options: &str) -> Result<Broker, String> {
        let exe = mosquitto_path()
            .ok_or("mosquitto is not installed (apt-get install mosquitto; scripts/setup.sh does it)")?;
        let port = free_port().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("linesight-broker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let conf = dir.join("mosquitto.conf");
        if persistent {
            // Started as root, mosquitto drops to its own user: let it write its database here.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).map_err(|e| e.to_string())?;
        }
        let persistence = if persistent {
            format!("persistence true\npersistence_location {}/\n", dir.display())
        } else {
            "persistence false\n".to_string()
        };
        let anonymous = if options.contains("allow_anonymous") { "" } else { "allow_anonymous true\n" };
        // No cap on the QoS 1 messages the broker holds for one subscriber. With its default
        // (1000), mosquitto drops, silently for the publisher, what a subscriber slower than the
        // publisher falls behind by. A queue's replay after an outage goes as fast as the broker
        // takes it and can outrun a test's mosquitto_sub: in one burst of 9,000 messages from
        // three publishers, a subscriber got 8,951 with the default and all with no limit
        // (docs/mqtt.md, "Delivery").
        let unlimited = if options.contains("max_queued_messages") { "" } else { "max_queued_messages 0\n" };
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\n{anonymous}{unlimited}{persistence}{options}\n"))
            .map_err(|e| e.to_string())?;
        let child = spawn(&exe, &conf)?;
        let mut broker = Broker { port, child, dir, exe };
        broker.wait_listening()?;
        Ok(broker)
    }

    /// Stop gracefully (SIGTERM: a persistent broker saves its state), as a planned outage would.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Whether a persistent broker wrote its database (after [`Broker::stop`]).
    pub fn has_saved_state(&self) -> bool {
        self.dir.join("mosquitto.db").is_file()
    }

    /// Start again on the same port with the same configuration.
    pub fn restart(&mut self) -> Result<(), String> {
        self.child = spawn(&self.exe, &self.dir.join("mosquitto.conf"))?;
        self.wait_listening()
    }

    fn wait_listening(&mut self) -> Result<(), String> {
        let port = self.port;
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on port {port} within 5 s"));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("mosquitto exited at start: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Something listens: make sure it is ours.
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!("mosquitto exited at start ({status}): port {port} was taken"));
        }
        Ok(())
    }

    /// Stop the broker (as a broker outage would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(exe: &std::path::Path, conf: &std::path::Path) -> Result<Child, String> {
    Command::new(exe)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
