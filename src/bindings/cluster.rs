//! `SplashCluster`, the asyncio face of the core cluster.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::core::cluster::{Cluster, ClusterResponse};
use crate::core::config::StatsOptions;
use crate::core::config::{ClusterOptions, ConfigError};
use crate::core::discovery;
use crate::core::error::ClusterError as CoreError;
use crate::core::fleet::FleetOptions;
use crate::core::fleet_sync;
use crate::core::http::HttpTransport;
use crate::core::selection::LeastConn;
use crate::core::transport::{NodeRequest, SavedArgs};

use super::completion::{Inbox, IntoPyResult};
use super::config::{node_options, non_negative_int, positive_int, seconds, value_error};
use super::errors::to_py_err;
use super::logging::refresh_log_levels;
use super::snapshot::{attempts_to_py, NodeSnapshot};

/// A node's answer to a cluster request.
#[pyclass(frozen, module = "scrapy_splash_cluster._core")]
pub struct Response {
    inner: ClusterResponse,
}

#[pymethods]
impl Response {
    /// HTTP status.
    #[getter]
    fn status(&self) -> u16 {
        self.inner.response.status
    }

    /// Headers as (name, value) pairs, in order; names in lower case.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> Vec<(String, Bound<'py, PyBytes>)> {
        self.inner
            .response
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), PyBytes::new(py, v)))
            .collect()
    }

    /// The body.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.response.body)
    }

    /// The node that answered (password masked).
    #[getter]
    fn node(&self) -> &str {
        &self.inner.node
    }

    /// (node, outcome, seconds) per attempt, the last being this answer.
    #[getter]
    fn attempts(&self) -> Vec<(String, String, f64)> {
        attempts_to_py(&self.inner.attempts)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Response {} from {} after {} attempt(s)>",
            self.inner.response.status,
            self.inner.node,
            self.inner.attempts.len()
        )
    }
}

/// A cluster of Splash nodes behind one balancer. `subclass`: the package's
/// `SplashCluster` subclasses it to make `request` a coroutine function.
#[pyclass(frozen, subclass, module = "scrapy_splash_cluster._core")]
pub struct SplashCluster {
    cluster: Arc<Cluster<HttpTransport>>,
    /// Where results reach the loop that awaits them (made on first use).
    inbox: Mutex<Option<Py<Inbox>>>,
}

/// A request's end, with what its per-attempt log lines need.
struct Finished {
    method: String,
    path: String,
    result: Result<ClusterResponse, CoreError>,
}

impl IntoPyResult for Finished {
    fn into_py_result(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        log_attempts(py, &self.method, &self.path, &self.result)?;
        match self.result {
            Ok(inner) => Ok(Py::new(py, Response { inner })?.into_any()),
            Err(error) => Err(to_py_err(py, error)),
        }
    }
}

/// One DEBUG line per attempt, written on the loop thread: Scrapy logs at
/// DEBUG by default, and a line logged from a tokio thread would take the
/// GIL there for every attempt.
fn log_attempts(
    py: Python<'_>,
    method: &str,
    path: &str,
    result: &Result<ClusterResponse, CoreError>,
) -> PyResult<()> {
    // Looked up once: `logging.getLogger` returns the same object for a
    // name for the life of the process.
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let logger = LOGGER
        .get_or_try_init(py, || {
            py.import("logging")?
                .call_method1("getLogger", ("scrapy_splash_cluster.request",))
                .map(Bound::unbind)
        })?
        .bind(py);
    if !logger
        .call_method1(intern!(py, "isEnabledFor"), (10,))?
        .is_truthy()?
    {
        return Ok(());
    }
    let attempts = match result {
        Ok(response) => &response.attempts[..],
        Err(error) => error.attempts(),
    };
    for (i, attempt) in attempts.iter().enumerate() {
        let line = format!(
            "{method} {path} on {}: {} in {:.3}s (attempt {})",
            attempt.node,
            attempt.outcome,
            attempt.elapsed.as_secs_f64(),
            i + 1
        );
        logger.call_method1(intern!(py, "debug"), (line,))?;
    }
    Ok(())
}

fn header_value(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = value.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyValueError::new_err(format!(
        "invalid headers: the value of {name:?} is a {}; expected str or bytes",
        value.get_type().name()?
    )))
}

fn headers_from_py(headers: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, Vec<u8>)>> {
    let Some(headers) = headers else {
        return Ok(Vec::new());
    };
    let pairs = match headers.cast::<PyDict>() {
        Ok(dict) => dict.items().into_any(),
        Err(_) => headers.clone(),
    };
    let mut out = Vec::new();
    for pair in pairs.try_iter()? {
        let (name, value): (String, Bound<'_, PyAny>) = pair?.extract().map_err(|_| {
            PyValueError::new_err("invalid headers: expected a dict or (name, value) pairs")
        })?;
        let value = header_value(&name, &value)?;
        out.push((name, value));
    }
    Ok(out)
}

/// The fleet's options from the constructor's `redis_*` arguments.
fn fleet_options(url: String, key_prefix: &str, lease_ttl: f64) -> PyResult<FleetOptions> {
    let lease_ttl = seconds("redis_lease_ttl", lease_ttl)?;
    if lease_ttl < std::time::Duration::from_secs(1) {
        return Err(value_error(ConfigError::new(
            "redis_lease_ttl",
            lease_ttl.as_secs_f64(),
            "at least 1 second (leases are renewed every third of it)",
        )));
    }
    if key_prefix.is_empty() || key_prefix.contains(['{', '}']) {
        return Err(value_error(ConfigError::new(
            "redis_key_prefix",
            format!("{key_prefix:?}"),
            "a non-empty prefix without braces (it becomes the keys' {hash tag})",
        )));
    }
    Ok(FleetOptions {
        url,
        key_prefix: key_prefix.to_owned(),
        lease_ttl,
        // Set from the cluster's own setting when the fleet is joined.
        adaptive: false,
    })
}

/// An asyncio future of the running loop, already resolved to `value`.
fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Bound<'_, PyAny>> {
    let future = py
        .import("asyncio")?
        .call_method0("get_running_loop")?
        .call_method0("create_future")?;
    future.call_method1("set_result", (value,))?;
    Ok(future)
}

impl SplashCluster {
    /// The inbox of the running loop: made on the first request, made anew
    /// if the cluster is used from another loop.
    fn inbox(&self, py: Python<'_>) -> PyResult<Py<Inbox>> {
        let mut slot = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(inbox) = slot.as_ref() {
            if inbox.get().serves_running_loop(py) {
                return Ok(inbox.clone_ref(py));
            }
            inbox.get().detach_from_loop(py);
        }
        let inbox = Inbox::for_running_loop(py)?;
        *slot = Some(inbox.clone_ref(py));
        Ok(inbox)
    }

    fn drain_inbox(&self, py: Python<'_>) -> PyResult<()> {
        let inbox = self
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|inbox| inbox.clone_ref(py));
        match inbox {
            Some(inbox) => inbox.get().drain(py),
            None => Ok(()),
        }
    }
}

#[pymethods]
impl SplashCluster {
    #[new]
    #[pyo3(signature = (
        nodes, *, maxconn=5, weight=1, node_maxrss=None, retries=3, queue_timeout=60.0, health_interval=2.0,
        health_timeout=1.0, health_fast_interval=None, health_path="/_ping", fall=3, rise=2, error_limit=3,
        connect_timeout=5.0, retry_budget=0.2, poison_limit=2, dns_interval=10.0, adaptive=false, stats_port=None, stats_host="127.0.0.1",
        stats_user="scrapy", stats_password=None, redis_url=None,
        redis_key_prefix="splash_cluster", redis_lease_ttl=15.0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        nodes: &Bound<'_, PyAny>,
        maxconn: i64,
        weight: i64,
        node_maxrss: Option<i64>,
        retries: i64,
        queue_timeout: f64,
        health_interval: f64,
        health_timeout: f64,
        health_fast_interval: Option<f64>,
        health_path: &str,
        fall: i64,
        rise: i64,
        error_limit: i64,
        connect_timeout: f64,
        retry_budget: f64,
        poison_limit: i64,
        dns_interval: f64,
        adaptive: bool,
        stats_port: Option<i64>,
        stats_host: &str,
        stats_user: &str,
        stats_password: Option<String>,
        redis_url: Option<String>,
        redis_key_prefix: &str,
        redis_lease_ttl: f64,
    ) -> PyResult<Self> {
        if nodes.is_instance_of::<PyString>() {
            return Err(PyValueError::new_err(
                "invalid nodes: a single string; expected a list of Splash node URLs, such as [\"http://127.0.0.1:8050\"]",
            ));
        }
        let nodes = nodes
            .try_iter()
            .map_err(|_| {
                PyValueError::new_err("invalid nodes: expected a list of Splash node URLs")
            })?
            .enumerate()
            .map(|(i, node)| node_options(i, &node?))
            .collect::<PyResult<Vec<_>>>()?;
        let options = ClusterOptions {
            nodes,
            maxconn: positive_int("maxconn", maxconn)? as usize,
            weight: positive_int("weight", weight)? as u32,
            node_maxrss: node_maxrss
                .map(|mb| positive_int("node_maxrss", mb).map(|mb| mb as u64))
                .transpose()?,
            retries: non_negative_int("retries", retries)?,
            queue_timeout: seconds("queue_timeout", queue_timeout)?,
            health_interval: seconds("health_interval", health_interval)?,
            health_timeout: seconds("health_timeout", health_timeout)?,
            health_fast_interval: health_fast_interval
                .map(|s| seconds("health_fast_interval", s))
                .transpose()?,
            health_path: health_path.to_owned(),
            fall: positive_int("fall", fall)? as u32,
            rise: positive_int("rise", rise)? as u32,
            error_limit: positive_int("error_limit", error_limit)? as u32,
            connect_timeout: seconds("connect_timeout", connect_timeout)?,
            // inf: no budget (a share of requests that is never reached).
            retry_budget: (retry_budget != f64::INFINITY).then_some(retry_budget),
            poison_limit: positive_int("poison_limit", poison_limit)? as u32,
            // 0: the names are resolved at start only.
            dns_interval: (dns_interval != 0.0)
                .then(|| seconds("dns_interval", dns_interval))
                .transpose()?,
            adaptive,
            stats: stats_port
                .map(|port| {
                    let port = u16::try_from(port).map_err(|_| {
                        value_error(ConfigError::new(
                            "stats_port",
                            port,
                            "a TCP port from 0 (any free port) to 65535",
                        ))
                    })?;
                    Ok::<_, PyErr>(StatsOptions {
                        host: stats_host.to_owned(),
                        port,
                        user: stats_user.to_owned(),
                        password: stats_password,
                    })
                })
                .transpose()?,
        };
        let mut config = options.validate().map_err(value_error)?;
        let fleet = redis_url
            .map(|url| fleet_options(url, redis_key_prefix, redis_lease_ttl))
            .transpose()?;
        refresh_log_levels();
        let stats_addr = config.stats.as_ref().map(|s| format!("{s:?}"));
        let cluster = py.detach(|| {
            let transport = HttpTransport::new(config.connect_timeout)
                .map_err(|e| PyRuntimeError::new_err(format!("{e:?}")))?;
            let runtime = pyo3_async_runtimes::tokio::get_runtime();
            // Names become one node per address before anything counts
            // nodes; a name that does not resolve stops the crawl here.
            let names = runtime
                .block_on(discovery::expand(&mut config.nodes))
                .map_err(value_error)?;
            // Connected before the first request: a bad URL, a refused
            // connection or a failed AUTH stops the crawl here.
            let link = match fleet {
                Some(options) => {
                    let lease_ttl = options.lease_ttl;
                    let link = runtime
                        .block_on(fleet_sync::connect(options, &config.nodes, config.adaptive))
                        .map_err(|e| PyConnectionError::new_err(e.to_string()))?;
                    for warning in &link.warnings {
                        tracing::warn!(target: "scrapy_splash_cluster::fleet", "{warning}");
                    }
                    Some((link, lease_ttl))
                }
                None => None,
            };
            let _entered = runtime.enter();
            let policy = Box::new(LeastConn::new());
            // In a shared fleet too: a node is its address, every process
            // follows the same DNS, and an address that joins is added to
            // the fleet's nodes at the pool's next index.
            let dns_interval = config.dns_interval;
            let started = match link {
                None => Cluster::start(config, transport, policy),
                Some((link, lease_ttl)) => {
                    Cluster::start_in_fleet(config, transport, policy, link, lease_ttl)
                }
            };
            let cluster = started.map_err(|e| {
                PyOSError::new_err(format!(
                    "cannot serve the stats page ({}): {e}",
                    stats_addr.unwrap_or_default()
                ))
            })?;
            if let Some(interval) = dns_interval {
                cluster.follow_dns(names, interval);
            }
            Ok::<_, PyErr>(cluster)
        })?;
        Ok(Self {
            cluster: Arc::new(cluster),
            inbox: Mutex::new(None),
        })
    }

    /// Sends a request to the cluster; an awaitable of `Response`.
    #[pyo3(signature = (
        method, path, headers=None, body=None, timeout=60.0, max_size=None,
        affinity=None, affinity_body=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn request<'py>(
        &self,
        py: Python<'py>,
        method: String,
        path: String,
        headers: Option<&Bound<'py, PyAny>>,
        body: Option<Vec<u8>>,
        timeout: f64,
        max_size: Option<i64>,
        affinity: Option<Vec<String>>,
        affinity_body: Option<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let timeout = seconds("timeout", timeout)?;
        let max_body = max_size
            .map(|v| positive_int("max_size", v).map(|v| v as usize))
            .transpose()?;
        let request = NodeRequest {
            method,
            path,
            headers: headers_from_py(headers)?,
            body: body.map(Bytes::from).unwrap_or_default(),
            max_body,
            saved_args: match (affinity, affinity_body) {
                (Some(nodes), Some(body)) if !nodes.is_empty() => Some(SavedArgs {
                    nodes,
                    body: Bytes::from(body),
                }),
                (None, None) | (Some(_), Some(_)) => None,
                _ => {
                    return Err(PyValueError::new_err(
                        "invalid affinity: affinity and affinity_body go together",
                    ))
                }
            },
        };
        request.validate().map_err(PyValueError::new_err)?;
        let cluster = Arc::clone(&self.cluster);
        let inbox = self.inbox(py)?;
        let method = request.method.clone();
        let path = request.path_for_log().to_owned();
        Inbox::spawn(inbox.bind(py), async move {
            Finished {
                method,
                path,
                result: cluster.request(request, timeout).await,
            }
        })
    }

    /// The stats page's URL (`http://host:port/`), or None when it is off.
    #[getter]
    fn stats_url(&self) -> Option<String> {
        self.cluster
            .stats_addr()
            .map(|addr| format!("http://{addr}/"))
    }

    /// What the stats page shows, as `/stats.json` has it (a JSON string).
    fn report_json(&self, py: Python<'_>) -> String {
        py.detach(|| self.cluster.report().to_json().to_string())
    }

    /// A snapshot of every node.
    fn nodes(&self, py: Python<'_>) -> Vec<NodeSnapshot> {
        let snapshots = py.detach(|| self.cluster.nodes());
        snapshots.into_iter().map(NodeSnapshot::from).collect()
    }

    /// The admission queue: {"waiting", "oldest_wait", "waits", "timeouts"}.
    fn queue<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let q = py.detach(|| self.cluster.queue());
        let d = PyDict::new(py);
        d.set_item("waiting", q.waiting)?;
        d.set_item("oldest_wait", q.oldest_wait.as_secs_f64())?;
        d.set_item("waits", q.waits)?;
        d.set_item("timeouts", q.timeouts)?;
        Ok(d)
    }

    /// Stops the probes and refuses new requests; with `abort=True`, fails
    /// the requests under way. Idempotent; an awaitable, already done.
    ///
    /// The work is done before returning, not in a future completed from a
    /// tokio thread: `close()` is the last call of a crawl, and a thread that
    /// reaches for the GIL while the interpreter finalizes aborts the process.
    #[pyo3(signature = (abort=false))]
    fn close<'py>(&self, py: Python<'py>, abort: bool) -> PyResult<Bound<'py, PyAny>> {
        let probes = self.cluster.close(abort);
        if abort {
            // The requests failed by the abort still reach their futures.
            self.drain_inbox(py)?;
        }
        py.detach(|| {
            pyo3_async_runtimes::tokio::get_runtime().block_on(async move {
                for probe in probes {
                    let _ = probe.await;
                }
            })
        });
        ready(py, py.None())
    }

    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        ready(py, slf.into_any())
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__<'py>(
        &self,
        py: Python<'py>,
        _exc: &Bound<'py, pyo3::types::PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.close(py, false)
    }

    fn __repr__(&self) -> String {
        let urls: Vec<String> = self.cluster.nodes().into_iter().map(|n| n.url).collect();
        format!("<SplashCluster {}>", urls.join(", "))
    }
}
