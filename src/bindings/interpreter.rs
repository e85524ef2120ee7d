//! Python's lifetime as tokio threads see it: the one gate every tokio
//! thread goes through to touch Python, closed at exit.
//!
//! An abi3 extension gets no help from PyO3 at interpreter finalization: a
//! tokio thread that takes the GIL while the interpreter finalizes aborts
//! the process (measured before this gate: 6 of 60 runs of a script that
//! returned from `asyncio.run` with 50 requests in flight died with SIGSEGV
//! or SIGABRT, "PyGILState_Release: thread state must be current"). So an
//! `atexit` handler, which runs while the interpreter is still whole, closes
//! the gate and waits for the threads already through it; from then on no
//! tokio thread touches Python, and the process exits with its requests and
//! probes simply abandoned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

static CLOSED: AtomicBool = AtomicBool::new(false);
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// How long exit waits for the threads inside the gate (each is a log call
/// or a short callback; this bounds a bug, not normal work).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Runs `f` with the GIL from a thread that is not Python's own, unless the
/// interpreter is exiting: then `f` is not run and the result is None.
pub fn attach<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let result = if CLOSED.load(Ordering::SeqCst) {
        None
    } else {
        Some(Python::attach(f))
    };
    INSIDE.fetch_sub(1, Ordering::SeqCst);
    result
}

/// Whether the interpreter is exiting (the gate is closed).
pub fn exiting() -> bool {
    CLOSED.load(Ordering::SeqCst)
}

/// The `atexit` handler: closes the gate and waits, without the GIL, for
/// the threads that went through it before.
#[pyfunction]
fn _close_at_exit(py: Python<'_>) {
    CLOSED.store(true, Ordering::SeqCst);
    py.detach(|| {
        let started = Instant::now();
        while INSIDE.load(Ordering::SeqCst) > 0 && started.elapsed() < DRAIN_LIMIT {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Registers the exit handler.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let handler = wrap_pyfunction!(_close_at_exit, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (handler,))?;
    Ok(())
}
