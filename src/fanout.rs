//! Fan-out of one backup stream to several uploads at once: one thread per target (scoped, so an
//! upload may borrow its target), each fed by its own bounded queue ([`QUEUE_DEPTH`] chunks). A
//! slow target holds the others back only once its queue is full, so it lags by at most the
//! queue plus the chunk it is writing, and that is the memory it costs. Chunks are shared
//! ([`Bytes`]), never copied per target.
//!
//! A target whose write fails is aborted on its own thread and dropped from the fan-out; the
//! others go on, and the stream fails only when none is left. A dead target's queue is closed by
//! its thread, so the feeding thread is never left waiting on it. [`FanOut::finish`] completes
//! the remaining uploads (concurrently as well) and returns each target's outcome;
//! [`FanOut::abort`], or dropping the fan-out, cancels every upload (a failed dump stores nothing).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

use bytes::Bytes;

use crate::catalog::CopyRecord;
use crate::log;
use crate::storage::{Backend, Completion, StoredObject, Upload};

/// Chunks queued per target beyond the one it is writing.
pub const QUEUE_DEPTH: usize = 2;

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
}

/// The uploads being fed; see the module documentation.
pub struct FanOut<'scope> {
    lanes: Vec<Running<'scope>>,
    failed: Vec<Failure>,
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
        };
        for Lane { target, upload } in lanes {
            let (tx, rx) = sync_channel(depth);
            let spawned = std::thread::Builder::new()
                .name(format!("upload-{}", target.name))
                .spawn_scoped(scope, move || feed(upload, rx));
            match spawned {
                Ok(handle) => fan.lanes.push(Running { target, tx, handle }),
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
    /// A target found dead is dropped with its failure. Returns false when no target is left.
    pub fn send(&mut self, chunk: Bytes) -> bool {
        let mut i = 0;
        while i < self.lanes.len() {
            if deliver(&self.lanes[i], Message::Chunk(chunk.clone())) {
                i += 1;
            } else {
                let dead = self.lanes.remove(i);
                self.dropped(dead);
            }
        }
        !self.lanes.is_empty()
    }

    /// Completes every live upload with `done` (the uploads finish concurrently) and returns
    /// every target's outcome, failures included.
    pub fn finish(mut self, done: Completion) -> Outcome {
        let done = Arc::new(done);
        let mut delivered = Vec::new();
        for lane in std::mem::take(&mut self.lanes) {
            if deliver(&lane, Message::Finish(done.clone())) {
                delivered.push(lane);
            } else {
                self.dropped(lane);
            }
        }
        let mut outcome = Outcome {
            stored: Vec::new(),
            failed: std::mem::take(&mut self.failed),
        };
        let others_go_on = delivered.len() > 1;
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
                    if others_go_on {
                        failure.log_going_on();
                    }
                    outcome.failed.push(failure)
                }
            }
        }
        outcome
    }

    /// Cancels every upload and waits until each is cancelled; returns the targets that had
    /// failed on their own before (the others were abandoned).
    pub fn abort(mut self) -> (Vec<Failure>, Vec<TargetId>) {
        let mut abandoned = Vec::new();
        for Running { target, tx, handle } in std::mem::take(&mut self.lanes) {
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

    /// A lane whose thread ended before it was told to finish: records (and logs) its failure.
    fn dropped(&mut self, lane: Running<'scope>) {
        let failure = match ended(lane) {
            Err(failure) => failure,
            Ok(stored) => unreachable!("{} stored without being finished", stored.target),
        };
        if !self.lanes.is_empty() && !crate::signals::stopping() {
            failure.log_going_on();
        }
        self.failed.push(failure);
    }
}

/// Queues one message for a lane, waiting while its queue is full; false when its thread ended.
fn deliver(lane: &Running<'_>, message: Message) -> bool {
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
    let Running { target, tx, handle } = lane;
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
fn feed(mut upload: Box<dyn Upload + Send + '_>, rx: Receiver<Message>) -> LaneEnd {
    while let Ok(message) = rx.recv() {
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
