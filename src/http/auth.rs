//! Who may change anything through the page: the holder of the bearer token in
//! `http.token_file`, at a bounded rate. Reading needs no token (the page binds to localhost
//! unless configured otherwise); every action does. No cookies, so no cross-site request can
//! borrow a logged-in browser: a request carries the token itself or is refused.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Action requests (good or bad token alike) accepted per [`RATE_WINDOW`]: bounds guessing
/// the token as well as a runaway script.
pub const RATE_LIMIT: usize = 20;
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why an action was refused, as the HTTP status and the reason shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// The token and the recent action requests.
pub struct Auth {
    token: Option<String>,
    recent: Mutex<VecDeque<Instant>>,
}

impl Auth {
    /// Read the token from `path` (checked by check-config: it exists, 0600, long enough).
    /// None: a read-only page.
    pub fn load(path: Option<&Path>) -> Result<Auth, String> {
        let token = match path {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    format!("http.token_file `{}` cannot be read: {e} (check its owner and mode 0600)", p.display())
                })?;
                Some(text.trim().to_string())
            }
        };
        Ok(Auth { token, recent: Mutex::new(VecDeque::new()) })
    }

    /// An auth for tests and the demo with the token given directly.
    pub fn with_token(token: Option<&str>) -> Auth {
        Auth { token: token.map(str::to_string), recent: Mutex::new(VecDeque::new()) }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// May the request with this `Authorization` header value act? Counts against the rate
    /// whatever the answer.
    pub fn check(&self, authorization: Option<&str>, now: Instant) -> Result<(), Refusal> {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            while recent.front().is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW) {
                recent.pop_front();
            }
            if recent.len() >= RATE_LIMIT {
                return Err(Refusal {
                    status: 429,
                    reason: format!(
                        "too many actions: at most {RATE_LIMIT} per {} s through the page; wait and try again",
                        RATE_WINDOW.as_secs()
                    ),
                });
            }
            recent.push_back(now);
        }
        let Some(token) = &self.token else {
            return Err(Refusal {
                status: 403,
                reason: "the page is read-only: no http.token_file is configured".into(),
            });
        };
        let given = authorization.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        match given {
            None => Err(Refusal {
                status: 401,
                reason: "this action needs the token: send `Authorization: Bearer <token from http.token_file>`".into(),
            }),
            Some(g) if same(g.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(Refusal { status: 401, reason: "wrong token".into() }),
        }
    }
}

/// Byte equality that takes the same time wherever the first difference is (the length is no
/// secret: every token file holds one of about the same length).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn actions_need_the_right_bearer_token() {
        let a = Auth::with_token(Some(TOKEN));
        let now = Instant::now();
        assert_eq!(a.check(None, now).unwrap_err().status, 401);
        assert_eq!(a.check(Some(TOKEN), now).unwrap_err().status, 401, "the Bearer scheme is required");
        let wrong = a.check(Some("Bearer 0123456789abcdef-tokeX"), now).unwrap_err();
        assert_eq!((wrong.status, wrong.reason.as_str()), (401, "wrong token"));
        assert!(a.check(Some(&format!("Bearer {TOKEN}")), now).is_ok());
        assert!(a.check(Some(&format!("Bearer {TOKEN}x")), now).is_err(), "a longer token is another token");
    }

    #[test]
    fn without_a_token_file_the_page_is_read_only() {
        let r = Auth::with_token(None).check(Some("Bearer anything"), Instant::now()).unwrap_err();
        assert_eq!(r.status, 403);
        assert!(r.reason.contains("read-only"), "{}", r.reason);
    }

    #[test]
    fn actions_are_rate_limited_good_token_or_bad() {
        let a = Auth::with_token(Some(TOKEN));
        let t0 = Instant::now();
        for i in 0..RATE_LIMIT {
            let header = if i % 2 == 0 { "Bearer guess".to_string() } else { format!("Bearer {TOKEN}") };
            assert_ne!(a.check(Some(&header), t0).map_err(|r| r.status), Err(429));
        }
        let limited = a.check(Some(&format!("Bearer {TOKEN}")), t0).unwrap_err();
        assert_eq!(limited.status, 429, "{limited:?}");
        assert!(a.check(Some(&format!("Bearer {TOKEN}")), t0 + RATE_WINDOW).is_ok(), "the window moves on");
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
        let a = Auth::load(Some(&p)).unwrap();
        assert!(a.check(Some(&format!("Bearer {TOKEN}")), Instant::now()).is_ok());
        let e = Auth::load(Some(&dir.path().join("missing"))).err().unwrap();
        assert!(e.contains("http.token_file") && e.contains("missing"), "{e}");
    }
}
