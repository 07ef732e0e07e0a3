//! Who may see the dashboard. `mahavishnu dashboard` asks `serve` (with the bearer token) for a login
//! code and prints a URL carrying it; the browser trades the code, once, for a session cookie
//! (HttpOnly, SameSite=Strict). The URL is useless after that, and so is a code that was not used in
//! time. Secrets are compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mahavishnu_core::digest::random_hex;

/// The cookie that carries a browser's session.
pub const COOKIE: &str = "mahavishnu_dashboard";
/// How long a login code may wait to be used.
pub const CODE_LIFETIME: Duration = Duration::from_secs(120);
/// How long a browser stays logged in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Login codes not used yet, and the sessions they became.
#[derive(Default)]
pub struct Logins {
    codes: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Logins {
    /// A new one-time code.
    pub fn new_code(&self) -> std::io::Result<String> {
        let code = random_hex(24)?;
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, made| made.elapsed() < CODE_LIFETIME);
        codes.insert(code.clone(), Instant::now());
        Ok(code)
    }

    /// Trades a code for a new session id; `None` when the code is unknown, used or too old.
    pub fn redeem(&self, code: &str) -> Option<String> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let known = codes
            .keys()
            .find(|known| same_secret(known.as_bytes(), code.as_bytes()))
            .cloned()?;
        let made = codes.remove(&known)?;
        if made.elapsed() >= CODE_LIFETIME {
            return None;
        }
        let session = random_hex(32).ok()?;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, started| started.elapsed() < SESSION_LIFETIME);
        sessions.insert(session.clone(), Instant::now());
        Some(session)
    }

    /// Whether `session` is a live session id.
    pub fn is_session(&self, session: &str) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.iter().any(|(known, started)| {
            started.elapsed() < SESSION_LIFETIME
                && same_secret(known.as_bytes(), session.as_bytes())
        })
    }
}

/// The session id a request's `Cookie` header carries, if any.
pub fn session_of(cookie_header: Option<&str>) -> Option<&str> {
    cookie_header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(session: &str) -> String {
    format!(
        "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_logs_in_once() {
        let logins = Logins::default();
        let code = logins.new_code().unwrap();
        assert_eq!(code.len(), 48);
        let session = logins.redeem(&code).unwrap();
        assert!(logins.is_session(&session));
        assert_eq!(logins.redeem(&code), None, "a code works once");
        assert_eq!(logins.redeem("0"), None);
        assert!(!logins.is_session("0"));
        assert!(!logins.is_session(""));
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        assert_eq!(
            session_of(Some("a=b; mahavishnu_dashboard=abc; c=d")),
            Some("abc")
        );
        assert_eq!(session_of(Some("mahavishnu_dashboardx=abc")), None);
        assert_eq!(session_of(None), None);
        let cookie = set_cookie("abc");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    }
}
