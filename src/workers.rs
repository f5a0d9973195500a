//! A few threads for file writes that may land in any order: a COPY's
//! files, a copy-tier tree's copy. One thread per core, up to four; jobs
//! wait in a short queue (each holds open descriptors, so the bound keeps
//! far below any fd limit); the first error is kept, and once a job has
//! failed no more are taken. Knows nothing of files: a job is a closure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

type Job<E> = Box<dyn FnOnce() -> Result<(), E> + Send>;

/// The pool (see the module doc).
pub struct Workers<E: Send + 'static> {
    jobs: Option<mpsc::SyncSender<Job<E>>>,
    threads: Vec<JoinHandle<Result<(), E>>>,
    failed: Arc<AtomicBool>,
    /// An error of a job run on the caller's thread.
    inline_error: Mutex<Option<E>>,
}

impl<E: Send + 'static> Workers<E> {
    /// Starts the threads, named `<name>-<n>`; with none (a spawn that
    /// failed), jobs run on the caller's thread.
    pub fn start(name: &str) -> Workers<E> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let (tx, rx) = mpsc::sync_channel::<Job<E>>(64);
        let rx = Arc::new(Mutex::new(rx));
        let failed = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .filter_map(|i| {
                let (rx, failed) = (rx.clone(), failed.clone());
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || loop {
                        let job = rx.lock().map_err(drop).and_then(|r| r.recv().map_err(drop));
                        let Ok(job) = job else { return Ok(()) };
                        if let Err(e) = job() {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    })
                    .ok()
            })
            .collect();
        Workers {
            jobs: Some(tx),
            threads,
            failed,
            inline_error: Mutex::new(None),
        }
    }

    /// Hands `job` to a thread. False once a job has failed: the caller
    /// stops, and [`Workers::finish`] says why.
    pub fn run(&self, job: impl FnOnce() -> Result<(), E> + Send + 'static) -> bool {
        if self.failed.load(Ordering::Relaxed) {
            return false;
        }
        let job: Job<E> = Box::new(job);
        let job = match self.jobs.as_ref().filter(|_| !self.threads.is_empty()) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return true,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        match job() {
            Ok(()) => true,
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                if let Ok(mut slot) = self.inline_error.lock() {
                    slot.get_or_insert(e);
                }
                false
            }
        }
    }

    /// Waits for every job handed over; the first error, if any.
    pub fn finish(&mut self) -> Result<(), Option<E>> {
        self.jobs = None;
        let mut first = self.inline_error.get_mut().ok().and_then(Option::take);
        let mut panicked = false;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Err(e)) => {
                    first.get_or_insert(e);
                }
                Ok(Ok(())) => {}
                Err(_) => panicked = true,
            }
        }
        match first {
            Some(e) => Err(Some(e)),
            // A thread that panicked leaves no error of its own.
            None if panicked => Err(None),
            None => Ok(()),
        }
    }
}

impl<E: Send + 'static> Drop for Workers<E> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_job_runs_before_finish_returns() {
        let mut workers = Workers::<String>::start("test");
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..500 {
            let done = done.clone();
            assert!(workers.run(move || {
                done.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }));
        }
        workers.finish().unwrap();
        assert_eq!(done.load(Ordering::Relaxed), 500);
    }

    #[test]
    fn the_first_error_is_kept_and_stops_the_intake() {
        let mut workers = Workers::<String>::start("test");
        assert!(workers.run(|| Err("disk full".to_string())));
        // Sooner or later the failure is seen and jobs are refused.
        let mut refused = false;
        for _ in 0..10_000 {
            if !workers.run(|| Ok(())) {
                refused = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(refused, "a failed pool stops taking jobs");
        assert_eq!(workers.finish(), Err(Some("disk full".to_string())));
    }
}
