//! A real `redis-server` per test, on a free loopback port, without
//! persistence, killed on drop. Shared by the fleet's unit tests
//! (src/core/fleet_tests.rs) and the TLS test (tests/fleet_tls.rs), which
//! include this file by path.
#![allow(dead_code)] // each includer uses part of it

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use redis::Client;

/// A `redis-server` of its own, without persistence, killed on drop.
pub struct RedisServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    port_flag: &'static str,
    extra: Vec<String>,
}

impl RedisServer {
    /// On a free port, without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With these arguments too (`--requirepass`, ...).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_on("--port", extra)
    }

    /// Listening on a free port given to `port_flag` (`--port`, or
    /// `--tls-port` with `--port 0` in `extra`).
    pub fn start_on(port_flag: &'static str, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        for _ in 0..5 {
            if let Some(server) = Self::spawn(port_flag, free_port(), &extra) {
                return server;
            }
        }
        panic!("redis-server did not start on five free ports in a row");
    }

    /// Starts redis-server on `port`; `None` when it exits before it is ready
    /// (the port was taken meanwhile).
    fn spawn(port_flag: &'static str, port: u16, extra: &[String]) -> Option<Self> {
        let spawned = Command::new("redis-server")
            .args([port_flag, &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the fleet's tests need a real one \
                 (`make redis`, or `apt-get install -y redis-server`)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        // Its log tells when it accepts connections; the thread then keeps
        // draining it so that a full pipe never stalls the server.
        let stdout = child.stdout.take().expect("piped stdout");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = ready_tx.send(());
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => Some(Self {
                child,
                port,
                port_flag,
                extra: extra.to_vec(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as SIGKILL would: everything it held is gone).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new, empty server on the same port.
    pub fn start_again(&mut self) {
        self.kill();
        let server = Self::spawn(self.port_flag, self.port, &self.extra)
            .expect("redis-server on its old port");
        *self = server;
    }

    /// A plain connection to look at the keys behind the fleet's back.
    pub async fn inspect(&self) -> redis::aio::MultiplexedConnection {
        Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
