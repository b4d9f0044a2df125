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

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFrozenSet, PyList, PySet, PyString, PyTuple};

use crate::canonical::{write_plan, ChunkPlan, FastFiles, FileEntry, HashSink, NULL_VALUE};
use crate::pyobj;

/// A value of the document that is either a plain `str` (escaped in Rust) or pre-encoded JSON.
enum Part<'py> {
    Str(Bound<'py, PyString>),
    Raw(Vec<u8>),
    /// Not yet encoded (between the check and encode steps).
    Obj(Bound<'py, PyAny>),
}

enum Files<'py> {
    /// An exact `dict` whose keys are all `str` and values all `str` or `None`.
    FastDict(Bound<'py, PyDict>),
    /// An exact `list` or `tuple` of `str`.
    FastSeq(Bound<'py, PyAny>),
    /// Already sorted by Python (rare keys or values): the canonical list, to be encoded.
    Sorted(Bound<'py, PyList>),
    Raw(Vec<u8>),
}

struct Dataset<'py> {
    key: Part<'py>,
    files: Files<'py>,
    /// `(",\"metadata\":", value)`, ... in document order.
    extras: Vec<(&'static str, Part<'py>)>,
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
fn check_dataset<'py>(name: Bound<'py, PyAny>, data: &Bound<'py, PyAny>) -> PyResult<Dataset<'py>> {
    let py = data.py();
    if !data.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "dataset {} is a {}, not a dict: hash_fileset takes a chunk such as split_fileset \
             returns, {{dataset: {{\"files\": {{path: treename}}, ...}}}}",
            pyobj::short_repr(&name),
            pyobj::type_name(data)
        )));
    }
    let files = pyobj::get_files(data)?;
    if pyobj::is_list_or_tuple(&files) && !data.contains(pyo3::intern!(py, "treename"))? {
        return Err(PyValueError::new_err(format!(
            "dataset {} lists its files without a 'treename', so the chunk does not say which \
             tree to read and cannot be hashed; split it with split_fileset(..., treename=\"Events\")",
            pyobj::short_repr(&name)
        )));
    }
    let files = check_files(&files)?;
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
        extras.push((lit, Part::Obj(value)));
    }
    Ok(Dataset {
        key: Part::Obj(name),
        files,
        extras,
    })
}

fn check_files<'py>(files: &Bound<'py, PyAny>) -> PyResult<Files<'py>> {
    let py = files.py();
    if let Ok(d) = files.cast_exact::<PyDict>() {
        let plain = d
            .iter()
            .all(|(k, v)| is_str(&k) && (v.is_none() || is_str(&v)));
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
        let paths = pyobj::sorted(files)?;
        let pairs = PyList::empty(py);
        for p in paths.iter() {
            pairs.append((p, py.None()))?;
        }
        return Ok(Files::Sorted(pairs));
    }
    Err(PyTypeError::new_err(format!(
        "'files' must be a dict {{path: treename}} or a list of paths, not {}",
        pyobj::type_name(files)
    )))
}

/// Step 2: encode the rare parts in document order.
fn encode_part(part: &mut Part<'_>, as_key: bool) -> PyResult<()> {
    if let Part::Obj(obj) = part {
        *part = if is_str(obj) {
            Part::Str(obj.clone().cast_into::<PyString>()?)
        } else if as_key {
            Part::Raw(pyobj::encode_json_key(obj)?)
        } else {
            Part::Raw(pyobj::encode_json(obj)?)
        };
    }
    Ok(())
}

fn encode_dataset(ds: &mut Dataset<'_>) -> PyResult<()> {
    encode_part(&mut ds.key, true)?;
    if let Files::Sorted(list) = &ds.files {
        ds.files = Files::Raw(pyobj::encode_json(list.as_any())?);
    }
    for (_, part) in ds.extras.iter_mut() {
        encode_part(part, false)?;
    }
    Ok(())
}

/// Steps 1 and 2 for a whole chunk.
fn prepare<'py>(chunk: &Bound<'py, PyAny>) -> PyResult<Vec<Dataset<'py>>> {
    let sorted = pyobj::sorted(&chunk.call_method0(pyo3::intern!(chunk.py(), "items"))?)?;
    let mut datasets = Vec::with_capacity(sorted.len());
    for item in sorted.iter() {
        let (name, data) = pyobj::unpack2(&item)?;
        datasets.push(check_dataset(name, &data)?);
    }
    for ds in datasets.iter_mut() {
        encode_dataset(ds)?;
    }
    Ok(datasets)
}

/// Owners of every `str` whose UTF-8 the plan borrows, plus the plan's shape with indices in
/// place of borrows. Keeping strong references makes the borrowed bytes outlive any mutation of
/// the fileset by another thread while the GIL is released.
#[derive(Default)]
pub struct Holder<'py> {
    strs: Vec<Bound<'py, PyString>>,
    shape: Vec<Shape>,
}

enum Shape {
    Lit(&'static str),
    Raw(Vec<u8>),
    Str(u32),
    Files {
        first: u32,
        values: Vec<u32>,
        value_of: Vec<u32>,
    },
}

fn changed() -> PyErr {
    PyRuntimeError::new_err(
        "the fileset changed while it was being hashed; do not modify a fileset from another \
         thread during hash_fileset",
    )
}

impl<'py> Holder<'py> {
    fn push_str(&mut self, s: Bound<'py, PyString>) -> u32 {
        self.strs.push(s);
        (self.strs.len() - 1) as u32
    }

    fn part(&mut self, part: &Part<'py>) -> PyResult<()> {
        match part {
            Part::Str(s) => match s.to_str() {
                Ok(_) => {
                    let i = self.push_str(s.clone());
                    self.shape.push(Shape::Str(i));
                }
                // Lone surrogates have no UTF-8 form: let Python's encoder escape them.
                Err(_) => self.shape.push(Shape::Raw(pyobj::encode_json(s.as_any())?)),
            },
            Part::Raw(b) => self.shape.push(Shape::Raw(b.clone())),
            Part::Obj(_) => unreachable!("parts are encoded before they are gathered"),
        }
        Ok(())
    }

    /// Gather the paths (and distinct tree names) of a plain files container. Returns false,
    /// having gathered nothing, when a string has no UTF-8 form (a lone surrogate).
    fn fast_files(
        &mut self,
        pairs: impl Iterator<Item = PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>>,
    ) -> PyResult<bool> {
        let first = self.strs.len();
        let mut value_objs: Vec<Bound<'py, PyString>> = Vec::new();
        let mut value_of: Vec<u32> = Vec::new();
        for pair in pairs {
            let (path, value) = pair?;
            let path = path.cast_into_exact::<PyString>().map_err(|_| changed())?;
            if path.to_str().is_err() {
                self.strs.truncate(first);
                return Ok(false);
            }
            self.strs.push(path);
            let v = match value {
                Some(v) if !v.is_none() => {
                    let v = v.cast_into_exact::<PyString>().map_err(|_| changed())?;
                    let Ok(text) = v.to_str() else {
                        self.strs.truncate(first);
                        return Ok(false);
                    };
                    // Tree names repeat, often as distinct but equal objects: keep one of each.
                    let known = value_objs
                        .iter()
                        .position(|o| o.is(&v) || o.to_str().is_ok_and(|t| t == text));
                    match known {
                        Some(pos) => pos as u32,
                        None => {
                            value_objs.push(v);
                            (value_objs.len() - 1) as u32
                        }
                    }
                }
                _ => NULL_VALUE,
            };
            value_of.push(v);
        }
        let base = self.strs.len() as u32;
        let values = (base..base + value_objs.len() as u32).collect();
        self.strs.extend(value_objs);
        self.shape.push(Shape::Files {
            first: first as u32,
            values,
            value_of,
        });
        Ok(true)
    }

    fn files(&mut self, files: &Files<'py>) -> PyResult<()> {
        let ok = match files {
            Files::FastDict(d) => {
                // No Python code runs while we walk the dict, so it cannot change under us.
                self.fast_files(d.iter().map(|(k, v)| Ok((k, Some(v)))))?
            }
            Files::FastSeq(seq) => {
                let it = seq.try_iter()?;
                self.fast_files(it.map(|p| p.map(|p| (p, None))))?
            }
            Files::Raw(b) => {
                self.shape.push(Shape::Raw(b.clone()));
                true
            }
            Files::Sorted(_) => unreachable!("sorted files are encoded before they are gathered"),
        };
        if !ok {
            // Rare: a path or tree name with a lone surrogate. Python sorts and encodes it.
            let list = match files {
                Files::FastDict(d) => pyobj::sorted(&d.items().into_any())?,
                Files::FastSeq(seq) => {
                    let py = seq.py();
                    let pairs = PyList::empty(py);
                    for p in pyobj::sorted(seq)?.iter() {
                        pairs.append((p, py.None()))?;
                    }
                    pairs
                }
                _ => unreachable!(),
            };
            self.shape
                .push(Shape::Raw(pyobj::encode_json(list.as_any())?));
        }
        Ok(())
    }

    fn dataset(&mut self, ds: &Dataset<'py>, first: bool) -> PyResult<()> {
        if !first {
            self.shape.push(Shape::Lit(","));
        }
        self.part(&ds.key)?;
        self.shape.push(Shape::Lit(":{\"files\":"));
        self.files(&ds.files)?;
        for (lit, part) in &ds.extras {
            self.shape.push(Shape::Lit(lit));
            self.part(part)?;
        }
        self.shape.push(Shape::Lit("}"));
        Ok(())
    }

    /// The plan, borrowing the held strings.
    pub fn plan(&self) -> PyResult<ChunkPlan<'_>> {
        let s = |i: usize| self.strs[i].to_str();
        let mut plan = ChunkPlan::default();
        for shape in &self.shape {
            match shape {
                Shape::Lit(s) => plan.lit(s),
                Shape::Raw(b) => plan.raw(b.clone()),
                Shape::Str(i) => plan.string(s(*i as usize)?),
                Shape::Files {
                    first,
                    values,
                    value_of,
                } => {
                    let first = *first as usize;
                    plan.files(FastFiles {
                        entries: value_of
                            .iter()
                            .enumerate()
                            .map(|(j, &v)| {
                                Ok(FileEntry {
                                    path: s(first + j)?,
                                    value: v,
                                })
                            })
                            .collect::<PyResult<_>>()?,
                        values: values
                            .iter()
                            .map(|&i| s(i as usize))
                            .collect::<PyResult<_>>()?,
                    });
                }
            }
        }
        Ok(plan)
    }
}

/// Gather a whole chunk into one holder (for hashing many small chunks in parallel).
pub fn gather<'py>(chunk: &Bound<'py, PyAny>) -> PyResult<Holder<'py>> {
    let datasets = prepare(chunk)?;
    let mut holder = Holder::default();
    holder.shape.push(Shape::Lit("{"));
    for (i, ds) in datasets.iter().enumerate() {
        holder.dataset(ds, i == 0)?;
    }
    holder.shape.push(Shape::Lit("}"));
    Ok(holder)
}

/// Hash one chunk, streaming it dataset by dataset so that memory stays at one dataset's paths,
/// with the GIL released while each dataset is sorted and hashed.
pub fn hash_one(chunk: &Bound<'_, PyAny>) -> PyResult<[u8; 32]> {
    let py = chunk.py();
    let datasets = prepare(chunk)?;
    let mut sink = HashSink::new();
    sink.bytes(b"{");
    for (i, ds) in datasets.iter().enumerate() {
        let mut holder = Holder::default();
        holder.dataset(ds, i == 0)?;
        let mut plan = holder.plan()?;
        if plan.n_entries() >= DETACH_AT {
            py.detach(|| write_plan(&mut sink, &mut plan));
        } else {
            write_plan(&mut sink, &mut plan);
        }
    }
    sink.bytes(b"}");
    Ok(sink.finish())
}

/// Below this many files, releasing and re-taking the GIL costs more than it gives.
const DETACH_AT: usize = 256;

impl Holder<'_> {
    /// How many file entries this holder gathered.
    pub fn n_files(&self) -> usize {
        self.shape
            .iter()
            .map(|s| match s {
                Shape::Files { value_of, .. } => value_of.len(),
                _ => 0,
            })
            .sum()
    }
}
