//! RSA signing on a few dedicated threads, off the threads that serve
//! requests.
//!
//! An RS256 signature takes hundreds of microseconds of CPU, an ES256 or
//! EdDSA one tens: a burst of RS256 grants signed on the async runtime's
//! workers would hold them, and every other request (a page, a JWKS fetch,
//! an ES256 grant of another client) would queue behind the signatures. The
//! pool has one thread per core and a queue: the runtime's workers keep
//! serving while the signatures wait their turn, and the operating system
//! shares the cores between the two. Threads start on the first signature,
//! so a server that signs with ES256 or EdDSA never has them.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

pub struct SigningPool {
    threads: usize,
    /// `Sender` is `Sync`: requests send on it without a lock.
    queue: OnceLock<Sender<Job>>,
}

/// The work gave no answer: it panicked.
#[derive(Debug, thiserror::Error)]
#[error("the signing pool is gone")]
pub struct PoolGone;

impl SigningPool {
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            queue: OnceLock::new(),
        }
    }

    /// One thread per core this process may use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Runs `work` on a pool thread and waits for its answer without
    /// holding the caller's thread.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolGone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        self.queue().send(job).map_err(|_| PoolGone)?;
        rx.await.map_err(|_| PoolGone)
    }

    fn queue(&self) -> &Sender<Job> {
        self.queue.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            for n in 0..self.threads {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("switchyard-sign-{n}"))
                    .spawn(move || worker(&rx))
                    .expect("a signing thread starts");
            }
            tx
        })
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking a job, never while running it.
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A job that panics loses its answer (the caller sees `PoolGone`),
        // not the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_pool_threads_and_answers() {
        let pool = SigningPool::new(2);
        let names = futures::future::join_all((0..8).map(|i| {
            pool.run(move || {
                let name = std::thread::current().name().map(str::to_string);
                (i * 2, name)
            })
        }))
        .await;
        for (i, answer) in names.into_iter().enumerate() {
            let (double, name) = answer.unwrap();
            assert_eq!(double, i * 2);
            assert!(name.unwrap().starts_with("switchyard-sign-"));
        }
    }
}
