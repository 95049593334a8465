//! Failed-login throttling, per account and per client address, over a
//! sliding window. Kept in memory: a restart forgets it, which costs an
//! attacker a restart they cannot cause.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginThrottle {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    window: Duration,
    per_account: usize,
    per_ip: usize,
}

/// Beyond this many tracked keys, entries with no failure in the window are swept.
const SWEEP_ABOVE: usize = 10_000;

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new(Duration::from_secs(60), 5, 20)
    }
}

impl LoginThrottle {
    pub fn new(window: Duration, per_account: usize, per_ip: usize) -> Self {
        LoginThrottle {
            failures: Mutex::new(HashMap::new()),
            window,
            per_account,
            per_ip,
        }
    }

    fn keys(account: &str, ip: &str) -> [(String, bool); 2] {
        [
            (format!("account:{account}"), true),
            (format!("ip:{ip}"), false),
        ]
    }

    /// `Err(seconds)` when either the account or the address has used up its
    /// failures in the window: the caller answers 429 with `Retry-After`.
    pub fn check(&self, account: &str, ip: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let mut wait = 0u64;
        for (key, is_account) in Self::keys(account, ip) {
            let limit = if is_account {
                self.per_account
            } else {
                self.per_ip
            };
            if let Some(q) = map.get_mut(&key) {
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                if q.len() >= limit {
                    if let Some(oldest) = q.front() {
                        let left = self.window.saturating_sub(now.duration_since(*oldest));
                        wait = wait.max(left.as_secs() + 1);
                    }
                }
            }
        }
        if wait > 0 {
            Err(wait)
        } else {
            Ok(())
        }
    }

    pub fn record_failure(&self, account: &str, ip: &str) {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() > SWEEP_ABOVE {
            let window = self.window;
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        for (key, _) in Self::keys(account, ip) {
            map.entry(key).or_default().push_back(now);
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn clear_account(&self, account: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&format!("account:{account}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixth_failure_in_the_window_is_refused() {
        let t = LoginThrottle::default();
        for _ in 0..5 {
            assert!(t.check("a@b.cd", "1.2.3.4").is_ok());
            t.record_failure("a@b.cd", "1.2.3.4");
        }
        let wait = t.check("a@b.cd", "1.2.3.4").unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(t.check("other@b.cd", "5.6.7.8").is_ok());
        t.clear_account("a@b.cd");
        assert!(t.check("a@b.cd", "9.9.9.9").is_ok());
    }

    #[test]
    fn per_address_limit_spans_accounts() {
        let t = LoginThrottle::new(Duration::from_secs(60), 5, 3);
        for i in 0..3 {
            t.record_failure(&format!("u{i}@x.io"), "1.1.1.1");
        }
        assert!(t.check("new@x.io", "1.1.1.1").is_err());
        assert!(t.check("new@x.io", "2.2.2.2").is_ok());
    }
}
