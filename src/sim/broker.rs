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
}

/// Where mosquitto is: Debian installs it in /usr/sbin, often not on a user's PATH.
pub fn mosquitto_path() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("mosquitto")).collect())
        .unwrap_or_default();
    candidates.push("/usr/sbin/mosquitto".into());
    candidates.into_iter().find(|p| p.is_file())
}

/// A free TCP port on loopback (bound and released: good enough for tests).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Broker {
    pub fn start() -> Result<Broker, String> {
        let exe = mosquitto_path()
            .ok_or("mosquitto is not installed (apt-get install mosquitto; scripts/setup.sh does it)")?;
        let port = free_port().map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("linesight-broker-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&exe)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let mut broker = Broker { port, child, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("mosquitto did not listen on port {port} within 5 s"));
            }
            if let Ok(Some(status)) = broker.child.try_wait() {
                return Err(format!("mosquitto exited at start: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }

    /// Stop the broker (as a broker outage would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
