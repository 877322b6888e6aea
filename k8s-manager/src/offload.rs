//! Blocking work (signals and waits, hashing, key generation, file writes
//! that may wait on a lock) run off the runtime's threads: the awaiting
//! future can be dropped at any moment — a cancel is seen at once — while
//! the work finishes on its own thread.

/// Runs blocking work on tokio's blocking pool and awaits it. A panic of
/// the work is this future's. A blocking task is cancelled only when the
/// runtime shuts down, which drops this future too: it then never resolves.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => std::future::pending().await,
    }
}
