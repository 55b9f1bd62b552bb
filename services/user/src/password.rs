//! Password hashing with argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane).
//!
//! Each hash fills 19 MiB of memory and takes ~30 ms of CPU, so hashing runs on a
//! small pool of dedicated threads, one per allowed concurrent hash, never on the
//! async runtime. Each worker allocates its argon2 memory on its first job and
//! reuses it for every later one: a burst of sign-ins costs `workers × 19 MiB` and
//! queues the rest, instead of leaving a freed 19 MiB block in the allocator arena
//! of every blocking thread that ever hashed (which kept hundreds of MiB resident).
//! The caller's span travels into the worker.

use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use crate::domain::Password;

/// agora's argon2id parameters; stored hashes carry their own, so raising these
/// later still verifies older hashes.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid")
}

/// A hash to verify against when the email is unknown, so that answering "no such
/// user" costs as much as "wrong password" and timing reveals nothing.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut memory = Vec::new();
    hash_with(b"agora-dummy-password", &mut memory).expect("hashing a constant succeeds")
});

/// Hashes and verifies passwords on dedicated worker threads.
#[derive(Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
}

/// Work for a hashing thread: runs with the worker's reusable argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

impl Hasher {
    /// A pool of `workers` hashing threads. They stop when the last clone of the
    /// returned `Hasher` is dropped.
    pub fn new(workers: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..workers.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || work(&queue))
                .expect("spawning a hashing thread");
        }
        Self { jobs }
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.expose().to_owned();
        self.run(move |memory| hash_with(password.as_bytes(), memory))
            .await?
    }

    /// Whether `password` matches `stored`; with `None` (unknown user) it checks a
    /// dummy hash and answers false, taking the same time.
    pub async fn verify(&self, password: &str, stored: Option<String>) -> anyhow::Result<bool> {
        let password = password.to_owned();
        self.run(move |memory| {
            let (hash, known) = match stored {
                Some(hash) => (hash, true),
                None => (DUMMY_HASH.clone(), false),
            };
            verify_with(password.as_bytes(), &hash, memory) && known
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (done, result) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |memory| {
            // The caller gave up (a cancelled request): do not burn 30 ms for nobody.
            if done.is_closed() {
                return;
            }
            let _ = done.send(span.in_scope(|| work(memory)));
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the hashing pool has stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("a hashing worker stopped mid-job"))
    }
}

/// A worker: takes jobs until every `Hasher` is gone, with one argon2 memory
/// buffer for its whole life.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut memory),
            Err(_) => return,
        }
    }
}

/// Grows `memory` to what `params` needs; never shrinks it.
fn blocks(memory: &mut Vec<Block>, params: &Params) -> usize {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    needed
}

fn hash_with(password: &[u8], memory: &mut Vec<Block>) -> anyhow::Result<String> {
    let params = params();
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let needed = blocks(memory, &params);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, &salt, &mut out, &mut memory[..needed])
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)
            .map_err(|e| anyhow::anyhow!("encoding parameters: {e}"))?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(|e| anyhow::anyhow!("encoding the hash: {e}"))?),
    };
    Ok(phc.to_string())
}

/// Whether `stored` was made with other than agora's current algorithm, version or
/// parameters, so the next successful sign-in should store a new hash.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let current = params();
    let same = phc.algorithm.as_str() == Algorithm::Argon2id.as_ref()
        && phc.version == Some(Version::V0x13.into())
        && Params::try_from(&phc).is_ok_and(|p| {
            (p.m_cost(), p.t_cost(), p.p_cost())
                == (current.m_cost(), current.t_cost(), current.p_cost())
        });
    !same
}

/// Recomputes `stored`'s hash with its own algorithm, version, parameters and
/// salt; the comparison of outputs is constant-time (`Output`'s equality).
fn verify_with(password: &[u8], stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let needed = blocks(memory, &params);
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password,
        salt,
        &mut out,
        &mut memory[..needed],
    );
    computed.is_ok() && Output::new(&out).is_ok_and(|out| &out == expected)
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHasher;

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = Hasher::new(2);
        let password = Password::parse("correct horse").unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify("correct horse", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong horse", Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn only_hashes_made_with_other_parameters_need_a_new_hash() {
        let current = Hasher::new(1)
            .hash(&Password::parse("correct horse").unwrap())
            .await
            .unwrap();
        let older = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();

        assert!(!needs_rehash(&current));
        assert!(needs_rehash(&older));
        assert!(!needs_rehash("not a hash"));
    }

    #[tokio::test]
    async fn unknown_users_never_verify() {
        let hasher = Hasher::new(1);
        assert!(!hasher.verify("agora-dummy-password", None).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_still_verify() {
        // A cheaper hash made by the argon2 crate itself, as an older agora might
        // have stored it: the worker's larger buffer serves it too.
        let older = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();
        let hasher = Hasher::new(1);
        let current = hasher
            .hash(&Password::parse("other password").unwrap())
            .await
            .unwrap();
        assert!(
            hasher
                .verify("other password", Some(current))
                .await
                .unwrap()
        );
        assert!(
            hasher
                .verify("correct horse", Some(older.clone()))
                .await
                .unwrap()
        );
        assert!(!hasher.verify("correct horsE", Some(older)).await.unwrap());
    }

    #[tokio::test]
    async fn garbage_in_the_hash_column_never_verifies() {
        let hasher = Hasher::new(1);
        for stored in [
            "",
            "plain",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA",
            "$md5$x$y",
        ] {
            assert!(
                !hasher
                    .verify("anything", Some(stored.to_owned()))
                    .await
                    .unwrap(),
                "{stored}"
            );
        }
    }
}
