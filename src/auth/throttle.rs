//! Password-guess throttling, per account and per client address, over a
//! sliding window, with a growing lockout per account. Kept in memory: a
//! restart forgets it, which costs an attacker a restart they cannot cause.
//!
//! An attempt is *reserved* before its password is hashed and counts as a
//! failure until it is proved right: a hash takes a quarter of a second,
//! and counting failures only after it let N parallel guesses through where
//! the limit allows 5.
//!
//! Once an account has had `per_account` failures in the window it is
//! locked for `lockout_base`, doubling with each further lockout up to
//! `lockout_cap`; a success, a quiet spell of `lockout_cap` after the last
//! lockout, or a new password forgets the back-off. The new password is how
//! `voxflow admin reset-password` (another process) unlocks an account:
//! each account's entry remembers a fingerprint of the stored password hash
//! it was counted against, and the next attempt that reads a different
//! hash starts the entry afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub window: Duration,
    pub per_account: usize,
    pub per_ip: usize,
    pub lockout_base: Duration,
    pub lockout_cap: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            window: Duration::from_secs(60),
            per_account: 5,
            per_ip: 20,
            lockout_base: Duration::from_secs(60),
            lockout_cap: Duration::from_secs(15 * 60),
        }
    }
}

/// A short digest of an account's stored password hash: enough to notice
/// that it changed, without keeping hashes in this map.
pub type Credential = [u8; 16];

pub fn credential_of(stored_hash: &str) -> Credential {
    let digest = ring::digest::digest(&ring::digest::SHA256, stored_hash.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_ref()[..16]);
    out
}

/// Failures in the window plus attempts still being checked.
#[derive(Debug, Default)]
struct Window {
    failures: VecDeque<Instant>,
    in_flight: usize,
}

impl Window {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.failures.pop_front();
        }
    }

    /// How long until one more attempt fits, or `None` when it does now.
    fn wait(&self, now: Instant, window: Duration, limit: usize) -> Option<Duration> {
        if self.failures.len() + self.in_flight < limit {
            return None;
        }
        // Full with failures: the oldest must leave the window. Full with
        // attempts in flight: they settle within a hash or two, then the
        // client learns whether a lockout followed.
        let oldest = if self.failures.len() >= limit {
            self.failures.front()
        } else {
            None
        };
        Some(oldest.map_or(Duration::from_secs(1), |t| {
            window.saturating_sub(now.duration_since(*t))
        }))
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.failures.is_empty()
    }
}

#[derive(Debug, Default)]
struct Account {
    window: Window,
    credential: Option<Credential>,
    locked_until: Option<Instant>,
    /// Lockouts so far, each twice as long as the one before.
    lockouts: u32,
}

impl Account {
    /// Forgets failures and back-off, not the attempts still in flight
    /// (their outcome is still to be recorded).
    fn forgive(&mut self) {
        self.window.failures.clear();
        self.locked_until = None;
        self.lockouts = 0;
    }
}

#[derive(Default)]
struct Inner {
    accounts: HashMap<String, Account>,
    ips: HashMap<String, Window>,
}

pub struct LoginThrottle {
    inner: Mutex<Inner>,
    limits: Limits,
}

/// Beyond this many tracked keys, entries with nothing left to remember are swept.
const SWEEP_ABOVE: usize = 10_000;

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new(Limits::default())
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// One attempt in flight. Settle it with `succeed`, `fail` or `release`;
/// dropped unsettled (the client went away mid-hash, say) it counts as a
/// failure, so abandoning requests buys an attacker nothing.
pub struct Reservation<'a> {
    throttle: &'a LoginThrottle,
    account: String,
    ip: String,
    settled: bool,
}

enum Outcome {
    Success,
    Failure,
    Released,
}

impl Reservation<'_> {
    /// The password was right: the account's failures and back-off are
    /// forgotten (the address's are not).
    pub fn succeed(mut self) {
        self.settle(Outcome::Success, Instant::now());
    }

    pub fn fail(mut self) {
        self.settle(Outcome::Failure, Instant::now());
    }

    /// The password was never checked (the server was too busy): nothing is
    /// counted.
    pub fn release(mut self) {
        self.settle(Outcome::Released, Instant::now());
    }

    fn settle(&mut self, outcome: Outcome, now: Instant) {
        if self.settled {
            return;
        }
        self.settled = true;
        self.throttle.settle(&self.account, &self.ip, outcome, now);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.settle(Outcome::Failure, Instant::now());
    }
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> Self {
        LoginThrottle {
            inner: Mutex::new(Inner::default()),
            limits,
        }
    }

    /// Reserves an attempt on `account` from `ip`, whose stored password
    /// hash (when the account exists) fingerprints as `credential`.
    /// `Err(seconds)` when either is used up: the caller answers 429 with
    /// `Retry-After`.
    pub fn reserve(
        &self,
        account: &str,
        ip: &str,
        credential: Option<Credential>,
    ) -> Result<Reservation<'_>, u64> {
        self.reserve_at(account, ip, credential, Instant::now())
    }

    fn reserve_at(
        &self,
        account: &str,
        ip: &str,
        credential: Option<Credential>,
        now: Instant,
    ) -> Result<Reservation<'_>, u64> {
        let limits = self.limits;
        // A poisoned lock means a panic mid-update; the counts are still
        // counts, so carry on with them rather than stop throttling.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        if inner.accounts.len() + inner.ips.len() > SWEEP_ABOVE {
            inner.sweep(now, limits);
        }
        let entry = inner.accounts.entry(account.to_string()).or_default();
        if entry.credential != credential {
            // A new password (reset by an operator, changed by the owner):
            // guesses against the old one say nothing about the new one.
            entry.forgive();
            entry.credential = credential;
        }
        entry.window.prune(now, limits.window);
        let mut wait = entry
            .locked_until
            .filter(|until| *until > now)
            .map(|until| until - now);
        wait = wait.max(entry.window.wait(now, limits.window, limits.per_account));
        let address = inner.ips.entry(ip.to_string()).or_default();
        address.prune(now, limits.window);
        wait = wait.max(address.wait(now, limits.window, limits.per_ip));
        if let Some(wait) = wait {
            return Err(retry_secs(wait));
        }
        address.in_flight += 1;
        entry.window.in_flight += 1;
        Ok(Reservation {
            throttle: self,
            account: account.to_string(),
            ip: ip.to_string(),
            settled: false,
        })
    }

    fn settle(&self, account: &str, ip: &str, outcome: Outcome, now: Instant) {
        let limits = self.limits;
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        let failed = matches!(outcome, Outcome::Failure);
        if let Some(address) = inner.ips.get_mut(ip) {
            address.in_flight = address.in_flight.saturating_sub(1);
            if failed {
                address.failures.push_back(now);
            }
        }
        let entry = inner.accounts.entry(account.to_string()).or_default();
        entry.window.in_flight = entry.window.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Success => entry.forgive(),
            Outcome::Released => {}
            Outcome::Failure => {
                entry.window.prune(now, limits.window);
                entry.window.failures.push_back(now);
                if entry.window.failures.len() >= limits.per_account {
                    lock_out(entry, now, limits);
                }
            }
        }
    }
}

/// Locks the account for the next back-off step; the failures that caused
/// it are spent, so the next lockout needs a full window's worth again.
fn lock_out(entry: &mut Account, now: Instant, limits: Limits) {
    let quiet_since_last = entry
        .locked_until
        .is_none_or(|until| now.saturating_duration_since(until) >= limits.lockout_cap);
    if quiet_since_last {
        entry.lockouts = 0;
    }
    let doubling = 2u32.saturating_pow(entry.lockouts.min(16));
    let length = limits
        .lockout_base
        .saturating_mul(doubling)
        .min(limits.lockout_cap);
    entry.locked_until = Some(now + length);
    entry.lockouts = entry.lockouts.saturating_add(1);
    entry.window.failures.clear();
}

impl Inner {
    /// Drops what no longer limits anyone: keeps attempts in flight, recent
    /// failures and back-off that a quiet spell has not yet forgiven.
    fn sweep(&mut self, now: Instant, limits: Limits) {
        self.ips.retain(|_, w| {
            w.prune(now, limits.window);
            !w.idle()
        });
        self.accounts.retain(|_, a| {
            a.window.prune(now, limits.window);
            let remembered = a
                .locked_until
                .is_some_and(|until| now.saturating_duration_since(until) < limits.lockout_cap);
            !a.window.idle() || remembered
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = "1.2.3.4";

    /// `n` attempts on `account` from `ip`, each settled as `outcome`.
    fn settle_n(
        t: &LoginThrottle,
        (account, ip, credential): (&str, &str, Option<Credential>),
        outcome: fn() -> Outcome,
        n: usize,
        now: Instant,
    ) {
        for _ in 0..n {
            let mut r = t
                .reserve_at(account, ip, credential, now)
                .expect("not throttled");
            r.settle(outcome(), now);
        }
    }

    fn fail_n(t: &LoginThrottle, account: &str, ip: &str, n: usize, now: Instant) {
        settle_n(t, (account, ip, None), || Outcome::Failure, n, now);
    }

    #[test]
    fn sixth_failure_in_the_window_is_refused_and_a_success_forgives() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        fail_n(&t, "a@b.cd", IP, 5, now);
        let wait = t.reserve_at("a@b.cd", IP, None, now).err().unwrap();
        assert_eq!(wait, 60, "locked for a minute");
        assert!(t.reserve_at("other@b.cd", "5.6.7.8", None, now).is_ok());
        let later = now + Duration::from_secs(60);
        let mut r = t.reserve_at("a@b.cd", IP, None, later).ok().unwrap();
        r.settle(Outcome::Success, later);
        drop(r);
        fail_n(&t, "a@b.cd", IP, 4, later);
        assert!(
            t.reserve_at("a@b.cd", IP, None, later).is_ok(),
            "the success forgave the earlier failures"
        );
    }

    #[test]
    fn attempts_in_flight_count_before_they_fail() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let held: Vec<_> = (0..5)
            .map(|_| t.reserve_at("a@b.cd", IP, None, now).ok().unwrap())
            .collect();
        assert_eq!(
            t.reserve_at("a@b.cd", IP, None, now).err(),
            Some(1),
            "five in flight fill the account's allowance"
        );
        // Dropped unsettled: counted as failures, which lock the account.
        drop(held);
        assert!(t.reserve_at("a@b.cd", IP, None, now).err().unwrap() >= 59);
        // Released attempts count nothing.
        let t = LoginThrottle::default();
        settle_n(&t, ("x@b.cd", IP, None), || Outcome::Released, 10, now);
        assert!(t.reserve_at("x@b.cd", IP, None, now).is_ok());
    }

    #[test]
    fn lockouts_double_up_to_the_cap_and_a_quiet_spell_forgives_them() {
        let t = LoginThrottle::default();
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..7 {
            fail_n(&t, "admin@x.io", IP, 5, now);
            let wait = t.reserve_at("admin@x.io", IP, None, now).err().unwrap();
            lengths.push(wait / 60);
            // Still locked a second before the end, free at the end.
            let end = now + Duration::from_secs(wait);
            assert!(t
                .reserve_at("admin@x.io", IP, None, end - Duration::from_secs(1))
                .is_err());
            now = end;
        }
        assert_eq!(lengths, vec![1, 2, 4, 8, 15, 15, 15]);

        now += Duration::from_secs(15 * 60);
        fail_n(&t, "admin@x.io", IP, 5, now);
        assert_eq!(
            t.reserve_at("admin@x.io", IP, None, now).err(),
            Some(60),
            "after a quiet spell the back-off starts over"
        );
    }

    #[test]
    fn a_new_password_unlocks_the_account() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let old = Some(credential_of("pbkdf2-sha256$1$aa$bb"));
        settle_n(&t, ("a@b.cd", IP, old), || Outcome::Failure, 5, now);
        assert!(t.reserve_at("a@b.cd", IP, old, now).is_err());
        let new = Some(credential_of("pbkdf2-sha256$1$cc$dd"));
        assert!(t.reserve_at("a@b.cd", IP, new, now).is_ok());
    }

    #[test]
    fn per_address_limit_spans_accounts() {
        let t = LoginThrottle::new(Limits {
            per_ip: 3,
            ..Limits::default()
        });
        let now = Instant::now();
        for i in 0..3 {
            fail_n(&t, &format!("u{i}@x.io"), "1.1.1.1", 1, now);
        }
        assert!(t.reserve_at("new@x.io", "1.1.1.1", None, now).is_err());
        assert!(t.reserve_at("new@x.io", "2.2.2.2", None, now).is_ok());
    }
}
