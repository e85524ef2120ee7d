//! Core log records into Python's `logging`, under `scrapy_splash_cluster.*`.
//!
//! pyo3-log caches each logger's level so that a disabled DEBUG record costs
//! no GIL; the cache is refreshed when a cluster is made, so levels set by
//! Scrapy or a test before that are honoured. Records come from tokio
//! threads, so each goes through the interpreter gate: none is written while
//! the interpreter exits. The per-attempt DEBUG lines are not among them:
//! the binding writes those on the loop thread (see `cluster.rs`).

use std::sync::OnceLock;

use log::{LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger, ResetHandle};

use super::interpreter;

static RESET: OnceLock<ResetHandle> = OnceLock::new();

/// pyo3-log behind the interpreter gate.
struct GatedLogger(Logger);

impl Log for GatedLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        !interpreter::exiting() && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.0.enabled(record.metadata()) {
            interpreter::attach(|_| self.0.log(record));
        }
    }

    fn flush(&self) {}
}

/// Installs the bridge once per process; later calls do nothing.
pub fn install(py: Python<'_>) -> PyResult<()> {
    if RESET.get().is_some() {
        return Ok(());
    }
    let logger = Logger::new(py, Caching::LoggersAndLevels)?
        .filter(LevelFilter::Warn)
        .filter_target("scrapy_splash_cluster".to_owned(), LevelFilter::Debug)
        // Written by the binding on the loop thread instead.
        .filter_target(
            "scrapy_splash_cluster::request".to_owned(),
            LevelFilter::Off,
        );
    let handle = logger.reset_handle();
    if log::set_boxed_logger(Box::new(GatedLogger(logger))).is_ok() {
        log::set_max_level(LevelFilter::Debug);
        let _ = RESET.set(handle);
    }
    Ok(())
}

/// Re-reads Python's logging levels.
pub fn refresh_log_levels() {
    if let Some(handle) = RESET.get() {
        handle.reset();
    }
}
