//! How long a render may take, as the request itself tells Splash: its
//! `timeout` and `wait` arguments.
//!
//! The adaptive limit (`adaptive`) compares a node's render latencies with
//! its own best. Raw seconds would mistake a crawl that moves on to slow
//! pages for a node that got slower: a request given `timeout=60` is expected
//! to take longer than one given `timeout=5`. So each latency is first made
//! relative to the request's own budget: `wait` (seconds Splash idles after
//! the page loaded, whatever the load) is taken off, and what is left is
//! divided by `timeout` (past which Splash answers 504 GlobalTimeoutError).
//! A render that used its whole budget scores 1.0, whatever its length.
//!
//! The arguments are where Splash reads them: the JSON object of a POST body
//! (what the Scrapy middleware sends) or the query of a GET. A value may be a
//! number or a numeric string, as Splash accepts both. Anything else (no such
//! argument, an unparsable one) falls back to Splash's defaults: Splash
//! itself answers a bad value with 400, which moves no limit anyway.

use std::time::Duration;

use super::transport::NodeRequest;

/// Splash's default `timeout` (seconds), when a request sets none.
pub const SPLASH_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest latency a render counts as, so that a render shorter than
/// its `wait` (an error answered early) never divides into zero.
const SHORTEST: Duration = Duration::from_millis(1);

/// A request's render budget: Splash's `timeout` and `wait`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderBudget {
    /// Past this Splash gives up with 504.
    pub timeout: Duration,
    /// Idle time Splash adds after the page loaded.
    pub wait: Duration,
}

impl Default for RenderBudget {
    fn default() -> Self {
        Self {
            timeout: SPLASH_DEFAULT_TIMEOUT,
            wait: Duration::ZERO,
        }
    }
}

impl RenderBudget {
    /// The budget a request asks Splash for.
    pub fn of(request: &NodeRequest) -> Self {
        let mut budget = Self::default();
        let mut set = |name: &str, value: f64| {
            let Ok(value) = Duration::try_from_secs_f64(value) else {
                return;
            };
            match name {
                "timeout" if !value.is_zero() => budget.timeout = value,
                "wait" => budget.wait = value,
                _ => {}
            }
        };
        if let Some((_, query)) = request.path.split_once('?') {
            for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
                if let Ok(value) = value.trim().parse::<f64>() {
                    set(&name, value);
                }
            }
        }
        if request.body.first() == Some(&b'{') {
            if let Ok(serde_json::Value::Object(args)) =
                serde_json::from_slice::<serde_json::Value>(&request.body)
            {
                for name in ["timeout", "wait"] {
                    let value = match args.get(name) {
                        Some(serde_json::Value::Number(n)) => n.as_f64(),
                        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
                        _ => None,
                    };
                    if let Some(value) = value {
                        set(name, value);
                    }
                }
            }
        }
        budget
    }

    /// A render's latency as a share of its budget: `(elapsed - wait) /
    /// timeout`, 1.0 for a render that used all of it.
    pub fn share(&self, elapsed: Duration) -> f64 {
        let working = elapsed.saturating_sub(self.wait).max(SHORTEST);
        working.as_secs_f64() / self.timeout.as_secs_f64()
    }

    /// The render time that is `share` of this budget: the inverse of
    /// [`share`](Self::share).
    pub fn elapsed_at(&self, share: f64) -> Duration {
        self.wait + self.timeout.mul_f64(share.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn request(path: &str, body: &str) -> NodeRequest {
        NodeRequest {
            method: "POST".to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Bytes::from(body.to_owned()),
            max_body: None,
            saved_args: None,
        }
    }

    #[test]
    fn the_body_and_the_query_say_it_as_splash_reads_them() {
        let body = request(
            "/render.html",
            r#"{"url": "u", "timeout": 2.5, "wait": "0.5"}"#,
        );
        assert_eq!(
            RenderBudget::of(&body),
            RenderBudget {
                timeout: Duration::from_millis(2500),
                wait: Duration::from_millis(500),
            }
        );
        let query = request("/render.html?url=u&timeout=10&wait=1", "");
        assert_eq!(RenderBudget::of(&query).timeout, Duration::from_secs(10));
        assert_eq!(RenderBudget::of(&query).wait, Duration::from_secs(1));
    }

    #[test]
    fn missing_or_unusable_values_are_splash_defaults() {
        for body in [
            r#"{"url": "u"}"#,
            r#"{"timeout": "soon", "wait": -1}"#,
            r#"{"timeout": 0}"#,
            "[1, 2]",
            "not json",
        ] {
            assert_eq!(
                RenderBudget::of(&request("/execute", body)),
                RenderBudget::default(),
                "{body}"
            );
        }
    }

    #[test]
    fn the_share_takes_the_wait_off_and_divides_by_the_timeout() {
        let budget = RenderBudget {
            timeout: Duration::from_secs(2),
            wait: Duration::from_secs(1),
        };
        assert_eq!(budget.share(Duration::from_secs(2)), 0.5);
        assert_eq!(budget.share(Duration::from_secs(3)), 1.0);
        // Shorter than the wait (an early error): the floor, never zero.
        assert!(budget.share(Duration::from_millis(10)) > 0.0);
    }
}
