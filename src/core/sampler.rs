//! The task that feeds the stats page's history: once a second, the pool's
//! snapshot into [`History::record`].
//!
//! A second because the history's buckets are 5 s wide (five samples give a
//! bucket its peak of renders in flight) and a snapshot costs one short hold
//! of the pool's lock (a copy of each node's counters, well under a
//! microsecond a node). Started with the stats page and stopped with it, by
//! the cluster's stop signal, so nothing outlives the cluster.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::history::History;
use super::pool::Pool;

/// How often the pool is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Starts sampling `pool` into `history` every `every` on the current
/// runtime; the task ends when `stop` turns true or its sender is dropped.
pub fn spawn(
    pool: Pool,
    history: Arc<Mutex<History>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // After a stall (a loaded machine), go on from now: the history
        // counts the time each sample covers, so nothing is lost by it.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let nodes = pool.snapshot();
            history
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(Instant::now(), &nodes);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::history::HistorySettings;
    use crate::core::pool::tests::pool;

    #[tokio::test(start_paused = true)]
    async fn samples_every_second_and_stops_with_the_cluster() {
        let history = Arc::new(Mutex::new(History::new(
            HistorySettings::DEFAULT,
            Instant::now(),
        )));
        let (stop, stopped) = watch::channel(false);
        let task = spawn(pool(&[3]), Arc::clone(&history), SAMPLE_EVERY, stopped);
        // Paused time moves on as the runtime idles: 12 s of samples.
        tokio::time::sleep(Duration::from_millis(12_500)).await;
        let view = history.lock().unwrap().view();
        let samples: u16 = view.nodes[0].buckets.iter().map(|b| b.samples).sum();
        assert_eq!(samples, 13, "one at 0 s, then one a second");
        assert_eq!(view.nodes[0].buckets.last().unwrap().maxconn, 3);
        stop.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stop_signal_ends_it_too() {
        let history = Arc::new(Mutex::new(History::new(
            HistorySettings::DEFAULT,
            Instant::now(),
        )));
        let (stop, stopped) = watch::channel(false);
        let task = spawn(pool(&[]), history, SAMPLE_EVERY, stopped);
        drop(stop);
        task.await.unwrap();
    }
}
