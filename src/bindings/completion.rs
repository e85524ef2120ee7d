//! How a request's result crosses from a tokio thread to the asyncio loop
//! that awaits it, without the tokio thread taking the GIL.
//!
//! pyo3-async-runtimes completes each future from the tokio thread: it takes
//! the GIL there, builds the result and calls `call_soon_threadsafe`. With a
//! CPU-heavy spider that thread then waits for the GIL the spider holds (up
//! to the 5 ms switch interval per request), and one that takes it while the
//! interpreter exits aborts the process. Here a tokio thread only pushes the
//! Rust result into the loop's inbox and, when the inbox was empty, writes
//! one byte to a socket the loop watches (`loop.add_reader`). The loop then
//! drains the inbox on its own thread, with the GIL it already has: Python
//! objects are made there and nowhere else, and a burst of answers costs one
//! wake-up. Cancelling the Python future aborts the tokio task, which drops
//! the cluster request and frees its slot.

use std::collections::HashMap;
use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use tokio::task::AbortHandle;

/// A result a tokio task hands back, turned into Python on the loop thread.
pub trait IntoPyResult: Send + 'static {
    /// The future's result, or the exception to set on it.
    fn into_py_result(self, py: Python<'_>) -> PyResult<Py<PyAny>>;
}

/// A finished result, waiting to be made into Python on the loop thread.
type Finished = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// What the tokio side shares with the loop: finished results and the wake
/// socket. Rust data only.
struct Shared {
    done: Mutex<Vec<(u64, Finished)>>,
    /// Whether a wake-up byte is on its way (so a burst writes one).
    woken: AtomicBool,
    wake: UnixStream,
    /// The tokio task of each pending future, to abort on cancellation.
    tasks: Mutex<HashMap<u64, AbortHandle>>,
}

fn lock<U>(mutex: &Mutex<U>) -> MutexGuard<'_, U> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn deliver(&self, id: u64, result: Finished) {
        lock(&self.tasks).remove(&id);
        lock(&self.done).push((id, result));
        if !self.woken.swap(true, Ordering::SeqCst) {
            // A full socket buffer means a wake-up is pending already.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The inbox of one asyncio loop: pending futures by id (touched only on
/// the loop thread) and the socket the loop reads.
#[pyclass(frozen, module = "scrapy_splash_cluster._core")]
pub struct Inbox {
    shared: Arc<Shared>,
    readable: UnixStream,
    pending: Py<PyDict>,
    event_loop: Py<PyAny>,
    next_id: AtomicU64,
}

#[pymethods]
impl Inbox {
    /// The loop's reader callback: completes every future whose result came.
    pub fn drain(&self, py: Python<'_>) -> PyResult<()> {
        // The order matters: wake-up bytes are read first, then the flag is
        // lowered, then the results are taken. A result delivered after the
        // flag went down writes a byte this drain has not read, so another
        // drain follows; one delivered before is in what this drain takes.
        // (Lowering the flag first lost every later result for good when a
        // byte written for a raised flag was read here.)
        let mut buf = [0u8; 256];
        loop {
            match (&self.readable).read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            }
        }
        self.shared.woken.store(false, Ordering::SeqCst);
        let done = std::mem::take(&mut *lock(&self.shared.done));
        let pending = self.pending.bind(py);
        // Every result is handed over even if one fails: a future left
        // pending would hang its request for good.
        let mut first_error = None;
        for (id, result) in done {
            if let Err(error) = complete(pending, id, result) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The future's done callback: a cancelled future aborts its task.
    fn forget(&self, py: Python<'_>, id: u64, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0(intern!(py, "cancelled"))?.is_truthy()? {
            self.pending.bind(py).del_item(id).ok();
            if let Some(task) = lock(&self.shared.tasks).remove(&id) {
                task.abort();
            }
        }
        Ok(())
    }
}

/// `asyncio.get_running_loop()`, called once per request: the function is
/// looked up once, not imported each time.
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET_RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET_RUNNING_LOOP
        .import(py, "asyncio", "get_running_loop")?
        .call0()
}

/// Sets one future's result, unless it was cancelled meanwhile.
fn complete(pending: &Bound<'_, PyDict>, id: u64, result: Finished) -> PyResult<()> {
    let py = pending.py();
    let Some(future) = pending.get_item(id)? else {
        return Ok(());
    };
    pending.del_item(id)?;
    if future.call_method0(intern!(py, "done"))?.is_truthy()? {
        return Ok(());
    }
    match result(py) {
        Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
        Err(error) => future.call_method1(intern!(py, "set_exception"), (error.value(py),))?,
    };
    Ok(())
}

impl Inbox {
    /// An inbox for the running loop, its socket watched by that loop.
    pub fn for_running_loop(py: Python<'_>) -> PyResult<Py<Inbox>> {
        let event_loop = running_loop(py)?;
        let (readable, wake) = UnixStream::pair()
            .and_then(|(r, w)| {
                r.set_nonblocking(true)?;
                w.set_nonblocking(true)?;
                Ok((r, w))
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot make the wake-up socket: {e}")))?;
        let fd = readable.as_raw_fd();
        let inbox = Py::new(
            py,
            Inbox {
                shared: Arc::new(Shared {
                    done: Mutex::new(Vec::new()),
                    woken: AtomicBool::new(false),
                    wake,
                    tasks: Mutex::new(HashMap::new()),
                }),
                readable,
                pending: PyDict::new(py).unbind(),
                event_loop: event_loop.clone().unbind(),
                next_id: AtomicU64::new(0),
            },
        )?;
        event_loop.call_method1("add_reader", (fd, inbox.bind(py).getattr("drain")?))?;
        Ok(inbox)
    }

    /// Whether this inbox belongs to the loop running now.
    pub fn serves_running_loop(&self, py: Python<'_>) -> bool {
        running_loop(py).is_ok_and(|running| running.is(self.event_loop.bind(py)))
    }

    /// Stops watching the socket (the loop may be closed already).
    pub fn detach_from_loop(&self, py: Python<'_>) {
        let _ = self
            .event_loop
            .bind(py)
            .call_method1("remove_reader", (self.readable.as_raw_fd(),));
    }

    /// Runs `work` on the tokio runtime and returns an asyncio future of its
    /// result, completed on this inbox's loop.
    pub fn spawn<'py, F, T>(slf: &Bound<'py, Inbox>, work: F) -> PyResult<Bound<'py, PyAny>>
    where
        F: Future<Output = T> + Send + 'static,
        T: IntoPyResult,
    {
        let py = slf.py();
        let inbox = slf.get();
        let future = inbox
            .event_loop
            .bind(py)
            .call_method0(intern!(py, "create_future"))?;
        let id = inbox.next_id.fetch_add(1, Ordering::Relaxed);
        inbox.pending.bind(py).set_item(id, &future)?;
        let shared = Arc::clone(&inbox.shared);
        // Hold the tasks' lock across the spawn, so that a task finishing at
        // once cannot remove its entry before it is inserted.
        let mut tasks = lock(&inbox.shared.tasks);
        let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let result = work.await;
            shared.deliver(id, Box::new(move |py| result.into_py_result(py)));
        });
        tasks.insert(id, task.abort_handle());
        drop(tasks);
        static PARTIAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        // Not kept in the inbox: a bound method there would be a cycle
        // through a class the garbage collector cannot see into.
        let forget = slf.getattr(intern!(py, "forget"))?;
        let callback = PARTIAL
            .import(py, "functools", "partial")?
            .call1((forget, id))?;
        future.call_method1(intern!(py, "add_done_callback"), (callback,))?;
        Ok(future)
    }
}
