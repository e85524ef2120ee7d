//! The Python exception hierarchy and the one conversion from core errors.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::core::error::ClusterError as CoreError;

use super::snapshot::{attempts_to_py, NodeSnapshot};

create_exception!(
    scrapy_splash_cluster,
    ClusterError,
    PyException,
    "Base of every error of a Splash cluster request. `.attempts` lists (node, outcome, seconds) per attempt."
);
create_exception!(
    scrapy_splash_cluster,
    NoNodeAvailable,
    ClusterError,
    "No node had a free slot within queue_timeout. `.nodes` holds every node's state then."
);
create_exception!(
    scrapy_splash_cluster,
    AllAttemptsFailed,
    ClusterError,
    "Every attempt failed by a node's fault and no retry was left."
);
create_exception!(
    scrapy_splash_cluster,
    ClusterTimeout,
    ClusterError,
    "The request's own timeout ran out, while waiting or during an attempt."
);
create_exception!(
    scrapy_splash_cluster,
    ResponseTooLarge,
    ClusterError,
    "The answer was larger than the request's max_size; the transfer was cut short."
);
create_exception!(
    scrapy_splash_cluster,
    ClusterClosed,
    ClusterError,
    "The cluster was closed before or while the request ran."
);

create_exception!(
    scrapy_splash_cluster,
    PoisonedRequest,
    ClusterError,
    "Nodes died under the request's renders as often as poison_limit allows: the page likely crashes Splash, so it goes to no more nodes."
);

/// Converts a core error into its Python exception, with `.attempts` and
/// `.nodes` set so that callers can act on what was tried.
pub fn to_py_err(py: Python<'_>, error: CoreError) -> PyErr {
    let message = error.to_string();
    let (err, nodes) = match &error {
        CoreError::NoNodeAvailable { nodes, .. } => {
            (NoNodeAvailable::new_err(message), nodes.clone())
        }
        CoreError::AllAttemptsFailed { .. } => (AllAttemptsFailed::new_err(message), Vec::new()),
        CoreError::Timeout { nodes, .. } => (ClusterTimeout::new_err(message), nodes.clone()),
        CoreError::Closed { .. } => (ClusterClosed::new_err(message), Vec::new()),
        CoreError::ResponseTooLarge { .. } => (ResponseTooLarge::new_err(message), Vec::new()),
        CoreError::Poisoned { .. } => (PoisonedRequest::new_err(message), Vec::new()),
        CoreError::InvalidRequest(_) => {
            return pyo3::exceptions::PyValueError::new_err(message);
        }
    };
    let value = err.value(py);
    let nodes: Vec<NodeSnapshot> = nodes.into_iter().map(NodeSnapshot::from).collect();
    let set = value
        .setattr("attempts", attempts_to_py(error.attempts()))
        .and_then(|()| value.setattr("nodes", nodes));
    match set {
        Ok(()) => err,
        Err(e) => e,
    }
}

/// Adds the exceptions to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ClusterError", py.get_type::<ClusterError>())?;
    m.add("NoNodeAvailable", py.get_type::<NoNodeAvailable>())?;
    m.add("AllAttemptsFailed", py.get_type::<AllAttemptsFailed>())?;
    m.add("ClusterTimeout", py.get_type::<ClusterTimeout>())?;
    m.add("ClusterClosed", py.get_type::<ClusterClosed>())?;
    m.add("ResponseTooLarge", py.get_type::<ResponseTooLarge>())?;
    m.add("PoisonedRequest", py.get_type::<PoisonedRequest>())?;
    Ok(())
}
