//! Password hashing: argon2id at OWASP's parameters (m = 19 MiB, t = 2,
//! p = 1 by default), on a bounded pool of blocking threads.
//!
//! A hash costs tens of milliseconds of CPU. Run on the async runtime it
//! would stall every request on that worker; run on an unbounded blocking
//! pool a login burst would queue hundreds of 19 MiB hashes at once. A
//! semaphore sized to the cores admits that many hashes, the rest wait their
//! turn, and token requests keep their latency.
//!
//! Each admitted hash works in a 19 MiB block buffer kept from one hash to
//! the next, at most one buffer per permit. The `argon2` crate's own entry
//! points allocate and zero a fresh buffer per hash; on a busy server the
//! page faults and the zeroing cost a tenth or more of every login. A hash
//! at the configured parameters (new hashes, and every stored one made since
//! they were set) is computed into a kept buffer and compared in constant
//! time; anything else (older parameters, imported formats) takes the
//! allocating path, which is correct for every format and only slower.
//!
//! The buffers are made on first use and let go when they have sat unused
//! for [`IDLE_RELEASE`]: a server that has not hashed for a while holds no
//! argon2 memory (19 MiB a permit), and one under a steady trickle of logins
//! keeps a single buffer warm, since the most recently used one is lent
//! first.
//!
//! Imported hashes (bcrypt, PBKDF2, scrypt) verify too, and ask to be
//! replaced with argon2id on the next successful login.
//!
//! An unknown user is verified against a dummy hash at the same parameters,
//! so it takes the same path and costs the same time as a wrong password
//! (ASVS 6.3.8). The dummy is a PHC string with a random salt and a random
//! output rather than the hash of some password: verifying it computes the
//! same argon2id, no password matches it, and start-up computes nothing.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq as _;
use tokio::sync::Semaphore;

use crate::config::PasswordSettings;

/// Hashes imported from other systems (bcrypt, PBKDF2, scrypt, argon2),
/// verified once and upgraded to argon2id. Part of password verification,
/// so it sits here rather than with the migration that imports them.
pub mod imported;

pub const ARGON2ID: &str = "argon2id";

/// The most common passwords, one a line; `#` starts a comment line.
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

/// Whether `password` is on the common list, ignoring case ("Password1" is
/// guessed as early as "password1").
fn is_common(password: &str) -> bool {
    let password = password.to_lowercase();
    COMMON_PASSWORDS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == password)
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The password matches; `rehash` asks for the hash to be replaced with
    /// one at today's parameters.
    Yes {
        rehash: bool,
    },
    No,
}

pub struct Passwords {
    params: Params,
    /// Admits at most `hashing_threads` hashes at once.
    permits: Arc<Semaphore>,
    /// Argon2 working memory: a holder of a permit borrows one buffer and
    /// gives it back before the permit is released, so there are never more
    /// buffers than permits. Filled lazily, so an instance that never hashes
    /// holds none, and emptied again when idle.
    memory: Arc<Mutex<Memory>>,
    dummy_hash: Arc<str>,
    min_length: usize,
}

/// How long a kept argon2 buffer may sit unused before it is let go. Long
/// enough that a server taking a login every few seconds never makes a
/// buffer twice; short enough that one burst does not pin 19 MiB a permit
/// for the life of the process. Making a buffer again costs its page faults
/// once (~1 ms), against 15–20 ms for the hash itself.
pub const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// The pool of argon2 buffers.
struct Memory {
    /// [`IDLE_RELEASE`], shorter in tests.
    release_after: Duration,
    /// Buffers no hash is using, each with when it was given back; the most
    /// recent last, lent first.
    idle: Vec<(Vec<Block>, Instant)>,
    /// Buffers lent out (or about to be made) for hashes running now.
    lent: usize,
    /// Whether a task that lets idle buffers go is running.
    reaping: bool,
}

impl Memory {
    fn lock(pool: &Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
        // The pool's state stays consistent at every step a panic could
        // interrupt; a poisoned lock is still usable.
        pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Borrows the most recently used buffer, if any, and makes sure
    /// something will let it go once it idles.
    fn lend(pool: &Arc<Mutex<Memory>>) -> Lent {
        let mut memory = Memory::lock(pool);
        memory.lent += 1;
        let blocks = memory.idle.pop().map(|(blocks, _)| blocks);
        if !memory.reaping {
            memory.reaping = true;
            tokio::spawn(reap(pool.clone()));
        }
        Lent {
            pool: pool.clone(),
            blocks,
        }
    }
}

/// Every [`IDLE_RELEASE`], lets go of the buffers that sat unused for that
/// long; ends when there are none left and none lent.
async fn reap(pool: Arc<Mutex<Memory>>) {
    let every = Memory::lock(&pool).release_after;
    loop {
        tokio::time::sleep(every).await;
        let released = {
            let mut memory = Memory::lock(&pool);
            let (keep, release): (Vec<_>, Vec<_>) = std::mem::take(&mut memory.idle)
                .into_iter()
                .partition(|(_, at)| at.elapsed() < every);
            memory.idle = keep;
            if memory.idle.is_empty() && memory.lent == 0 {
                memory.reaping = false;
                return;
            }
            release
        };
        // Freed outside the lock: a hash waiting to borrow does not wait
        // on 19 MiB going back to the allocator.
        drop(released);
    }
}

/// A buffer borrowed from the pool for one hash; it goes back when this is
/// dropped, also when the hash panics (its contents do not matter: every
/// hash overwrites the blocks it reads).
struct Lent {
    pool: Arc<Mutex<Memory>>,
    blocks: Option<Vec<Block>>,
}

impl Lent {
    /// The blocks, made now if the pool had none to lend.
    fn blocks(&mut self, params: &Params) -> &mut [Block] {
        self.blocks.get_or_insert_with(|| new_memory(params))
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut memory = Memory::lock(&self.pool);
        memory.lent -= 1;
        if let Some(blocks) = self.blocks.take() {
            memory.idle.push((blocks, Instant::now()));
        }
    }
}

impl Passwords {
    pub fn new(settings: &PasswordSettings) -> Result<Self, PasswordError> {
        Self::releasing_after(settings, IDLE_RELEASE)
    }

    fn releasing_after(
        settings: &PasswordSettings,
        release_after: Duration,
    ) -> Result<Self, PasswordError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| PasswordError::Params(e.to_string()))?;
        let threads = settings
            .hashing_threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1);
        let dummy_hash = unmatchable_hash(&params)?.into();
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(threads)),
            memory: Arc::new(Mutex::new(Memory {
                release_after,
                idle: Vec::new(),
                lent: 0,
                reaping: false,
            })),
            dummy_hash,
            min_length: settings.min_length,
        })
    }

    /// The policy for a password set through Switchyard. No maximum below
    /// 1,024 characters and no truncation (ASVS 6.2.x): long passphrases work.
    pub fn check_policy(&self, password: &str) -> Result<(), String> {
        let n = password.chars().count();
        if n < self.min_length {
            return Err(format!(
                "a password must be at least {} characters",
                self.min_length
            ));
        }
        if n > 1024 {
            return Err("a password must be at most 1,024 characters".into());
        }
        if is_common(password) {
            return Err(
                "that password is among the most common ones, which are tried first; choose another"
                    .into(),
            );
        }
        Ok(())
    }

    /// [`Passwords::check_policy`] for a password that will belong to the
    /// user known by `identifiers` (email, username): a password equal to
    /// one of them, or to an email's local part, is refused too, since
    /// whoever tries to log in as the user already knows it (NIST SP 800-63B
    /// §5.1.1.2, "context-specific words"). Case is ignored throughout.
    pub fn check_policy_for(&self, password: &str, identifiers: &[&str]) -> Result<(), String> {
        self.check_policy(password)?;
        let password = password.to_lowercase();
        for id in identifiers {
            let local = id.rsplit_once('@').map(|(local, _)| local);
            if std::iter::once(*id)
                .chain(local)
                .any(|candidate| candidate.to_lowercase() == password)
            {
                return Err(
                    "a password must not be the user's email address, its local part or the username"
                        .into(),
                );
            }
        }
        Ok(())
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let params = self.params.clone();
        self.run(move |memory| hash_in(&params, &password, memory))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when
    /// there is nothing stored, so both paths take the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<Verified, PasswordError> {
        let real = stored.is_some();
        let params = self.params.clone();
        let dummy = self.dummy_hash.clone();
        let (ok, rehash) = self
            .run(move |memory| {
                let hash = stored.as_deref().unwrap_or(&dummy);
                let ok = match verify_configured(&params, hash, &password, memory) {
                    Some(ok) => ok,
                    None => imported::verify(hash, &password),
                };
                Ok((ok, needs_rehash(hash, &params)))
            })
            .await?;
        Ok(if ok && real {
            Verified::Yes { rehash }
        } else {
            Verified::No
        })
    }

    /// Runs `work` on a blocking thread once a permit is free, with the
    /// permit's working memory.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let mut lent = Memory::lend(&self.memory);
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            lower_priority();
            let done = work(lent.blocks(&params));
            // The buffer goes back, then the permit, here on the hashing
            // thread the moment the hash ends: the next login waiting for a
            // permit is woken at once, not after this task has been polled
            // again on a runtime worker (on a busy two-core machine that
            // hand-off left a permit idle for a noticeable share of a
            // 15–20 ms hash). A panic drops both the same way.
            drop(lent);
            drop(permit);
            done
        })
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?
    }
}

/// Hashes run below the priority of the threads that serve requests (nice
/// +5, once per blocking thread). With every permit busy on a machine with
/// as many cores as permits, a hash would otherwise share a core equally
/// with the async runtime: the short work of a request (a refresh grant, a
/// page, the next login's lookups that feed the pool) would wait behind
/// 15–20 ms hashes, and a permit would sit idle while the login that takes
/// it next is still being read. The hashes get the same CPU overall; they
/// yield first. A thread keeps the lower priority for whatever blocking work
/// tokio gives it later (an unprivileged thread may lower its priority but
/// not raise it again), all of it background work such as DNS lookups.
fn lower_priority() {
    thread_local!(static LOWERED: Cell<bool> = const { Cell::new(false) });
    LOWERED.with(|lowered| {
        if !lowered.get() {
            // SAFETY: setpriority takes no pointers; on Linux, PRIO_PROCESS
            // with who = 0 applies to the calling thread only
            // (setpriority(2), "BUGS": threads have their own nice value).
            // A failure leaves the priority as it was, which is harmless.
            // Relative to the process's own nice value, so a server started
            // under `nice` keeps the same gap.
            #[cfg(target_os = "linux")]
            unsafe {
                let now = libc::getpriority(libc::PRIO_PROCESS, 0);
                libc::setpriority(libc::PRIO_PROCESS, 0, (now + HASHING_NICE).min(19));
            }
            lowered.set(true);
        }
    });
}

/// How much below the request threads hashes run (nice values, 0–19).
const HASHING_NICE: libc::c_int = 5;

fn new_memory(params: &Params) -> Vec<Block> {
    vec![Block::default(); params.block_count()]
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_error(e: impl std::fmt::Display) -> PasswordError {
    PasswordError::Hash(e.to_string())
}

/// A new PHC string for `password` at `params`, the same string
/// `argon2::PasswordHasher::hash_password` would make with this salt.
fn hash_in(params: &Params, password: &str, memory: &mut [Block]) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(hash_error)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2(params)
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, memory)
        .map_err(hash_error)?;
    phc_string(params, &salt, &out)
}

/// The argon2id v19 PHC string of `out`, made at `params` with `salt`.
fn phc_string(params: &Params, salt: &SaltString, out: &[u8]) -> Result<String, PasswordError> {
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(hash_error)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(out).map_err(hash_error)?),
    };
    Ok(phc.to_string())
}

/// A PHC string at `params` that no password verifies against, for the
/// unknown user: a random salt and a random output. Finding a password
/// whose argon2id output equals 32 random bytes is a preimage search
/// (RFC 9106 §3), so it is as unmatchable as the hash of a secret password,
/// and verifying against it is the same computation as against any other
/// hash at these parameters.
fn unmatchable_hash(params: &Params) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    OsRng.fill_bytes(&mut out);
    phc_string(params, &salt, &out)
}

/// Verifies an argon2id v19 hash made at exactly the configured cost, in
/// `memory`. `None` when `stored` is anything else, for the caller to
/// verify the allocating way.
fn verify_configured(
    params: &Params,
    stored: &str,
    password: &str,
    memory: &mut [Block],
) -> Option<bool> {
    let parsed = PasswordHash::new(stored).ok()?;
    if parsed.algorithm.as_str() != ARGON2ID || parsed.version != Some(Version::V0x13.into()) {
        return None;
    }
    let stored_params = Params::try_from(&parsed).ok()?;
    let same_cost = (
        stored_params.m_cost(),
        stored_params.t_cost(),
        stored_params.p_cost(),
    ) == (params.m_cost(), params.t_cost(), params.p_cost());
    if !same_cost || !stored_params.keyid().is_empty() || !stored_params.data().is_empty() {
        return None;
    }
    let expected = parsed.hash?;
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out.get_mut(..expected.len())?;
    // `stored_params` carries the stored output length.
    argon2(&stored_params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
        .ok()?;
    Some(out.ct_eq(expected.as_bytes()).into())
}

fn needs_rehash(stored: &str, params: &Params) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    if parsed.algorithm.as_str() != ARGON2ID {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(p) => {
            p.m_cost() < params.m_cost()
                || p.t_cost() < params.t_cost()
                || p.p_cost() < params.p_cost()
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PasswordSettings {
        PasswordSettings {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            hashing_threads: Some(2),
            min_length: 8,
            failure_floor_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let p = Passwords::new(&fast()).unwrap();
        let hash = p.hash("correct horse battery staple".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert_eq!(
            check(&p, "correct horse battery staple", &hash).await,
            Verified::Yes { rehash: false }
        );
        assert_eq!(check(&p, "wrong", &hash).await, Verified::No);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_below_the_request_threads_priority() {
        // SAFETY: getpriority takes no pointers; who = 0 is this thread.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let request_thread = nice();
        let p = Passwords::new(&fast()).unwrap();
        let hashing_thread = p.run(move |_| Ok(nice())).await.unwrap();
        assert_eq!(hashing_thread, (request_thread + HASHING_NICE).min(19));
        // The runtime's own threads keep theirs.
        assert_eq!(nice(), request_thread);
    }

    #[tokio::test]
    async fn a_missing_hash_never_verifies_even_with_the_dummy_password() {
        let p = Passwords::new(&fast()).unwrap();
        assert_eq!(
            p.verify("switchyard dummy password".into(), None)
                .await
                .unwrap(),
            Verified::No
        );
    }

    /// `Passwords::verify` of a stored hash.
    async fn check(p: &Passwords, password: &str, stored: &str) -> Verified {
        p.verify(password.into(), Some(stored.into()))
            .await
            .unwrap()
    }

    /// A hash straight from the `argon2` crate, its allocating path.
    fn crate_hash(params: Params, algorithm: Algorithm, password: &str) -> String {
        use argon2::password_hash::PasswordHasher as _;
        Argon2::new(algorithm, Version::V0x13, params)
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string()
    }

    fn configured() -> Params {
        Params::new(19 * 1024, 2, 1, None).unwrap()
    }

    #[tokio::test]
    async fn weaker_parameters_ask_for_a_rehash() {
        let p = Passwords::new(&fast()).unwrap();
        let weak = crate_hash(
            Params::new(8 * 1024, 1, 1, None).unwrap(),
            Algorithm::Argon2id,
            "hunter2hunter2",
        );
        assert_eq!(
            check(&p, "hunter2hunter2", &weak).await,
            Verified::Yes { rehash: true }
        );
        assert_eq!(check(&p, "hunter2hunter3", &weak).await, Verified::No);
    }

    #[tokio::test]
    async fn hashes_at_other_parameters_take_the_allocating_path_and_still_verify() {
        let params = configured();
        let mut memory = new_memory(&params);
        let stronger = crate_hash(
            Params::new(19 * 1024, 3, 1, None).unwrap(),
            Algorithm::Argon2id,
            "hunter2hunter2",
        );
        let argon2i = crate_hash(configured(), Algorithm::Argon2i, "hunter2hunter2");
        for stored in [&stronger, &argon2i] {
            assert_eq!(
                verify_configured(&params, stored, "hunter2hunter2", &mut memory),
                None,
                "{stored}"
            );
        }
        let p = Passwords::new(&fast()).unwrap();
        assert_eq!(
            check(&p, "hunter2hunter2", &stronger).await,
            Verified::Yes { rehash: false }
        );
        assert_eq!(check(&p, "wrong password", &stronger).await, Verified::No);
        assert_eq!(
            check(&p, "hunter2hunter2", &argon2i).await,
            Verified::Yes { rehash: true }
        );
    }

    #[tokio::test]
    async fn imported_hashes_verify_and_ask_for_a_rehash() {
        let p = Passwords::new(&fast()).unwrap();
        let bcrypt = bcrypt::hash("legacy password 1", 4).unwrap();
        assert_eq!(
            check(&p, "legacy password 1", &bcrypt).await,
            Verified::Yes { rehash: true }
        );
        assert_eq!(check(&p, "legacy password 2", &bcrypt).await, Verified::No);
    }

    #[test]
    fn the_kept_memory_path_agrees_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::PasswordVerifier as _;
        let params = configured();
        let mut memory = new_memory(&params);
        // The crate's hash, checked in reused memory, twice: what a previous
        // hash left in the buffer must not matter.
        let theirs = crate_hash(configured(), Algorithm::Argon2id, "pässwörd 🔑");
        for _ in 0..2 {
            assert_eq!(
                verify_configured(&params, &theirs, "pässwörd 🔑", &mut memory),
                Some(true)
            );
            assert_eq!(
                verify_configured(&params, &theirs, "pässwörd 🔐", &mut memory),
                Some(false)
            );
        }
        // Ours, checked by the crate.
        let ours = hash_in(&params, "pässwörd 🔑", &mut memory).unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password("pässwörd 🔑".as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password("pässwörd".as_bytes(), &parsed)
                .is_err()
        );
    }

    #[test]
    fn a_stored_output_of_another_length_is_compared_whole() {
        let params = configured();
        let mut memory = new_memory(&params);
        let long = crate_hash(
            Params::new(19 * 1024, 2, 1, Some(64)).unwrap(),
            Algorithm::Argon2id,
            "hunter2hunter2",
        );
        assert_eq!(
            verify_configured(&params, &long, "hunter2hunter2", &mut memory),
            Some(true)
        );
        assert_eq!(
            verify_configured(&params, &long, "hunter2hunter", &mut memory),
            Some(false)
        );
    }

    #[test]
    fn the_dummy_hash_takes_the_same_path_as_a_real_one() {
        let p = Passwords::new(&fast()).unwrap();
        let mut memory = new_memory(&p.params);
        assert_eq!(
            verify_configured(&p.params, &p.dummy_hash, "a wrong password", &mut memory),
            Some(false)
        );
    }

    /// Buffers kept idle and lent out now.
    fn pool_of(p: &Passwords) -> (usize, usize) {
        let memory = Memory::lock(&p.memory);
        (memory.idle.len(), memory.lent)
    }

    #[tokio::test]
    async fn start_up_makes_no_buffer_and_the_dummy_is_never_computed() {
        let p = Passwords::new(&fast()).unwrap();
        assert_eq!(pool_of(&p), (0, 0));
        // Two instances' dummies differ: each is random, not a hash of a
        // known password.
        let other = Passwords::new(&fast()).unwrap();
        assert_ne!(p.dummy_hash, other.dummy_hash);
        assert!(p.dummy_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn buffers_are_made_for_the_work_and_let_go_when_idle() {
        let release = Duration::from_millis(300);
        let p = Arc::new(Passwords::releasing_after(&fast(), release).unwrap());
        let stored = p.hash("correct horse battery staple".into()).await.unwrap();
        assert_eq!(pool_of(&p), (1, 0));
        // Two at once on two permits: two buffers.
        let both = futures_both(&p, &stored).await;
        assert_eq!(both, [Verified::Yes { rehash: false }; 2]);
        assert_eq!(pool_of(&p), (2, 0));
        // One at a time, for longer than the release: the most recent
        // buffer is lent each time, so the other one idles and goes.
        let until = Instant::now() + release * 3;
        while Instant::now() < until {
            check(&p, "correct horse battery staple", &stored).await;
            tokio::time::sleep(release / 4).await;
        }
        assert_eq!(pool_of(&p), (1, 0));
        // Then none at all, and the reaper ends with the last buffer.
        tokio::time::sleep(release * 3).await;
        assert_eq!(pool_of(&p), (0, 0));
        assert!(!Memory::lock(&p.memory).reaping);
        // A later hash makes a buffer again, and a reaper for it.
        assert_eq!(
            check(&p, "correct horse battery staple", &stored).await,
            Verified::Yes { rehash: false }
        );
        assert_eq!(pool_of(&p), (1, 0));
        assert!(Memory::lock(&p.memory).reaping);
    }

    async fn futures_both(p: &Arc<Passwords>, stored: &str) -> [Verified; 2] {
        let one = |p: Arc<Passwords>, stored: String| async move {
            p.verify("correct horse battery staple".into(), Some(stored))
                .await
                .unwrap()
        };
        let a = tokio::spawn(one(p.clone(), stored.into()));
        let b = tokio::spawn(one(p.clone(), stored.into()));
        [a.await.unwrap(), b.await.unwrap()]
    }

    #[tokio::test]
    async fn a_panicking_hash_gives_its_buffer_back() {
        let p = Passwords::new(&fast()).unwrap();
        let result = p
            .run(|memory| -> Result<(), PasswordError> {
                assert!(!memory.is_empty());
                panic!("a hash that panics");
            })
            .await;
        assert!(result.is_err());
        assert_eq!(pool_of(&p), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hash_holds_its_permit_until_it_ends_even_when_its_caller_gives_up() {
        let p = Arc::new(Passwords::new(&fast()).unwrap());
        let permits = p.permits.available_permits();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
        let hashing = tokio::spawn({
            let p = p.clone();
            async move {
                p.run(move |_| {
                    started_tx.send(()).unwrap();
                    finish_rx.recv().unwrap();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        // The request that asked for the hash goes away (a client that
        // hung up): the hash still runs, so its permit and buffer stay
        // taken, and no extra hash can start beside it.
        hashing.abort();
        assert!(hashing.await.unwrap_err().is_cancelled());
        assert_eq!(p.permits.available_permits(), permits - 1);
        assert_eq!(pool_of(&p), (0, 1));
        // When it ends, both go back from the hashing thread itself.
        finish.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while p.permits.available_permits() < permits {
            assert!(Instant::now() < until, "the permit never came back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool_of(&p), (1, 0));
    }

    #[test]
    fn long_passphrases_are_accepted_whole() {
        let p = Passwords::new(&fast()).unwrap();
        assert!(p.check_policy(&"x".repeat(200)).is_ok());
        assert!(p.check_policy("short").is_err());
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        let p = Passwords::new(&fast()).unwrap();
        for common in ["password", "Password1", "QWERTY123", "iloveyou", "12345678"] {
            assert!(p.check_policy(common).is_err(), "{common}");
        }
        assert!(p.check_policy("carol's long password").is_ok());
    }

    #[test]
    fn the_users_own_identifiers_are_refused() {
        let p = Passwords::new(&fast()).unwrap();
        let ids = ["Frederick.Long@Example.com", "freddy_the_great"];
        for same in [
            "frederick.long@example.com",
            "FREDERICK.LONG",
            "Freddy_The_Great",
        ] {
            assert!(p.check_policy_for(same, &ids).is_err(), "{same}");
        }
        assert!(
            p.check_policy_for("frederick's own passphrase", &ids)
                .is_ok()
        );
    }
}
