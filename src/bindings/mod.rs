//! The binding layer: converts Python values to core types and back, and
//! nothing else. Each file registers what it defines.

mod cluster;
mod completion;
mod config;
mod errors;
mod fleet;
mod interpreter;
mod logging;
mod snapshot;

use pyo3::prelude::*;

/// Fills the `_core` module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install(m.py())?;
    m.add_class::<cluster::SplashCluster>()?;
    m.add_class::<cluster::Response>()?;
    m.add_class::<config::NodeConfig>()?;
    m.add_class::<snapshot::NodeSnapshot>()?;
    errors::register(m)?;
    interpreter::register(m)?;
    fleet::register(m)?;
    Ok(())
}
