//! scrapy-splash-cluster: a balancer for Splash nodes, for Scrapy.
//!
//! `core` is the balancer in pure Rust; `bindings` exposes it to Python as
//! the `scrapy_splash_cluster._core` extension module.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bindings;
pub mod core;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bindings::register(m)
}
