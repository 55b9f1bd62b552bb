//! The raw argon2id hash rate of this machine with agora's parameters
//! (m = 19456 KiB, t = 2, p = 1, version 0x13): the ceiling for sign-ins, each of
//! which verifies one password hash.
//!
//! Runs `--threads` threads (default: one per core) for `--seconds`, each hashing
//! in a loop with its argon2 memory allocated once, and prints the total rate:
//!
//! ```text
//! BENCH threads=2 seconds=10.00 hashes=620 hashes_per_s=62.0
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "argon2id hashes per second with agora's parameters")]
struct Args {
    /// Hashing threads; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// How long to hash.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

/// The parameters of services/user/src/password.rs.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).expect("agora's argon2 parameters are valid")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let duration = Duration::from_secs_f64(args.seconds);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|n| {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || hash_until(&stop))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut hashes = 0u64;
    for worker in workers {
        hashes += worker
            .join()
            .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
    }
    // Hashes still running at the deadline finish and count: divide by the time
    // the last one took to end, not by the nominal duration.
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "BENCH threads={threads} seconds={seconds:.2} hashes={hashes} hashes_per_s={:.1}",
        hashes as f64 / seconds
    );
    Ok(())
}

/// Hashes until `stop` is set; returns how many hashes it made.
fn hash_until(stop: &AtomicBool) -> anyhow::Result<u64> {
    let params = params();
    let mut memory = vec![Block::default(); params.block_count()];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = *b"agora-bench-salt";
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let mut hashes = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let password = format!("password{hashes}");
        argon2
            .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut memory)
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
        hashes += 1;
    }
    Ok(hashes)
}
