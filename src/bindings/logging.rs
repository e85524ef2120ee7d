//! Core log records into Python's `logging`, under `scrapy_splash_cluster.*`.
//!
//! pyo3-log caches each logger's level so that a disabled DEBUG record costs
//! no GIL; the cache is refreshed when a cluster is made, so levels set by
//! Scrapy or a test before that are honoured.

use std::sync::OnceLock;

use log::LevelFilter;
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger, ResetHandle};

static RESET: OnceLock<ResetHandle> = OnceLock::new();

/// Installs the bridge once per process; later calls do nothing.
pub fn install(py: Python<'_>) -> PyResult<()> {
    if RESET.get().is_some() {
        return Ok(());
    }
    let logger = Logger::new(py, Caching::LoggersAndLevels)?
        .filter(LevelFilter::Warn)
        .filter_target("scrapy_splash_cluster".to_owned(), LevelFilter::Debug);
    if let Ok(handle) = logger.install() {
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
