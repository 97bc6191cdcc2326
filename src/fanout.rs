//! Fan-out of one backup stream to several uploads at once: one thread per target (scoped, so an
//! upload may borrow its target), each fed by its own bounded queue ([`QUEUE_DEPTH`] chunks). A
//! slow target holds the others back only once its queue is full, so it lags by at most the
//! queue plus the chunk it is writing, and that is the memory it costs. Chunks are shared
//! ([`Bytes`]), never copied per target.
//!
//! A target whose write fails is aborted on its own thread and dropped from the fan-out; the
//! others go on, and the stream fails only when none is left. A dead target's queue is closed by
//! its thread, so the feeding thread is never left waiting on it. A target that *stalls* (one
//! write busy for the stall timeout, `PGDRIVE_STALL_TIMEOUT_MS`, while the feeder waits on its
//! full queue) fails alone the same way when another target is still healthy: the feeder stops
//! waiting for it, and keeps the run-wide watchdog (`crate::signals`) quiet only while it waits on
//! a target whose own clock has not run out; a run whose every target stalls still fails as
//! stalled. A stalled target's thread is left to return from its blocked request (its own
//! request timeouts bound that), finds its queue closed and aborts its upload; it is joined after
//! the others finished. [`FanOut::finish`] completes
//! the remaining uploads (concurrently as well) and returns each target's outcome;
//! [`FanOut::abort`], or dropping the fan-out, cancels every upload (a failed dump stores nothing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle, Thread};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::catalog::CopyRecord;
use crate::log;
use crate::storage::{Backend, Completion, StoredObject, Upload};

/// Chunks queued per target beyond the one it is writing.
pub const QUEUE_DEPTH: usize = 1;

/// Who a target is, for logs, errors and the catalog.
#[derive(Clone, Debug)]
pub struct TargetId {
    /// The configured name (`drive`, `local`, ...).
    pub name: String,
    pub backend: Backend,
    /// [`crate::storage::Target::describe`].
    pub describe: String,
}

/// One target's open upload, to be fed.
pub struct Lane<'u> {
    pub target: TargetId,
    pub upload: Box<dyn Upload + Send + 'u>,
}

/// A target that failed, and in which step (`upload`: opening it or a write; `verify`: finish).
#[derive(Debug)]
pub struct Failure {
    pub target: TargetId,
    pub step: &'static str,
    pub error: anyhow::Error,
}

impl Failure {
    /// Logs this failure as one the backup survives (other targets go on).
    pub fn log_going_on(&self) {
        let mut fields = vec![
            ("target", self.target.name.clone()),
            ("error", crate::error::render(&self.error)),
        ];
        fields.extend(crate::error::hint(&self.error).map(|h| ("hint", h)));
        log::error("a target failed; the backup goes on to the others", &fields);
    }

    /// This target's FAILED copy, as the catalog records it.
    pub fn copy_record(&self) -> CopyRecord {
        CopyRecord {
            target: self.target.name.clone(),
            backend: self.target.backend.as_str().to_string(),
            stored: false,
            object_id: None,
            location: None,
            error: Some(crate::error::render(&self.error)),
        }
    }
}

/// What every target made of the stream, in the targets' order.
#[derive(Debug, Default)]
pub struct Outcome {
    pub stored: Vec<StoredObject>,
    pub failed: Vec<Failure>,
}

enum Message {
    Chunk(Bytes),
    /// The stream ended well: complete and verify the upload.
    Finish(Arc<Completion>),
}

/// How a target's thread ended.
enum LaneEnd {
    Stored(StoredObject),
    Failed(&'static str, anyhow::Error),
    /// The feeder went away without finishing (the stream failed): the upload was aborted.
    Abandoned,
}

struct Running<'scope> {
    target: TargetId,
    tx: SyncSender<Message>,
    handle: ScopedJoinHandle<'scope, LaneEnd>,
    clock: Arc<LaneClock>,
}

/// When a target's thread started the write it is busy with (it is idle, waiting for the next
/// message, otherwise), and who to wake when it takes a message off its queue.
struct LaneClock {
    start: Instant,
    /// Milliseconds since `start` + 1 when the current write began; 0 while idle.
    busy_since: AtomicU64,
    feeder: Mutex<Option<Thread>>,
}

impl LaneClock {
    fn new(start: Instant) -> LaneClock {
        LaneClock {
            start,
            busy_since: AtomicU64::new(0),
            feeder: Mutex::new(None),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn idle(&self) {
        self.busy_since.store(0, Ordering::SeqCst);
    }

    /// Took a message: busy from now, and room in the queue for the waiting feeder.
    fn busy(&self) {
        self.busy_since.store(self.now(), Ordering::SeqCst);
        if let Some(feeder) = &*self.feeder.lock().unwrap_or_else(|p| p.into_inner()) {
            feeder.unpark();
        }
    }

    /// Busy with one write for `timeout` or longer.
    fn stalled(&self, timeout: Duration) -> bool {
        let since = self.busy_since.load(Ordering::SeqCst);
        since != 0 && self.now().saturating_sub(since) >= timeout.as_millis() as u64
    }
}

/// The uploads being fed; see the module documentation.
pub struct FanOut<'scope> {
    lanes: Vec<Running<'scope>>,
    failed: Vec<Failure>,
    /// Stalled targets, failed already, whose threads have not returned yet.
    detached: Vec<Running<'scope>>,
}

/// What became of a message for one lane.
enum Delivery {
    Queued,
    /// The lane's thread ended (its failure is its outcome).
    Dead,
    /// The lane stalled while others are healthy: it fails alone with this error.
    Stalled(anyhow::Error),
}

impl<'scope> FanOut<'scope> {
    /// Starts one thread per lane, each with a queue of `depth` chunks.
    pub fn start<'u: 'scope>(
        scope: &'scope Scope<'scope, '_>,
        lanes: Vec<Lane<'u>>,
        depth: usize,
    ) -> FanOut<'scope> {
        let mut fan = FanOut {
            lanes: Vec::new(),
            failed: Vec::new(),
            detached: Vec::new(),
        };
        let start = Instant::now();
        for Lane { target, upload } in lanes {
            let (tx, rx) = sync_channel(depth);
            let clock = Arc::new(LaneClock::new(start));
            let lane_clock = clock.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("upload-{}", target.name))
                .spawn_scoped(scope, move || feed(upload, rx, &lane_clock));
            match spawned {
                Ok(handle) => fan.lanes.push(Running {
                    target,
                    tx,
                    handle,
                    clock,
                }),
                Err(e) => fan.failed.push(Failure {
                    error: anyhow::Error::new(e).context(format!(
                        "starting the upload thread for {}",
                        target.describe
                    )),
                    target,
                    step: "upload",
                }),
            }
        }
        fan
    }

    /// Targets still being fed.
    pub fn live(&self) -> usize {
        self.lanes.len()
    }

    /// Queues `chunk` for every live target (shared, not copied), waiting while a queue is full.
    /// A target found dead, or stalled while another is healthy, is dropped with its failure.
    /// Returns false when no target is left.
    pub fn send(&mut self, chunk: Bytes) -> bool {
        let mut i = 0;
        while i < self.lanes.len() {
            match self.deliver(i, Message::Chunk(chunk.clone())) {
                Delivery::Queued => i += 1,
                Delivery::Dead => {
                    let dead = self.lanes.remove(i);
                    let others_go_on = !self.lanes.is_empty();
                    self.lost(dead, others_go_on);
                }
                Delivery::Stalled(error) => {
                    let stalled = self.lanes.remove(i);
                    let failure = Failure {
                        error: in_target(error, &stalled.target),
                        target: stalled.target.clone(),
                        step: "upload",
                    };
                    if !crate::signals::stopping() {
                        failure.log_going_on();
                    }
                    self.failed.push(failure);
                    self.detached.push(stalled);
                }
            }
        }
        !self.lanes.is_empty()
    }

    /// Queues one message for lane `i`, waiting while its queue is full. With other lanes live
    /// and the stall watchdog armed, the wait is watched per lane (see the module documentation).
    fn deliver(&self, i: usize, message: Message) -> Delivery {
        let lane = &self.lanes[i];
        let message = match lane.tx.try_send(message) {
            Ok(()) => return Delivery::Queued,
            Err(TrySendError::Disconnected(_)) => return Delivery::Dead,
            Err(TrySendError::Full(message)) => message,
        };
        crate::signals::waiting_on(format!("{} accepted no bytes", lane.target.describe));
        let timeout = match crate::signals::watched_timeout() {
            Some(timeout) if self.lanes.len() > 1 => timeout,
            // one target: its stall is the run's (the run-wide watchdog)
            _ => {
                return lane
                    .tx
                    .send(message)
                    .map_or(Delivery::Dead, |()| Delivery::Queued)
            }
        };
        *lane.clock.feeder.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current());
        let mut message = message;
        let delivery = loop {
            match lane.tx.try_send(message) {
                Ok(()) => break Delivery::Queued,
                Err(TrySendError::Disconnected(_)) => break Delivery::Dead,
                Err(TrySendError::Full(back)) => message = back,
            }
            if crate::signals::stopping() {
                // the run stops: wait no longer than the lane's own thread does
                break lane
                    .tx
                    .send(message)
                    .map_or(Delivery::Dead, |()| Delivery::Queued);
            }
            let healthy_other = self
                .lanes
                .iter()
                .enumerate()
                .any(|(j, other)| j != i && !other.clock.stalled(timeout));
            if healthy_other {
                if lane.clock.stalled(timeout) {
                    break Delivery::Stalled(crate::error::failure_hint(
                        format!(
                            "stalled: {} accepted no bytes for {} s (PGDRIVE_STALL_TIMEOUT_MS={}); the other targets went on",
                            lane.target.describe,
                            timeout.as_secs_f64(),
                            timeout.as_millis()
                        ),
                        "find what blocks this target (its network, its server); on a link that is only slow, raise PGDRIVE_STALL_TIMEOUT_MS or lower its chunk size",
                    ));
                }
                // another target is fine and waits with us: this lane's own clock is in charge
                crate::signals::progress();
            }
            std::thread::park_timeout(Duration::from_millis(50));
        };
        *lane.clock.feeder.lock().unwrap_or_else(|p| p.into_inner()) = None;
        delivery
    }

    /// Completes every live upload with `done` (the uploads finish concurrently) and returns
    /// every target's outcome, failures included.
    pub fn finish(mut self, done: Completion) -> Outcome {
        let done = Arc::new(done);
        let others_go_on = self.lanes.len() > 1;
        let mut delivered = Vec::new();
        for lane in std::mem::take(&mut self.lanes) {
            if deliver_blocking(&lane, Message::Finish(done.clone())) {
                delivered.push(lane);
            } else {
                self.lost(lane, others_go_on);
            }
        }
        let mut outcome = Outcome {
            stored: Vec::new(),
            failed: std::mem::take(&mut self.failed),
        };
        for lane in delivered {
            crate::signals::waiting_on(format!(
                "{} did not confirm the upload",
                lane.target.describe
            ));
            match ended(lane) {
                Ok(stored) => {
                    log::info(
                        "stored",
                        &[
                            ("target", stored.target.clone()),
                            ("location", stored.location.clone()),
                        ],
                    );
                    outcome.stored.push(stored);
                }
                Err(failure) => {
                    if others_go_on && !crate::signals::stopping() {
                        failure.log_going_on();
                    }
                    outcome.failed.push(failure)
                }
            }
        }
        self.join_detached();
        outcome
    }

    /// Waits for the threads of stalled targets (failed already) to return from their blocked
    /// request; they find their queues closed and abort their uploads.
    fn join_detached(&mut self) {
        for lane in std::mem::take(&mut self.detached) {
            let Running {
                target, tx, handle, ..
            } = lane;
            drop(tx);
            // failed already, and the run does not wait on it for its outcome: the watchdog is
            // kept quiet; the thread's own request timeouts bound the wait
            while !handle.is_finished() {
                crate::signals::progress();
                std::thread::sleep(Duration::from_millis(20));
            }
            log::debug("a stalled target let go", &[("target", target.name)]);
            let _ = handle.join();
        }
    }

    /// Cancels every upload and waits until each is cancelled; returns the targets that had
    /// failed on their own before (the others were abandoned).
    pub fn abort(mut self) -> (Vec<Failure>, Vec<TargetId>) {
        let mut abandoned = Vec::new();
        self.join_detached();
        for Running {
            target, tx, handle, ..
        } in std::mem::take(&mut self.lanes)
        {
            drop(tx); // the thread aborts its upload when its queue closes
            match handle.join() {
                Ok(LaneEnd::Failed(step, error)) => self.failed.push(Failure {
                    error: in_target(error, &target),
                    target,
                    step,
                }),
                _ => abandoned.push(target),
            }
        }
        (std::mem::take(&mut self.failed), abandoned)
    }

    /// A lane whose thread ended before it was told to finish: records its failure, and logs
    /// it when other targets go on.
    fn lost(&mut self, lane: Running<'scope>, others_go_on: bool) {
        let failure = match ended(lane) {
            Err(failure) => failure,
            Ok(stored) => unreachable!("{} stored without being finished", stored.target),
        };
        if others_go_on && !crate::signals::stopping() {
            failure.log_going_on();
        }
        self.failed.push(failure);
    }
}

/// Queues one message for a lane, waiting while its queue is full; false when its thread ended.
fn deliver_blocking(lane: &Running<'_>, message: Message) -> bool {
    match lane.tx.try_send(message) {
        Ok(()) => true,
        Err(TrySendError::Full(message)) => {
            crate::signals::waiting_on(format!("{} accepted no bytes", lane.target.describe));
            lane.tx.send(message).is_ok()
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

/// Waits for a lane's thread: what it stored, or its failure.
fn ended(lane: Running<'_>) -> Result<StoredObject, Failure> {
    let Running {
        target, tx, handle, ..
    } = lane;
    drop(tx);
    let (step, error) = match handle.join() {
        Ok(LaneEnd::Stored(stored)) => return Ok(stored),
        Ok(LaneEnd::Failed(step, error)) => (step, error),
        Ok(LaneEnd::Abandoned) => ("upload", anyhow::anyhow!("the upload was abandoned")),
        Err(_) => ("upload", anyhow::anyhow!("the upload thread panicked")),
    };
    Err(Failure {
        error: in_target(error, &target),
        target,
        step,
    })
}

fn in_target(error: anyhow::Error, target: &TargetId) -> anyhow::Error {
    error.context(format!("{} failed", target.describe))
}

/// A target's thread: writes what arrives until told to finish; a failed write aborts the upload
/// at once, which closes the queue.
fn feed(
    mut upload: Box<dyn Upload + Send + '_>,
    rx: Receiver<Message>,
    clock: &LaneClock,
) -> LaneEnd {
    loop {
        clock.idle();
        let Ok(message) = rx.recv() else { break };
        clock.busy();
        match message {
            Message::Chunk(data) => {
                if let Err(e) = upload.write(data) {
                    upload.abort();
                    return LaneEnd::Failed("upload", e);
                }
                crate::signals::progress();
            }
            Message::Finish(done) => {
                return match upload.finish(&done) {
                    Ok(stored) => LaneEnd::Stored(stored),
                    Err(e) => LaneEnd::Failed("verify", e),
                }
            }
        }
    }
    upload.abort();
    LaneEnd::Abandoned
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::storage::config::{TargetConfig, TargetKind};
    use crate::storage::memory::{Faults, MemoryStore};
    use crate::storage::{Hasher, Target};

    const NAME: &str = "db-daily-x.sql.gz";
    const CHUNK: usize = 1024;

    fn memory(name: &str, faults: Faults) -> (Box<dyn Target>, MemoryStore) {
        let store = MemoryStore::default();
        store.set_faults(faults);
        let target = crate::storage::open(TargetConfig {
            name: name.into(),
            kind: TargetKind::Memory(store.clone()),
        });
        (target, store)
    }

    fn id_of(t: &dyn Target) -> TargetId {
        TargetId {
            name: t.name().to_string(),
            backend: t.backend(),
            describe: t.describe(),
        }
    }

    fn lanes(targets: &mut [Box<dyn Target>]) -> Vec<Lane<'_>> {
        targets
            .iter_mut()
            .map(|t| Lane {
                target: id_of(t.as_ref()),
                upload: t.begin(NAME, "a/b", &BTreeMap::new(), CHUNK).unwrap(),
            })
            .collect()
    }

    /// `n` distinct chunks, and what completes a stream of them.
    fn chunks(n: usize) -> (Vec<Bytes>, Completion) {
        let chunks: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; CHUNK])).collect();
        let mut hasher = Hasher::default();
        chunks.iter().for_each(|c| hasher.update(c));
        let done = Completion {
            digest: hasher.finish(),
            properties: BTreeMap::new(),
            row_counts: BTreeMap::new(),
            manifest_extra: Default::default(),
            sealed_row_counts: None,
            recipients: Vec::new(),
        };
        (chunks, done)
    }

    fn failing_after(chunks: u64) -> Faults {
        Faults {
            fail_write_after_bytes: Some(chunks * CHUNK as u64),
            ..Faults::default()
        }
    }

    fn poll(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_slow_target_does_not_pace_a_fast_one_beyond_its_queue() {
        let n = 8;
        let (fast, fast_store) = memory("fast", Faults::default());
        let (slow, slow_store) = memory(
            "slow",
            Faults {
                write_delay: Some(Duration::from_millis(150)),
                ..Faults::default()
            },
        );
        let mut targets = vec![fast, slow];
        let (chunks, done) = chunks(n);
        let total = (n * CHUNK) as u64;
        let outcome = std::thread::scope(|scope| {
            let mut fan = FanOut::start(scope, lanes(&mut targets), QUEUE_DEPTH);
            for c in &chunks {
                assert!(fan.send(c.clone()));
            }
            // the feeder is through: the fast target has everything while the slow one lags by
            // no more than its queue and the chunk it is writing
            poll("the fast target received every chunk", || {
                fast_store.received(NAME) == total
            });
            let slow_at = slow_store.received(NAME);
            assert!(
                slow_at < total,
                "the slow target is still behind: {slow_at} of {total}"
            );
            assert!(
                slow_at >= total - ((QUEUE_DEPTH + 1) * CHUNK) as u64,
                "the feeder went on only as far as the slow target's queue: {slow_at} of {total}"
            );
            fan.finish(done)
        });
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert_eq!(outcome.stored.len(), 2);
        assert_eq!(slow_store.received(NAME), total);
    }

    #[test]
    fn a_target_failing_mid_stream_is_dropped_and_the_other_completes() {
        // the failing one is slow too, so the feeder is waiting on its full queue when it dies
        let (failing, failing_store) = memory(
            "failing",
            Faults {
                write_delay: Some(Duration::from_millis(20)),
                ..failing_after(3)
            },
        );
        let (healthy, healthy_store) = memory("healthy", Faults::default());
        let mut targets = vec![failing, healthy];
        let (chunks, done) = chunks(12);
        let outcome = std::thread::scope(|scope| {
            let mut fan = FanOut::start(scope, lanes(&mut targets), QUEUE_DEPTH);
            for c in &chunks {
                assert!(fan.send(c.clone()), "the healthy target is still there");
            }
            assert_eq!(fan.live(), 1, "the failed target was dropped");
            fan.finish(done)
        });
        assert_eq!(outcome.stored.len(), 1);
        assert_eq!(outcome.stored[0].target, "healthy");
        assert_eq!(outcome.failed.len(), 1);
        let failure = &outcome.failed[0];
        assert_eq!(
            (failure.target.name.as_str(), failure.step),
            ("failing", "upload")
        );
        let record = failure.copy_record();
        assert!(!record.stored);
        let error = record.error.unwrap();
        assert!(
            error.contains("in-memory target failing failed") && error.contains("(injected)"),
            "{error}"
        );
        assert_eq!(
            failing_store.leftovers(),
            (vec![], 0),
            "the failed upload was aborted"
        );
        assert_eq!(healthy_store.leftovers(), (vec![NAME.to_string()], 0));
    }

    #[test]
    fn every_target_failing_fails_the_stream() {
        let (a, a_store) = memory("a", failing_after(2));
        let (b, b_store) = memory("b", failing_after(4));
        let mut targets = vec![a, b];
        let (chunks, _) = chunks(12);
        let (failed, abandoned) = std::thread::scope(|scope| {
            let mut fan = FanOut::start(scope, lanes(&mut targets), QUEUE_DEPTH);
            let sent = chunks.iter().take_while(|c| fan.send((*c).clone())).count();
            assert!(
                sent < chunks.len(),
                "the fan-out noticed that nobody is left"
            );
            assert_eq!(fan.live(), 0);
            fan.abort()
        });
        let names: Vec<&str> = failed.iter().map(|f| f.target.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(abandoned.is_empty());
        for store in [a_store, b_store] {
            assert_eq!(store.leftovers(), (vec![], 0));
        }
    }

    #[test]
    fn aborting_leaves_nothing_anywhere() {
        let (a, a_store) = memory("a", Faults::default());
        let (b, b_store) = memory("b", Faults::default());
        let mut targets = vec![a, b];
        let (chunks, _) = chunks(4);
        let (failed, abandoned) = std::thread::scope(|scope| {
            let mut fan = FanOut::start(scope, lanes(&mut targets), QUEUE_DEPTH);
            chunks.iter().for_each(|c| assert!(fan.send(c.clone())));
            fan.abort()
        });
        assert!(failed.is_empty());
        assert_eq!(abandoned.len(), 2);
        for store in [a_store, b_store] {
            assert_eq!(store.leftovers(), (vec![], 0));
        }
    }

    #[test]
    fn a_stalled_target_fails_alone_while_the_other_completes() {
        let (fast, fast_store) = memory("fast", Faults::default());
        let (stuck, stuck_store) = memory(
            "stuck",
            Faults {
                write_delay: Some(Duration::from_millis(1500)),
                ..Faults::default()
            },
        );
        let mut targets = vec![fast, stuck];
        let (chunks, done) = chunks(8);
        let _watch = crate::signals::watch(Duration::from_millis(300));
        let started = Instant::now();
        let outcome = std::thread::scope(|scope| {
            let mut fan = FanOut::start(scope, lanes(&mut targets), QUEUE_DEPTH);
            for c in &chunks {
                assert!(fan.send(c.clone()), "the fast target is still there");
            }
            assert_eq!(fan.live(), 1, "the stalled target was dropped");
            fan.finish(done)
        });
        assert!(
            started.elapsed() < Duration::from_millis(1500 * 3),
            "the feeder did not wait on the stalled target's every write: {:?}",
            started.elapsed()
        );
        assert_eq!(outcome.stored.len(), 1, "{:?}", outcome.failed);
        assert_eq!(outcome.stored[0].target, "fast");
        assert_eq!(fast_store.received(NAME), (8 * CHUNK) as u64);
        assert_eq!(outcome.failed.len(), 1);
        let error = crate::error::render(&outcome.failed[0].error);
        assert!(
            error.contains("stalled: in-memory target stuck accepted no bytes for 0.3 s"),
            "{error}"
        );
        assert_eq!(
            stuck_store.leftovers(),
            (vec![], 0),
            "its upload was aborted"
        );
    }

    /// An upload that remembers where the buffers it was given live.
    struct Recorder(Arc<Mutex<Vec<(usize, usize)>>>);

    impl Upload for Recorder {
        fn write(&mut self, data: Bytes) -> anyhow::Result<()> {
            self.0
                .lock()
                .unwrap()
                .push((data.as_ptr() as usize, data.len()));
            Ok(())
        }

        fn finish(self: Box<Self>, _: &Completion) -> anyhow::Result<StoredObject> {
            Ok(StoredObject {
                target: "recorder".into(),
                backend: Backend::Memory,
                id: "r".into(),
                name: NAME.into(),
                location: "r".into(),
                metadata_failure: None,
            })
        }

        fn abort(self: Box<Self>) {}
    }

    #[test]
    fn every_target_gets_the_same_buffers_not_copies() {
        let (chunks, done) = chunks(6);
        let sent: Vec<(usize, usize)> = chunks
            .iter()
            .map(|c| (c.as_ptr() as usize, c.len()))
            .collect();
        let seen: Vec<_> = (0..3).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
        let (memory_target, store) = memory("mem", Faults::default());
        let mut targets = vec![memory_target];
        let outcome = std::thread::scope(|scope| {
            let mut lanes = lanes(&mut targets);
            lanes.extend(seen.iter().map(|s| Lane {
                target: TargetId {
                    name: "recorder".into(),
                    backend: Backend::Memory,
                    describe: "a recorder".into(),
                },
                upload: Box::new(Recorder(s.clone())),
            }));
            let mut fan = FanOut::start(scope, lanes, QUEUE_DEPTH);
            chunks.iter().for_each(|c| assert!(fan.send(c.clone())));
            fan.finish(done)
        });
        assert_eq!(outcome.stored.len(), 4, "{:?}", outcome.failed);
        for s in &seen {
            assert_eq!(*s.lock().unwrap(), sent, "the very buffers that were sent");
        }
        assert_eq!(store.received(NAME), (6 * CHUNK) as u64);
        // the fan-out let go of every buffer: the test's handles are the only ones left
        for c in chunks {
            assert!(c.is_unique(), "no reference kept");
        }
    }
}
