//! The fleet as Redis holds it, for `splash-cluster status --redis`.

use pyo3::exceptions::PyConnectionError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::core::fleet_status;

/// Reads the fleet under `prefix` from the Redis at `url`, without joining
/// it: {"nodes": [{"url", "maxconn", "weight", "in_flight", "down"}],
/// "processes": [...], "prober": id or None}.
#[pyfunction]
fn _fleet_status<'py>(
    py: Python<'py>,
    url: String,
    prefix: String,
) -> PyResult<Bound<'py, PyDict>> {
    let status = py
        .detach(|| {
            pyo3_async_runtimes::tokio::get_runtime().block_on(fleet_status::read(&url, &prefix))
        })
        .map_err(|e| PyConnectionError::new_err(e.to_string()))?;
    let out = PyDict::new(py);
    let nodes = status
        .nodes
        .iter()
        .map(|n| {
            let d = PyDict::new(py);
            d.set_item("url", &n.key)?;
            d.set_item("maxconn", n.maxconn)?;
            d.set_item("weight", n.weight)?;
            d.set_item("in_flight", n.in_flight)?;
            d.set_item("down", &n.down)?;
            Ok(d)
        })
        .collect::<PyResult<Vec<_>>>()?;
    out.set_item("nodes", nodes)?;
    out.set_item("processes", &status.processes)?;
    out.set_item("prober", &status.prober)?;
    Ok(out)
}

/// Adds the function to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_fleet_status, m)?)
}
