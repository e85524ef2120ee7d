//! Python arguments into validated core configuration.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::core::config::{mask_password, ConfigError, NodeOptions};

/// One node with its own limits: `NodeConfig("http://host:8050", maxconn=3, weight=2, maxrss=3000)`.
#[pyclass(frozen, get_all, module = "scrapy_splash_cluster._core")]
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's URL.
    pub url: String,
    /// Requests in flight at most on this node; the cluster's default if None.
    pub maxconn: Option<usize>,
    /// Share of the load; the cluster's default if None.
    pub weight: Option<u32>,
    /// The node's `--maxrss` in MB; the cluster's default if None.
    pub maxrss: Option<u64>,
}

#[pymethods]
impl NodeConfig {
    #[new]
    #[pyo3(signature = (url, maxconn=None, weight=None, maxrss=None))]
    fn new(
        url: String,
        maxconn: Option<i64>,
        weight: Option<i64>,
        maxrss: Option<i64>,
    ) -> PyResult<Self> {
        let maxconn = maxconn
            .map(|v| positive_int("maxconn", v).map(|v| v as usize))
            .transpose()?;
        let weight = weight
            .map(|v| positive_int("weight", v).map(|v| v as u32))
            .transpose()?;
        let maxrss = maxrss
            .map(|v| positive_int("maxrss", v).map(|v| v as u64))
            .transpose()?;
        Ok(Self {
            url,
            maxconn,
            weight,
            maxrss,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "NodeConfig({:?}, maxconn={:?}, weight={:?}, maxrss={:?})",
            mask_password(&self.url),
            self.maxconn,
            self.weight,
            self.maxrss
        )
    }
}

impl NodeConfig {
    pub fn to_options(&self) -> NodeOptions {
        NodeOptions {
            url: self.url.clone(),
            maxconn: self.maxconn,
            weight: self.weight,
            maxrss: self.maxrss,
        }
    }
}

/// A core configuration error as Python's ValueError.
pub fn value_error(error: ConfigError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

/// An integer argument that must be >= 1.
pub fn positive_int(argument: &str, value: i64) -> PyResult<i64> {
    if value < 1 || value > i64::from(u32::MAX) {
        return Err(value_error(ConfigError::new(
            argument,
            value,
            "an integer >= 1",
        )));
    }
    Ok(value)
}

/// An integer argument that must be >= 0.
pub fn non_negative_int(argument: &str, value: i64) -> PyResult<u32> {
    u32::try_from(value)
        .map_err(|_| value_error(ConfigError::new(argument, value, "an integer >= 0")))
}

/// A number of seconds that must be finite and > 0.
pub fn seconds(argument: &str, value: f64) -> PyResult<Duration> {
    if !(value.is_finite() && value > 0.0) {
        return Err(value_error(ConfigError::new(
            argument,
            value,
            "a number of seconds greater than 0",
        )));
    }
    Duration::try_from_secs_f64(value).map_err(|_| {
        value_error(ConfigError::new(
            argument,
            value,
            "a number of seconds greater than 0",
        ))
    })
}

/// A node given as a URL string or a NodeConfig.
pub fn node_options(index: usize, node: &Bound<'_, PyAny>) -> PyResult<NodeOptions> {
    if let Ok(config) = node.cast::<NodeConfig>() {
        return Ok(config.get().to_options());
    }
    if let Ok(url) = node.extract::<String>() {
        return Ok(NodeOptions {
            url,
            ..NodeOptions::default()
        });
    }
    Err(value_error(ConfigError::new(
        format!("nodes[{index}]"),
        node.get_type().name()?,
        "a URL string or a NodeConfig",
    )))
}
