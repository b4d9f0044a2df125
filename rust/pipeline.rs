//! Hashing one large chunk on two cores.
//!
//! SHA-256 is sequential, so one thread must feed it the whole document; the other work
//! (gathering paths from Python objects, sorting, escaping) is done by the calling thread, which
//! holds the GIL only while gathering. Escaping is the flexible part: the calling thread escapes
//! a sorted dataset itself while the hashing thread is busy, and hands the dataset over whole
//! when the hashing thread is about to run dry, so that both cores stay busy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use crate::canonical::{write_plan, ChunkPlan, HashSink, Sink};

/// Text handed to the hashing thread in buffers of about this size.
const HAND_OFF_AT: usize = 1 << 20;

/// What the hashing thread receives, in document order.
pub enum Work<'a> {
    /// Canonical text, already escaped.
    Text(Vec<u8>),
    /// A sorted plan for the hashing thread to escape itself.
    Plan(ChunkPlan<'a>),
}

/// The calling thread's end: a [`Sink`] that hands buffers (or whole plans) over.
pub struct Feeder<'a, 'q> {
    buf: Vec<u8>,
    work: SyncSender<Work<'a>>,
    spare: Receiver<Vec<u8>>,
    queued: &'q AtomicUsize,
}

impl<'a, 'q> Feeder<'a, 'q> {
    pub fn new(
        work: SyncSender<Work<'a>>,
        spare: Receiver<Vec<u8>>,
        queued: &'q AtomicUsize,
    ) -> Self {
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
    pub fn plan(&mut self, plan: ChunkPlan<'a>) {
        if self.queued.load(Ordering::Acquire) == 0 {
            self.flush();
            self.send(Work::Plan(plan));
        } else {
            write_plan(self, &plan);
        }
    }

    /// Hand over what is left; the hashing thread ends when the feeder is dropped.
    pub fn finish(mut self) {
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
pub fn hash_work(
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
