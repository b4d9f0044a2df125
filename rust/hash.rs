//! `hash_fileset`: the SHA-256 of a chunk's canonical JSON, identical to coffea's.
//!
//! The canonical document is `{dataset: {"files": [[path, treename], ...], "metadata": ...,
//! "preload": ..., "treename": ...}}` written by `json.dumps(..., sort_keys=True,
//! separators=(",", ":"))`, with datasets and files sorted and `preload` sorted when it is a
//! collection. We work in three steps, in the order that makes our errors coffea's errors:
//!
//! 1. **check** every dataset's structure (types, list files without a tree name, sorting of
//!    rare file lists and of `preload`), raising the first structural error;
//! 2. **encode** the rare parts with Python's own JSON encoder, in document order, raising the
//!    first encoding error;
//! 3. **stream**: gather the plain `str` paths of each dataset (GIL held), then sort them and feed
//!    the document into SHA-256 with the GIL released.
//!
//! `hash_one` takes a faster route that does all three per dataset, visiting each path once, and
//! replays the strict order above only when it meets an error (see [`hash_one`]).

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple};

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::mpsc;

use typed_arena::Arena;

use crate::canonical::{
    digest, sort_plan, write_plan, ChunkPlan, FastFiles, FileEntry, HashSink, Sink, Value,
};
use crate::errors;
use crate::native;
use crate::pipeline::{hash_work, Feeder, Work};
use crate::pyobj;

/// A value of the document after step 2: a plain `str` (escaped in Rust) or encoded JSON.
enum Text<'py> {
    Str(Bound<'py, PyString>),
    Raw(Vec<u8>),
}

/// A dataset's files after step 1.
enum Files<'a, 'py> {
    /// An exact `dict` whose keys are all `str` and values all `str` or `None`.
    FastDict(Bound<'py, PyDict>),
    /// An exact `list` or `tuple` of `str`.
    FastSeq(Bound<'py, PyAny>),
    /// Sorted by Python (rare keys or values): the canonical list, to be encoded in step 2.
    Sorted(Bound<'py, PyList>),
    /// Gathered already, during the check.
    Gathered(FastFiles<'a>),
}

/// A dataset's files after step 2: `Sorted` has become `Raw`.
enum EncodedFiles<'a, 'py> {
    FastDict(Bound<'py, PyDict>),
    FastSeq(Bound<'py, PyAny>),
    Raw(Vec<u8>),
    Gathered(FastFiles<'a>),
}

/// A dataset whose structure is checked (step 1): its name and values are not encoded yet.
struct Checked<'a, 'py> {
    key: Bound<'py, PyAny>,
    files: Files<'a, 'py>,
    /// `(",\"metadata\":", value)`, ... in document order.
    extras: Vec<(&'static str, Bound<'py, PyAny>)>,
}

/// A dataset ready to be gathered into a plan (step 2 done).
struct Encoded<'a, 'py> {
    key: Text<'py>,
    files: EncodedFiles<'a, 'py>,
    extras: Vec<(&'static str, Text<'py>)>,
}

const EXTRAS: [(&str, &str); 3] = [
    ("metadata", ",\"metadata\":"),
    ("preload", ",\"preload\":"),
    ("treename", ",\"treename\":"),
];

fn is_str(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_exact_instance_of::<PyString>()
}

/// Step 1: the structure of one dataset.
fn check_dataset<'a, 'py>(
    name: Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    gatherer: Option<&Gatherer<'a, 'py>>,
) -> PyResult<Checked<'a, 'py>> {
    let py = data.py();
    if !data.is_instance_of::<PyDict>() {
        return Err(errors::hash_dataset_type(&name, data));
    }
    let files = pyobj::get_files(data)?;
    if pyobj::is_list_or_tuple(&files) && !data.contains(pyo3::intern!(py, "treename"))? {
        return Err(errors::hash_list_files_need_treename(&name));
    }
    let files = check_files(&files, gatherer)?;
    let mut extras = Vec::new();
    for (key, lit) in EXTRAS {
        if !data.contains(key)? {
            continue;
        }
        let mut value = data.get_item(key)?;
        if key == "preload"
            && (pyobj::is_list_or_tuple(&value)
                || value.is_instance_of::<PySet>()
                || value.is_instance_of::<PyFrozenSet>())
        {
            value = pyobj::sorted(&value)?.into_any();
        }
        extras.push((lit, value));
    }
    Ok(Checked {
        key: name,
        files,
        extras,
    })
}

fn check_files<'a, 'py>(
    files: &Bound<'py, PyAny>,
    gatherer: Option<&Gatherer<'a, 'py>>,
) -> PyResult<Files<'a, 'py>> {
    if let (Ok(d), Some(g)) = (files.cast_exact::<PyDict>(), gatherer) {
        // One pass that checks and gathers (the plain case), instead of a check now and a
        // gather later: each path's object is visited once while it is still in cache.
        let items = pyobj::DictItems::new(d).map(|kv| kv.map(|(k, v)| (k, Some(v))));
        if let Some(f) = g.fast_files(d.len(), items)? {
            return Ok(Files::Gathered(f));
        }
    } else if let Ok(d) = files.cast_exact::<PyDict>() {
        let mut plain = true;
        for item in pyobj::DictItems::new(d) {
            let (k, v) = item?;
            if !(is_str(&k) && (v.is_none() || is_str(&v))) {
                plain = false;
                break;
            }
        }
        if plain {
            return Ok(Files::FastDict(d.clone()));
        }
    }
    if files.is_instance_of::<PyDict>() {
        return Ok(Files::Sorted(pyobj::sorted(&files.call_method0("items")?)?));
    }
    let exact_seq =
        files.is_exact_instance_of::<PyList>() || files.is_exact_instance_of::<PyTuple>();
    if exact_seq
        && files
            .try_iter()?
            .all(|p| p.map(|p| is_str(&p)).unwrap_or(false))
    {
        return Ok(Files::FastSeq(files.clone()));
    }
    if pyobj::is_list_or_tuple(files) {
        return Ok(Files::Sorted(pyobj::sorted_with_none(files)?));
    }
    Err(errors::hash_files_type(files))
}

/// Step 2: encode one value of the document (a dataset name if `as_key`).
fn encode_text<'py>(obj: Bound<'py, PyAny>, as_key: bool) -> PyResult<Text<'py>> {
    Ok(match obj.cast_into_exact::<PyString>() {
        Ok(s) => Text::Str(s),
        Err(e) => {
            let obj = e.into_inner();
            if as_key {
                Text::Raw(pyobj::encode_json_key(&obj)?)
            } else {
                // Small metadata (`{"xsec": 831.76, "is_mc": True}`) is written natively; what
                // `native.rs` declines, Python's encoder writes (and raises coffea's error on).
                let mut text = Vec::new();
                if !native::encode_value(&obj, &mut text) {
                    text = pyobj::encode_json(&obj)?;
                }
                Text::Raw(text)
            }
        }
    })
}

/// Step 2 for one dataset, in document order: name, files, then the other keys.
fn encode_dataset<'a, 'py>(ds: Checked<'a, 'py>) -> PyResult<Encoded<'a, 'py>> {
    let key = encode_text(ds.key, true)?;
    let files = match ds.files {
        Files::FastDict(d) => EncodedFiles::FastDict(d),
        Files::FastSeq(s) => EncodedFiles::FastSeq(s),
        Files::Gathered(f) => EncodedFiles::Gathered(f),
        Files::Sorted(list) => EncodedFiles::Raw(pyobj::encode_json(list.as_any())?),
    };
    let extras = ds
        .extras
        .into_iter()
        .map(|(lit, v)| Ok((lit, encode_text(v, false)?)))
        .collect::<PyResult<_>>()?;
    Ok(Encoded { key, files, extras })
}

/// Steps 1 and 2 for a whole chunk.
fn prepare<'a, 'py>(
    chunk: &Bound<'py, PyAny>,
    gatherer: Option<&Gatherer<'a, 'py>>,
) -> PyResult<Vec<Encoded<'a, 'py>>> {
    let sorted = pyobj::sorted(&chunk.call_method0(pyo3::intern!(chunk.py(), "items"))?)?;
    let mut datasets = Vec::with_capacity(sorted.len());
    for item in sorted.iter() {
        let (name, data) = pyobj::unpack2(&item)?;
        datasets.push(check_dataset(name, &data, gatherer)?);
    }
    datasets.into_iter().map(encode_dataset).collect()
}

/// Strong references to every `str` whose UTF-8 bytes a plan borrows. Allocation takes `&self`,
/// so plans can borrow earlier strings while later ones are added; and the bytes outlive any
/// mutation of the fileset by another thread while the GIL is released.
pub type KeepAlive<'py> = Arena<Bound<'py, PyString>>;

/// Turns prepared datasets into plan pieces that borrow from a [`KeepAlive`].
pub struct Gatherer<'a, 'py> {
    keep: &'a KeepAlive<'py>,
}

impl<'a, 'py> Gatherer<'a, 'py> {
    pub fn new(keep: &'a KeepAlive<'py>) -> Self {
        Gatherer { keep }
    }

    /// Keep `s` alive and borrow its UTF-8 form, or `None` for a lone surrogate.
    fn borrow(&self, s: Bound<'py, PyString>) -> Option<&'a str> {
        let kept: &'a Bound<'py, PyString> = self.keep.alloc(s);
        kept.to_str().ok()
    }

    fn text(&self, plan: &mut ChunkPlan<'a>, text: Text<'py>) -> PyResult<()> {
        match text {
            Text::Str(s) => match self.borrow(s.clone()) {
                Some(text) => plan.string(text),
                // Lone surrogates have no UTF-8 form: let Python's encoder escape them.
                None => plan.raw(pyobj::encode_json(s.as_any())?),
            },
            Text::Raw(b) => plan.raw(b),
        }
        Ok(())
    }

    /// Gather the paths and values of a files container whose paths are all `str` with a
    /// UTF-8 form (`None` otherwise, and Python sorts and encodes the container). Tree names
    /// are borrowed; other values (preprocessed entries) are encoded here by `native.rs`, and
    /// the rare ones it declines by Python's encoder once the walk is over (so that no Python
    /// code runs while the dict is walked). If Python cannot encode one, `None`: the caller's
    /// Python path raises coffea's error in coffea's order.
    fn fast_files(
        &self,
        len_hint: usize,
        pairs: impl Iterator<Item = PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>>,
    ) -> PyResult<Option<FastFiles<'a>>> {
        let mut files = FastFiles {
            entries: Vec::with_capacity(len_hint),
            values: Vec::new(),
            json: Vec::new(),
        };
        // Values that repeat (tree names, usually one object or a few equal ones; or one
        // preprocessed entry shared by many files): remember the last.
        let mut last: Option<(Bound<'py, PyAny>, Value)> = None;
        // Entries whose value Python's encoder writes, once the walk is over.
        let mut rare: Vec<(usize, Bound<'py, PyAny>)> = Vec::new();
        let mut reserved = false;
        for pair in pairs {
            let (path, value) = pair?;
            let Ok(path) = path.cast_into_exact::<PyString>() else {
                return Ok(None);
            };
            let Some(path) = self.borrow(path) else {
                return Ok(None);
            };
            let value = match value {
                Some(v) if !v.is_none() => match &last {
                    Some((obj, val)) if obj.is(&v) => *val,
                    _ => match self.value(&mut files, &v) {
                        Some(val) => {
                            if let (Value::Json(start, _), false) = (val, reserved) {
                                if start > 0 {
                                    // A second distinct encoded value: expect one a file, of
                                    // about the first one's size.
                                    let each = start as usize + 8;
                                    files.json.reserve(len_hint.saturating_mul(each));
                                    reserved = true;
                                }
                            }
                            last = Some((v, val));
                            val
                        }
                        None => {
                            rare.push((files.entries.len(), v));
                            Value::Null // replaced below
                        }
                    },
                },
                _ => Value::Null,
            };
            files.entries.push(FileEntry { path, value });
        }
        for (i, v) in rare {
            let Ok(text) = pyobj::encode_json(&v) else {
                return Ok(None);
            };
            let start = files.json.len();
            files.json.extend_from_slice(&text);
            files.entries[i].value = Value::Json(start as u32, text.len() as u32);
        }
        if u32::try_from(files.json.len()).is_err() {
            // Offsets past 4 GiB of encoded values in one dataset: let Python do it.
            return Ok(None);
        }
        Ok(Some(files))
    }

    /// A tree name (borrowed, each distinct one stored once) or a value encoded natively into
    /// `files.json`; `None` for a value that Python's encoder must write.
    fn value(&self, files: &mut FastFiles<'a>, v: &Bound<'py, PyAny>) -> Option<Value> {
        if let Ok(s) = v.cast_exact::<PyString>() {
            let text = self.borrow(s.clone())?;
            let idx = match files.values.iter().position(|t| *t == text) {
                Some(i) => i,
                None => {
                    files.values.push(text);
                    files.values.len() - 1
                }
            };
            return Some(Value::Str(idx as u32));
        }
        let start = files.json.len();
        native::encode_value(v, &mut files.json)
            .then(|| Value::Json(start as u32, (files.json.len() - start) as u32))
    }

    fn files(&self, plan: &mut ChunkPlan<'a>, files: EncodedFiles<'a, 'py>) -> PyResult<()> {
        // Rare, for the fast containers: a path or tree name with a lone surrogate, or a
        // fileset that another thread changed since it was checked. Python sorts and encodes.
        match files {
            EncodedFiles::Gathered(f) => plan.files(f),
            EncodedFiles::Raw(b) => plan.raw(b),
            // No Python code runs while we walk the dict, so (with the GIL held) it cannot change
            // under us; `DictItems` turns a change into a RuntimeError all the same.
            EncodedFiles::FastDict(d) => {
                let items = pyobj::DictItems::new(&d).map(|kv| kv.map(|(k, v)| (k, Some(v))));
                match self.fast_files(d.len(), items)? {
                    Some(f) => plan.files(f),
                    None => plan.raw(pyobj::encode_json(
                        pyobj::sorted(d.items().as_any())?.as_any(),
                    )?),
                }
            }
            EncodedFiles::FastSeq(seq) => {
                let it = seq.try_iter()?;
                let paths = it.map(|p| p.map(|p| (p, None)));
                match self.fast_files(seq.len().unwrap_or(0), paths)? {
                    Some(f) => plan.files(f),
                    None => plan.raw(pyobj::encode_json(pyobj::sorted_with_none(&seq)?.as_any())?),
                }
            }
        }
        Ok(())
    }

    /// Append one dataset's `"name":{"files":...,...}` to `plan`.
    fn dataset(&self, plan: &mut ChunkPlan<'a>, ds: Encoded<'a, 'py>, first: bool) -> PyResult<()> {
        if !first {
            plan.lit(",");
        }
        self.text(plan, ds.key)?;
        plan.lit(":{\"files\":");
        self.files(plan, ds.files)?;
        for (lit, text) in ds.extras {
            plan.lit(lit);
            self.text(plan, text)?;
        }
        plan.lit("}");
        Ok(())
    }

    /// The plan of dataset `i` of `n`, with the chunk's opening and closing braces.
    fn dataset_of_chunk(
        &self,
        ds: Encoded<'a, 'py>,
        i: usize,
        n: usize,
    ) -> PyResult<ChunkPlan<'a>> {
        let mut plan = ChunkPlan::default();
        if i == 0 {
            plan.lit("{");
        }
        self.dataset(&mut plan, ds, i == 0)?;
        if i + 1 == n {
            plan.lit("}");
        }
        Ok(plan)
    }

    /// The whole plan of one chunk.
    pub fn chunk(&self, chunk: &Bound<'py, PyAny>) -> PyResult<ChunkPlan<'a>> {
        let datasets = prepare(chunk, Some(self))?;
        let mut plan = ChunkPlan::default();
        plan.lit("{");
        for (i, ds) in datasets.into_iter().enumerate() {
            self.dataset(&mut plan, ds, i == 0)?;
        }
        plan.lit("}");
        Ok(plan)
    }
}

/// Below this many files a chunk is hashed on the calling thread alone.
const PIPELINE_AT: usize = 20_000;

/// How many files a chunk holds in plain containers, counted without running Python code.
fn n_plain_files(items: &Bound<'_, PyList>) -> usize {
    let files_of = |data: &Bound<'_, PyAny>| -> Option<usize> {
        let files = data.cast_exact::<PyDict>().ok()?.get_item("files").ok()??;
        if let Ok(d) = files.cast_exact::<PyDict>() {
            return Some(d.len());
        }
        files.cast_exact::<PyList>().ok().map(|l| l.len())
    };
    items
        .iter()
        .filter_map(|item| {
            let t = item.cast_exact::<PyTuple>().ok()?;
            files_of(&t.get_item(1).ok()?)
        })
        .sum()
}

/// Hash one chunk.
///
/// The fast way checks, encodes and streams each dataset in turn, visiting each path once. An
/// error found that way may not be the one coffea raises first (coffea checks every dataset's
/// structure before it encodes anything), so on any error the chunk is checked again the strict
/// way, in coffea's order, and that error is raised. Hashing has no side effects, so the
/// second look costs time only on the error path.
pub fn hash_one(chunk: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    hash_streaming(chunk).map_err(|fast| match prepare(chunk, None) {
        Err(strict) => strict,
        Ok(_) => fast,
    })
}

/// Large chunks go through a two-thread pipeline (see `pipeline.rs`): this thread gathers each
/// dataset's paths (GIL held) and sorts them (GIL released), while a worker thread feeds
/// SHA-256. Only a few datasets' plans and buffers are in flight at a time.
fn hash_streaming(chunk: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    let py = chunk.py();
    let items = pyobj::sorted(&chunk.call_method0(pyo3::intern!(py, "items"))?)?;
    let keep = KeepAlive::new();
    let gatherer = Gatherer::new(&keep);
    let n = items.len();
    let plan_of = |i: usize| -> PyResult<ChunkPlan<'_>> {
        let (name, data) = pyobj::unpack2(&items.get_item(i)?)?;
        let ds = encode_dataset(check_dataset(name, &data, Some(&gatherer))?)?;
        gatherer.dataset_of_chunk(ds, i, n)
    };
    if n_plain_files(&items) < PIPELINE_AT {
        let mut sink = HashSink::new();
        if n == 0 {
            sink.bytes(b"{}");
        }
        for i in 0..n {
            let mut plan = plan_of(i)?;
            sort_plan(&mut plan);
            write_plan(&mut sink, &plan);
        }
        return Ok(sink.finish());
    }
    let queued = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let (work_tx, work_rx) = mpsc::sync_channel::<Work<'_>>(4);
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
        digest.map_err(|_| PyRuntimeError::new_err("the hashing thread panicked"))
    })
}

/// Files gathered (and kept alive) before a batch is finished and its references dropped.
const BATCH_FILES: usize = 1 << 20;

/// Chunks are handed to the worker in groups of about this many files, so that thread
/// wake-ups stay rare.
const GROUP_FILES: usize = 4096;

type Group<'a> = Vec<(usize, ChunkPlan<'a>)>;

fn digest_group(group: Group<'_>) -> Vec<(usize, [u8; 32])> {
    group
        .into_iter()
        .map(|(i, mut plan)| (i, digest(&mut plan)))
        .collect()
}

/// Worker threads for [`hash_many`]: one per core this process may use (its CPU affinity and
/// cgroup quota, as `std::thread::available_parallelism` reports them), less the calling thread.
fn n_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_sub(1)
        .max(1)
}

/// Hash many chunks. This thread gathers the chunks' plans (GIL held) and hands groups of them
/// to worker threads, one per other core, that sort, escape and hash them; when the workers
/// have enough queued, this thread hashes a group itself with the GIL released, so that every
/// core stays busy.
pub fn hash_many(chunks: &Bound<'_, PyAny>) -> PyResult<Vec<[u8; 32]>> {
    let py = chunks.py();
    let workers = n_workers();
    let mut out: Vec<[u8; 32]> = Vec::new();
    let mut chunks = chunks.try_iter()?.peekable();
    while chunks.peek().is_some() {
        let keep = KeepAlive::new();
        let gatherer = Gatherer::new(&keep);
        let queued = AtomicUsize::new(0);
        let base = out.len();
        let (work_tx, work_rx) = mpsc::sync_channel::<Group<'_>>(4 * workers);
        let work_rx = std::sync::Mutex::new(work_rx);
        let batch = std::thread::scope(|scope| -> PyResult<Vec<(usize, [u8; 32])>> {
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
                            queued.fetch_sub(1, AtomicOrdering::AcqRel);
                        }
                        done
                    })
                })
                .collect();
            let mut done = Vec::new();
            let mut hand_over = |group| {
                if queued.load(AtomicOrdering::Acquire) >= 2 * workers {
                    done.extend(py.detach(move || digest_group(group)));
                } else {
                    queued.fetch_add(1, AtomicOrdering::AcqRel);
                    // A closed channel means the workers died; joining them reports that.
                    let _ = work_tx.send(group);
                }
            };
            let fed = (|| -> PyResult<()> {
                let (mut i, mut files) = (base, 0);
                let (mut group, mut group_files) = (Group::new(), 0);
                while files < BATCH_FILES {
                    let Some(chunk) = chunks.next() else { break };
                    let plan = gatherer.chunk(&chunk?)?;
                    // Encoded values (preprocessed entries) count by their size, so that a
                    // batch's memory stays bounded.
                    let n = plan.n_entries() + plan.n_bytes() / 256 + 1;
                    files += n;
                    group_files += n;
                    group.push((i, plan));
                    i += 1;
                    if group_files >= GROUP_FILES {
                        hand_over(std::mem::take(&mut group));
                        group_files = 0;
                    }
                }
                if !group.is_empty() {
                    hand_over(group);
                }
                Ok(())
            })();
            drop(work_tx);
            let theirs: Result<Vec<_>, _> =
                py.detach(|| handles.into_iter().map(|h| h.join()).collect());
            let theirs =
                theirs.map_err(|_| PyRuntimeError::new_err("a hashing thread panicked"))?;
            fed?;
            done.extend(theirs.into_iter().flatten());
            Ok(done)
        })?;
        out.resize(base + batch.len(), [0; 32]);
        for (i, d) in batch {
            out[i] = d;
        }
    }
    Ok(out)
}
