//! Every thread the core starts, in one place. There are three drivers, because there are three
//! shapes of work, and each releases the GIL only around work that reads no Python object:
//!
//! - [`stream`] hashes one large chunk on two threads. SHA-256 is sequential, so one thread
//!   must see the whole document in order: a pipeline with one ordered consumer.
//! - [`pool`] hashes many independent chunks: the calling thread gathers (GIL held) and hands
//!   groups to one worker per other core, and hashes a group itself when they have enough.
//! - [`par_map`] sorts split's datasets, which are independent and all gathered before, on
//!   rayon's pool with the GIL released (a plain data-parallel map).
//!
//! `stream` and `pool` are not rayon tasks because their producer is the thread that holds the
//! GIL: it must stay on the calling thread, and the workers must start while it still produces.
//!
//! ## The stream
//!
//! SHA-256 is sequential, so one thread must feed it the whole document; the other work
//! (gathering paths from Python objects, sorting, escaping) is done by the calling thread, which
//! holds the GIL only while gathering. Escaping is the flexible part: the calling thread escapes
//! a sorted dataset itself while the hashing thread is busy, and hands the dataset over whole
//! when the hashing thread is about to run dry, so that both cores stay busy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};

use pyo3::prelude::*;
use rayon::prelude::*;

use crate::canonical::{digest, sort_plan, write_plan, ChunkPlan, HashSink, Sink};
use crate::errors::Error;

/// Text handed to the hashing thread in buffers of about this size.
const HAND_OFF_AT: usize = 1 << 20;

/// What the hashing thread receives, in document order.
enum Work<'a> {
    /// Canonical text, already escaped.
    Text(Vec<u8>),
    /// A sorted plan for the hashing thread to escape itself.
    Plan(ChunkPlan<'a>),
}

/// The calling thread's end: a [`Sink`] that hands buffers (or whole plans) over.
struct Feeder<'a, 'q> {
    buf: Vec<u8>,
    work: SyncSender<Work<'a>>,
    spare: Receiver<Vec<u8>>,
    queued: &'q AtomicUsize,
}

impl<'a, 'q> Feeder<'a, 'q> {
    fn new(work: SyncSender<Work<'a>>, spare: Receiver<Vec<u8>>, queued: &'q AtomicUsize) -> Self {
        Feeder {
            buf: Vec::with_capacity(HAND_OFF_AT + 4096),
            work,
            spare,
            queued,
        }
    }

    fn send(&self, w: Work<'a>) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        // A closed channel means the hashing thread died; joining it reports that.
        let _ = self.work.send(w);
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HAND_OFF_AT + 4096));
        let full = std::mem::replace(&mut self.buf, next);
        self.send(Work::Text(full));
    }

    /// Write a sorted plan: escape it here, or hand it over if the hashing thread is idle.
    fn plan(&mut self, plan: ChunkPlan<'a>) {
        if self.queued.load(Ordering::Acquire) == 0 {
            self.flush();
            self.send(Work::Plan(plan));
        } else {
            write_plan(self, &plan);
        }
    }

    /// Hand over what is left; the hashing thread ends when the feeder is dropped.
    fn finish(mut self) {
        self.flush();
    }
}

impl Sink for Feeder<'_, '_> {
    const LIMIT: usize = HAND_OFF_AT;

    #[inline]
    fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    fn drain(&mut self) {
        self.flush();
    }
}

/// The hashing thread: hash the work in order until the feeder is gone.
fn hash_work(
    work: Receiver<Work<'_>>,
    spare: SyncSender<Vec<u8>>,
    queued: &AtomicUsize,
) -> [u8; 32] {
    let mut sink = HashSink::new();
    for w in work {
        match w {
            Work::Text(mut buf) => {
                sink.block(&buf);
                buf.clear();
                let _ = spare.try_send(buf);
            }
            Work::Plan(plan) => write_plan(&mut sink, &plan),
        }
        queued.fetch_sub(1, Ordering::AcqRel);
    }
    sink.finish()
}

/// Hash the document made of plans `0..n` (each the text of one dataset, in order), on this
/// thread and one worker: `plan_of` runs here with the GIL held; sorting runs here with it
/// released; escaping runs on whichever thread is free; hashing runs on the worker. Only a few
/// plans and buffers are in flight at a time.
pub fn stream<'a>(
    py: Python<'_>,
    n: usize,
    mut plan_of: impl FnMut(usize) -> PyResult<ChunkPlan<'a>>,
) -> PyResult<[u8; 32]> {
    let queued = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<Work<'a>>(4);
        let (spare_tx, spare_rx) = mpsc::sync_channel::<Vec<u8>>(8);
        let queued = &queued;
        let worker = scope.spawn(move || hash_work(work_rx, spare_tx, queued));
        let mut feeder = Feeder::new(work_tx, spare_rx, queued);
        let fed = (|| -> PyResult<()> {
            for i in 0..n {
                let mut plan = plan_of(i)?;
                py.detach(|| {
                    sort_plan(&mut plan);
                    feeder.plan(plan);
                });
            }
            Ok(())
        })();
        // Finishing hands over the last text and closes the channel, so the worker ends.
        feeder.finish();
        let digest = py.detach(|| worker.join());
        fed?;
        digest.map_err(|_| Error::ThreadPanicked.into())
    })
}

/// Chunks handed to a pool worker at once: `(index, plan)`.
pub type Group<'a> = Vec<(usize, ChunkPlan<'a>)>;

fn digest_group(group: Group<'_>) -> Vec<(usize, [u8; 32])> {
    group
        .into_iter()
        .map(|(i, mut plan)| (i, digest(&mut plan)))
        .collect()
}

/// Worker threads for [`pool`]: one per core this process may use (its CPU affinity and cgroup
/// quota, as `std::thread::available_parallelism` reports them), less the calling thread.
fn n_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_sub(1)
        .max(1)
}

/// Hash groups of independent chunks. `feed` runs on this thread (GIL held) and passes each
/// group it gathers to the function it is given, which hands the group to a worker, or, when
/// the workers have enough queued, hashes it here with the GIL released, so that every core
/// stays busy. Returns every chunk's `(index, digest)`, in no particular order.
pub fn pool<'a>(
    py: Python<'_>,
    feed: impl FnOnce(&mut dyn FnMut(Group<'a>)) -> PyResult<()>,
) -> PyResult<Vec<(usize, [u8; 32])>> {
    let workers = n_workers();
    let queued = AtomicUsize::new(0);
    let (work_tx, work_rx) = mpsc::sync_channel::<Group<'a>>(4 * workers);
    let work_rx = std::sync::Mutex::new(work_rx);
    std::thread::scope(|scope| {
        let (queued, work_rx) = (&queued, &work_rx);
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        // The lock is held only to take the next group, not to hash it.
                        let next = match work_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => break, // another worker panicked: joining reports it
                        };
                        let Ok(group) = next else { break };
                        done.extend(digest_group(group));
                        queued.fetch_sub(1, Ordering::AcqRel);
                    }
                    done
                })
            })
            .collect();
        let mut done = Vec::new();
        let fed = feed(&mut |group| {
            if queued.load(Ordering::Acquire) >= 2 * workers {
                done.extend(py.detach(move || digest_group(group)));
            } else {
                queued.fetch_add(1, Ordering::AcqRel);
                // A closed channel means the workers died; joining them reports that.
                let _ = work_tx.send(group);
            }
        });
        drop(work_tx);
        let theirs: Result<Vec<_>, _> =
            py.detach(|| handles.into_iter().map(|h| h.join()).collect());
        let theirs = theirs.map_err(|_| PyErr::from(Error::ThreadPanicked))?;
        fed?;
        done.extend(theirs.into_iter().flatten());
        Ok(done)
    })
}

/// `items.map(f)` on rayon's pool, with the GIL released: `f` must read no Python object.
pub fn par_map<T: Sync, U: Send>(
    py: Python<'_>,
    items: &[T],
    f: impl Fn(&T) -> U + Sync + Send,
) -> Vec<U> {
    py.detach(|| items.par_iter().map(f).collect())
}
