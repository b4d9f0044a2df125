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

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple};

use typed_arena::Arena;

use crate::canonical::{
    sort_plan, write_plan, ChunkPlan, FastFiles, FileEntry, HashSink, Sink, Value,
};
use crate::errors::{Error, Op};
use crate::fileset::{self, Reader};
use crate::native;
use crate::pyobj;
use crate::threads::{self, Group};

/// A value of the document after step 2: a plain `str` (escaped in Rust) or encoded JSON.
enum Text<'py> {
    Str(Bound<'py, PyString>),
    Raw(Vec<u8>),
}

/// A dataset's files after step 1.
enum Files<'a, 'py> {
    /// A fast container whose values all encode without error, not gathered yet (the strict
    /// check does not gather).
    Plain(Bound<'py, PyAny>),
    /// Sorted by Python (rare paths or values): the canonical list, to be encoded in step 2.
    Sorted(Bound<'py, PyList>),
    /// Gathered already, during the check.
    Gathered(FastFiles<'a>),
}

/// A dataset's files after step 2: `Sorted` has become `Raw`.
enum EncodedFiles<'a, 'py> {
    Plain(Bound<'py, PyAny>),
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

/// Step 1: the structure of one dataset.
fn check_dataset<'a, 'py>(
    name: Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    gatherer: Option<&Gatherer<'a, 'py>>,
) -> PyResult<Checked<'a, 'py>> {
    let py = data.py();
    if !data.is_instance_of::<PyDict>() {
        return Err(Error::DatasetType(Op::Hash, &name, data).into());
    }
    let files = pyobj::get_files(data)?;
    if pyobj::is_list_or_tuple(&files) && !data.contains(pyo3::intern!(py, "treename"))? {
        return Err(Error::ListFilesNeedTreename(Op::Hash, &name).into());
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
    // With a gatherer, one pass checks and gathers (the plain case), instead of a check now and
    // a gather later: each path's object is visited once while it is still in cache.
    let (sorted, shape) = match gatherer {
        Some(g) => match fileset::read(Op::Hash, files, |n| g.reader(n))? {
            fileset::Files::Fast(f, _) => return Ok(Files::Gathered(f)),
            fileset::Files::Python(sorted, shape) => (sorted, shape),
        },
        None => match fileset::read(Op::Hash, files, |_| fileset::PlainValues)? {
            fileset::Files::Fast((), _) => return Ok(Files::Plain(files.clone())),
            fileset::Files::Python(sorted, shape) => (sorted, shape),
        },
    };
    Ok(Files::Sorted(fileset::sorted_items(sorted, shape)?))
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
        Files::Plain(f) => EncodedFiles::Plain(f),
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
        fileset::utf8(kept)
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

    /// A reader that gathers a files container of `len_hint` files (see [`Gather`]).
    fn reader<'g>(&'g self, len_hint: usize) -> Gather<'g, 'a, 'py> {
        Gather {
            gatherer: self,
            files: FastFiles {
                entries: Vec::with_capacity(len_hint),
                values: Vec::new(),
                json: Vec::new(),
            },
            len_hint,
            last: None,
            rare: Vec::new(),
            reserved: false,
        }
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
        match files {
            EncodedFiles::Gathered(f) => plan.files(f),
            EncodedFiles::Raw(b) => plan.raw(b),
            EncodedFiles::Plain(files) => {
                match fileset::read(Op::Hash, &files, |n| self.reader(n))? {
                    fileset::Files::Fast(f, _) => plan.files(f),
                    // Rare: a path or tree name with a lone surrogate, or a fileset that another
                    // thread changed since it was checked. Python sorts and encodes.
                    fileset::Files::Python(sorted, shape) => plan.raw(pyobj::encode_json(
                        fileset::sorted_items(sorted, shape)?.as_any(),
                    )?),
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

/// Gathers one files container: paths are borrowed (they must have a UTF-8 form, or the
/// container is declined and Python sorts and encodes it); tree names are borrowed; other values
/// (preprocessed entries) are encoded here by `native.rs`, and the rare ones it declines by
/// Python's encoder once the walk is over (so that no Python code runs while the dict is
/// walked). If Python cannot encode one, the container is declined: the caller's Python path
/// raises coffea's error in coffea's order.
struct Gather<'g, 'a, 'py> {
    gatherer: &'g Gatherer<'a, 'py>,
    files: FastFiles<'a>,
    len_hint: usize,
    /// Values that repeat (tree names, usually one object or a few equal ones; or one
    /// preprocessed entry shared by many files): the last one.
    last: Option<(Bound<'py, PyAny>, Value)>,
    /// Entries whose value Python's encoder writes, once the walk is over.
    rare: Vec<(usize, Bound<'py, PyAny>)>,
    reserved: bool,
}

impl<'a, 'py> Reader<'py> for Gather<'_, 'a, 'py> {
    type Out = FastFiles<'a>;

    fn file(
        &mut self,
        path: Bound<'py, PyString>,
        value: Option<Bound<'py, PyAny>>,
    ) -> PyResult<bool> {
        let Some(path) = self.gatherer.borrow(path) else {
            return Ok(false);
        };
        let value = match value {
            Some(v) if !v.is_none() => match &self.last {
                Some((obj, val)) if obj.is(&v) => *val,
                _ => match self.gatherer.value(&mut self.files, &v) {
                    Some(val) => {
                        if let (Value::Json(start, _), false) = (val, self.reserved) {
                            if start > 0 {
                                // A second distinct encoded value: expect one a file, of about
                                // the first one's size.
                                let each = start as usize + 8;
                                self.files.json.reserve(self.len_hint.saturating_mul(each));
                                self.reserved = true;
                            }
                        }
                        self.last = Some((v, val));
                        val
                    }
                    None => {
                        self.rare.push((self.files.entries.len(), v));
                        Value::Null // replaced in `finish`
                    }
                },
            },
            _ => Value::Null,
        };
        self.files.entries.push(FileEntry { path, value });
        Ok(true)
    }

    fn finish(mut self) -> PyResult<Option<FastFiles<'a>>> {
        for (i, v) in self.rare {
            let Ok(text) = pyobj::encode_json(&v) else {
                return Ok(None);
            };
            let start = self.files.json.len();
            self.files.json.extend_from_slice(&text);
            self.files.entries[i].value = Value::Json(start as u32, text.len() as u32);
        }
        if u32::try_from(self.files.json.len()).is_err() {
            // Offsets past 4 GiB of encoded values in one dataset: let Python do it.
            return Ok(None);
        }
        Ok(Some(self.files))
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

/// Large chunks go through a two-thread pipeline (see `threads::stream`): this thread gathers each
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
    threads::stream(py, n, plan_of)
}

/// Files gathered (and kept alive) before a batch is finished and its references dropped.
const BATCH_FILES: usize = 1 << 20;

/// Chunks are handed to the worker in groups of about this many files, so that thread
/// wake-ups stay rare.
const GROUP_FILES: usize = 4096;

/// Hash many chunks. This thread gathers the chunks' plans (GIL held) and hands groups of them
/// to worker threads, one per other core, that sort, escape and hash them; when the workers
/// have enough queued, this thread hashes a group itself with the GIL released, so that every
/// core stays busy.
pub fn hash_many(chunks: &Bound<'_, PyAny>) -> PyResult<Vec<[u8; 32]>> {
    let py = chunks.py();
    let mut out: Vec<[u8; 32]> = Vec::new();
    let mut chunks = chunks.try_iter()?.peekable();
    while chunks.peek().is_some() {
        let keep = KeepAlive::new();
        let gatherer = Gatherer::new(&keep);
        let base = out.len();
        let batch = threads::pool(py, |hand_over| {
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
        })?;
        out.resize(base + batch.len(), [0; 32]);
        for (i, d) in batch {
            out[i] = d;
        }
    }
    Ok(out)
}
