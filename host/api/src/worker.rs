//! A named thread with a stop flag: the pattern behind the daemon, the sim bridge and the rerun
//! recorder. Dropping a [`Worker`] asks it to stop and joins it, so nothing outlives its owner.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A worker thread panicked.
#[derive(Debug, thiserror::Error)]
#[error("the {0} thread panicked")]
pub struct Panicked(pub String);

/// A thread running `f(stop_flag)` until the flag is set or `f` returns.
pub struct Worker<E: Send + 'static> {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), E>>>,
}

impl<E: Send + 'static> Worker<E> {
    /// Start `f` on a thread called `name`; `f` should return soon after the flag is set.
    pub fn spawn(
        name: &str,
        f: impl FnOnce(&AtomicBool) -> Result<(), E> + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&flag))?;
        Ok(Self {
            name: name.into(),
            stop,
            thread: Some(thread),
        })
    }

    /// Set the stop flag without waiting (e.g. before waking a thread that waits on a condition).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether the thread has ended (it returned, failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Ask the thread to stop, wait for it, and return what it returned.
    pub fn stop(mut self) -> Result<(), E>
    where
        E: From<Panicked>,
    {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Panicked(self.name.clone()))?,
            None => Ok(()),
        }
    }
}

impl<E: Send + 'static> Drop for Worker<E> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(String);
    impl From<Panicked> for E {
        fn from(p: Panicked) -> Self {
            E(p.to_string())
        }
    }

    #[test]
    fn stops_on_request_and_reports_results() {
        let w = Worker::<E>::spawn("spin", |stop| {
            while !stop.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            Ok(())
        })
        .unwrap();
        assert!(w.stop().is_ok());
        let w = Worker::<E>::spawn("fail", |_| Err(E("boom".into()))).unwrap();
        assert_eq!(w.stop().unwrap_err().0, "boom");
        let w = Worker::<E>::spawn("panics", |_| panic!("on purpose")).unwrap();
        assert_eq!(w.stop().unwrap_err().0, "the panics thread panicked");
    }
}
