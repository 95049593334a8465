//! PBKDF2-HMAC-SHA256 password hashes in one self-describing string,
//! `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`, so the cost can rise
//! later without invalidating stored hashes.
//!
//! Hashing costs about a third of a second of CPU by design: call these from
//! `tokio::task::spawn_blocking`, never on an async worker thread. The
//! server goes through `HashQueue`, which also bounds how many run at once.

use std::num::NonZeroU32;
use std::sync::Arc;

use ring::pbkdf2;
use tokio::sync::Semaphore;

use super::random_bytes;

const SCHEME: &str = "pbkdf2-sha256";
/// OWASP's 2023 figure for PBKDF2-HMAC-SHA256.
pub const ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

pub fn hash(password: &str) -> String {
    let salt: [u8; SALT_LEN] = random_bytes();
    let mut out = [0u8; HASH_LEN];
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "{SCHEME}${}${}${}",
        iterations,
        hex::encode(salt),
        hex::encode(out)
    )
}

/// Checks `password` against a stored hash in constant time. A malformed
/// stored string never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(SCHEME), Some(iter), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iterations), Ok(salt), Ok(expected)) = (
        iter.parse::<u32>().ok().and_then(NonZeroU32::new),
        hex::decode(salt),
        hex::decode(expected),
    ) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &expected,
    )
    .is_ok()
}

/// A hash of a random password, to verify against when an account does not
/// exist, so that an unknown email costs the same time as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&hex::encode(random_bytes::<16>())))
}

/// A random password that meets the policy (lower, upper, digit), for the
/// first admin and for resets without a password given.
pub fn generate() -> String {
    // 20 random bytes over a 64-character alphabet (no modulo bias): 120 bits.
    // A fixed suffix guarantees the three character classes whatever the
    // random part holds.
    let bytes: [u8; 20] = random_bytes();
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b & 63)] as char)
        .collect();
    s.push_str("-Vx7");
    s
}

/// How many hashes may run at once: one per core. More would only share
/// the same cores, each finishing later, while the requests that need no
/// hash (and the async workers serving them) wait for CPU behind them.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[derive(Debug, thiserror::Error)]
pub enum HashQueueError {
    /// Every worker is busy and the queue is full: the caller answers 503
    /// with `Retry-After` instead of holding the request for many seconds.
    #[error("too many passwords waiting to be checked")]
    Full,
    #[error("the password hashing task failed")]
    Failed,
}

/// At most `workers` hashes run at once on the blocking pool; up to `queue`
/// more wait their turn; beyond that, `Full` at once. Cloning shares it.
#[derive(Clone)]
pub struct HashQueue {
    running: Arc<Semaphore>,
    admitted: Arc<Semaphore>,
}

impl HashQueue {
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        HashQueue {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers.saturating_add(queue))),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashQueueError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| HashQueueError::Full)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashQueueError::Failed)?;
        // The permits move into the blocking task: a client that hangs up
        // mid-hash does not free a slot while its hash still runs.
        tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            work()
        })
        .await
        .map_err(|_| HashQueueError::Failed)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashQueueError> {
        self.run(move || hash(&password)).await
    }

    /// `None` checks against a decoy hash so an unknown account costs the
    /// same time as a wrong password, and is never valid.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashQueueError> {
        self.run(move || match stored {
            Some(h) => verify(&password, &h),
            None => {
                verify(&password, decoy_hash());
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_format() {
        let h = hash("Secret123");
        assert!(h.starts_with("pbkdf2-sha256$600000$"));
        assert!(verify("Secret123", &h));
        assert!(!verify("Secret124", &h));
        assert!(!verify("Secret123", "garbage"));
        assert_ne!(h, hash("Secret123"), "salts differ");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_runs_workers_at_once_and_refuses_beyond_its_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let queue = HashQueue::new(2, 3);
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (queue, now, peak, gate) = (queue.clone(), now.clone(), peak.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                queue
                    .run(move || {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        let _ = gate.lock().unwrap().recv();
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            }));
        }
        // Five admitted (two running, three waiting): the sixth is refused.
        while queue.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(queue.run(|| ()).await, Err(HashQueueError::Full)));
        // Both workers have started their job before any is let go (on a
        // busy machine the blocking pool may start the second one late).
        while now.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        for _ in 0..5 {
            release.send(()).unwrap();
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert!(queue.run(|| ()).await.is_ok(), "free again");
    }
}
