//! The `http` section: the token file must exist, hold a token, and be readable by the
//! service's user alone (anyone who can read it can reload the config and write points).

use super::super::diagnostic::Collector;
use super::super::types::HttpConfig;

/// The shortest token accepted: a guessable token is no lock.
pub const MIN_TOKEN_CHARS: usize = 16;

pub(super) fn check(h: &HttpConfig, c: &mut Collector) {
    if !(h.live_fps > 0.0 && h.live_fps <= 30.0) {
        c.at(
            &["http", "live_fps"],
            format!("live_fps {} is out of range", h.live_fps),
            "use more than 0 and at most 30",
        );
    }
    if h.gallery == 0 || h.gallery > 500 {
        c.at(&["http", "gallery"], format!("gallery of {} parts is out of range", h.gallery), "use 1 to 500");
    }
    if let Some(t) = &h.tls {
        for (key, path) in [("cert", &t.cert), ("key", &t.key)] {
            if !path.is_file() {
                c.at(
                    &["http", "tls", key],
                    format!("http.tls.{key} `{}` does not exist", path.display()),
                    "give the PEM file's path (relative paths start at the config file's folder)",
                );
            }
        }
    }
    if let Some(path) = &h.token_file {
        if let Err((problem, hint)) = token_problem(path) {
            c.at(&["http", "token_file"], problem, hint);
        }
    }
}

/// Why `path` is not a usable token file, and how to fix it.
fn token_problem(path: &std::path::Path) -> Result<(), (String, String)> {
    let shown = path.display();
    let make =
        format!("create it with `umask 077; head -c 32 /dev/urandom | base64 > {shown}` and `chown linesight {shown}`");
    let meta = std::fs::metadata(path)
        .map_err(|e| (format!("http.token_file `{shown}` cannot be read: {e}"), make.clone()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err((
                format!("http.token_file `{shown}` has mode {mode:04o}: others can read the token"),
                format!("chmod 600 {shown}"),
            ));
        }
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| (format!("http.token_file `{shown}` cannot be read: {e}"), make.clone()))?;
    if token.trim().chars().count() < MIN_TOKEN_CHARS {
        return Err((format!("http.token_file `{shown}` holds fewer than {MIN_TOKEN_CHARS} characters"), make));
    }
    Ok(())
}
