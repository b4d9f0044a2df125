//! `split_fileset`: coffea's splitting of a fileset into independent chunks, with the same output
//! and errors, plus `files_per_chunk`, `events_per_chunk` and `stable` (whose rule is in
//! [`crate::stable`]).
//!
//! Dataset-level steps use Python's own protocols (they run once per dataset). File-level work,
//! sorting each dataset's paths and slicing them into bins, is done once per dataset in Rust,
//! sorting all datasets in parallel with the GIL released, and the output reuses the original
//! key and value objects.

use std::sync::mpsc;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyMapping, PySequence, PyString};

use crate::errors::{Error, Op};
use crate::fileset::{self, Files, Shape};
use crate::prefetch::{prefetch_object, AHEAD};
use crate::pyobj;
use crate::sort::sorted_order;
use crate::stable::{self, Rule};
use crate::threads;

/// How chunks are cut from a dataset's sorted files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binning {
    /// `100 / percentage` bins; each dataset's bin size is `ceil(n / bins)` (at least 1).
    Bins(usize),
    /// Bins of at most this many files of each dataset.
    FilesPerChunk(usize),
}

impl Binning {
    /// Files per bin for a dataset of `n` files.
    pub fn size(self, n: usize) -> usize {
        match self {
            Binning::Bins(k) => n.div_ceil(k).max(1),
            Binning::FilesPerChunk(m) => m,
        }
    }

    /// How many bins a group whose datasets have these file counts is cut into.
    pub fn count(self, sizes: impl Iterator<Item = usize>) -> usize {
        match self {
            Binning::Bins(k) => k,
            Binning::FilesPerChunk(m) => sizes.map(|n| n.div_ceil(m)).max().unwrap_or(0),
        }
    }

    /// The `[start, end)` range of bin `b` in a dataset of `n` files, if not empty.
    pub fn range(self, b: usize, n: usize) -> Option<(usize, usize)> {
        let size = self.size(n);
        let start = b.checked_mul(size)?;
        (start < n).then(|| (start, (start + size).min(n)))
    }
}

/// How chunks are cut: by counting files, or by packing files up to a number of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cut {
    Files(Binning),
    /// At most this many events a bin (see [`pack_events`]).
    Events(u128),
}

/// A positive int argument (`files_per_chunk`, `events_per_chunk`), saturated at `max`.
fn positive_int(name: &'static str, n: &Bound<'_, PyAny>, max: u128) -> PyResult<u128> {
    if !n.is_instance_of::<PyInt>() || n.is_instance_of::<pyo3::types::PyBool>() {
        return Err(Error::NotAnInt(name, n).into());
    }
    // Any size beyond `max` is as good as `max`.
    let value = match n.extract::<u128>() {
        Ok(v) => v.min(max),
        Err(_) if n.gt(0)? => max,
        Err(_) => 0,
    };
    if value == 0 {
        return Err(Error::NotPositive(name, n).into());
    }
    Ok(value)
}

/// `events_per_chunk` larger than this behaves as this (2^120 events: more than any fileset).
pub const MAX_EVENTS: u128 = 1 << 120;

fn parse_cut(
    percentage: Option<&Bound<'_, PyAny>>,
    files_per_chunk: Option<&Bound<'_, PyAny>>,
    events_per_chunk: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Cut>> {
    match (percentage, files_per_chunk, events_per_chunk) {
        (Some(_), Some(_), _) => Err(Error::PercentageAndFilesPerChunk.into()),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => Err(Error::EventsCombined.into()),
        (Some(p), None, None) => {
            let value = if p.is_instance_of::<PyInt>() {
                p.extract::<i64>().ok()
            } else {
                None
            };
            match value {
                Some(v) if (1..=100).contains(&v) && 100 % v == 0 => {
                    Ok(Some(Cut::Files(Binning::Bins((100 / v) as usize))))
                }
                _ => Err(Error::BadPercentage(p.py()).into()),
            }
        }
        (None, Some(n), None) => {
            let size = positive_int("files_per_chunk", n, usize::MAX as u128)?;
            Ok(Some(Cut::Files(Binning::FilesPerChunk(size as usize))))
        }
        (None, None, Some(n)) => Ok(Some(Cut::Events(positive_int(
            "events_per_chunk",
            n,
            MAX_EVENTS,
        )?))),
        (None, None, None) => Ok(None),
    }
}

/// Greedy packing of files (in sorted order) into bins of at most `limit` events: a file joins
/// the current bin unless that would take the bin past `limit`; a bin always takes at least one
/// file, so a file larger than `limit` stands alone. Returns the `[start, end)` ranges.
///
/// Each count is clamped to `limit + 1` (a file larger than `limit` behaves the same whatever
/// its size), so with `limit <= 2^120` the sums cannot overflow.
pub fn pack_events(entries: impl IntoIterator<Item = u128>, limit: u128) -> Vec<(usize, usize)> {
    let mut bins = Vec::new();
    let (mut start, mut sum, mut n) = (0usize, 0u128, 0usize);
    for (i, e) in entries.into_iter().enumerate() {
        let e = e.min(limit + 1);
        if i > start && sum + e > limit {
            bins.push((start, i));
            start = i;
            sum = 0;
        }
        sum += e;
        n = i + 1;
    }
    if n > start {
        bins.push((start, n));
    }
    bins
}

/// Keep the datasets that `datasets` selects, in the order it gives them.
fn select<'py>(
    fileset: &Bound<'py, PyAny>,
    datasets: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = fileset.py();
    let Some(sel) = datasets else {
        return Ok(fileset.clone());
    };
    let out = PyDict::new(py);
    if sel.is_callable() {
        for (k, v) in pyobj::items(fileset)? {
            if sel.call1((&k,))?.is_truthy()? {
                out.set_item(k, v)?;
            }
        }
    } else {
        for k in sel.try_iter()? {
            let k = k?;
            if fileset.contains(&k)? {
                let v = fileset.get_item(&k)?;
                out.set_item(k, v)?;
            }
        }
    }
    Ok(out.into_any())
}

/// Make every dataset a dict that names its tree, folding `treename` into list-form datasets.
fn normalize<'py>(
    fileset: &Bound<'py, PyAny>,
    treename: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let py = fileset.py();

    let out = PyDict::new(py);
    for (name, data) in pyobj::items(fileset)? {
        let value = if pyobj::is_list_or_tuple(&data) {
            let Some(t) = treename else {
                return Err(Error::ListDatasetNeedsTreename(&name).into());
            };
            let d = PyDict::new(py);
            d.set_item("files", data.cast::<PySequence>()?.to_list()?)?;
            d.set_item("treename", t)?;
            d.into_any()
        } else if data.is_instance_of::<PyDict>() {
            let files = pyobj::get_files(&data)?;
            if pyobj::is_list_or_tuple(&files) && !data.contains("treename")? {
                let Some(t) = treename else {
                    return Err(Error::ListFilesNeedTreename(Op::Split, &name).into());
                };
                let d = PyDict::new(py);
                d.update(data.cast::<PyMapping>()?)?;
                d.set_item("treename", t)?;
                d.into_any()
            } else {
                data
            }
        } else {
            return Err(Error::DatasetType(Op::Split, &name, &data).into());
        };
        out.set_item(name, value)?;
    }
    // Read back from the dict, so that a mapping whose items() repeats a name counts it once,
    // at its first position with its last value, as a dict display does.
    out.items()
        .iter()
        .map(|item| pyobj::unpack2(&item))
        .collect()
}

/// A dataset's files read by [`fileset::read`]: each path (an exact `str`) and its value
/// (`None` for a list of paths).
type Kept<'py> = Vec<(Bound<'py, PyString>, Option<Bound<'py, PyAny>>)>;

/// A dataset's files in sorted order, in the container shape they came in.
enum Sorted<'a, 'py> {
    /// Read fast (borrowed from what [`gather`] read), with the sort permutation.
    Fast(&'a Kept<'py>, Vec<u32>, Shape),
    /// Sorted by Python itself (rare paths): the sorted items or paths.
    Python(Bound<'py, PyList>, Shape),
}

impl Sorted<'_, '_> {
    fn len(&self) -> usize {
        match self {
            Sorted::Fast(v, _, _) => v.len(),
            Sorted::Python(l, _) => l.len(),
        }
    }
}

/// What [`gather`] read of one dataset.
type Gathered<'py> = (Files<'py, Kept<'py>>, Bound<'py, PyAny>);

/// A dataset's files, read for sorting, and the container they came from.
fn gather<'py>(data: &Bound<'py, PyAny>) -> PyResult<(Files<'py, Kept<'py>>, Bound<'py, PyAny>)> {
    let files = pyobj::get_files(data)?;
    Ok((
        fileset::read(Op::Split, &files, fileset::Keep::with_capacity)?,
        files,
    ))
}

/// The UTF-8 bytes of every path, or `None` if one has no UTF-8 form (a lone surrogate).
fn utf8_keys<'a>(kept: &'a Kept<'_>) -> Option<Vec<&'a [u8]>> {
    kept.iter()
        .map(|(p, _)| fileset::utf8(p).map(str::as_bytes))
        .collect()
}

/// The UTF-8 paths of every dataset read fast, for sorting (and hashing); `None` for a
/// dataset that Python must sort.
fn all_keys<'a>(gathered: &'a [Gathered<'_>]) -> Vec<Option<Vec<&'a [u8]>>> {
    gathered
        .iter()
        .map(|(g, _)| match g {
            Files::Fast(kept, _) => utf8_keys(kept),
            Files::Python(..) => None,
        })
        .collect()
}

/// One dataset's files in sorted order: by `order`, the permutation that sorts its `keys`, or,
/// without one, by Python.
fn sorted_of<'a, 'py>(
    (g, files): &'a Gathered<'py>,
    order: Option<Vec<u32>>,
) -> PyResult<Sorted<'a, 'py>> {
    Ok(match (g, order) {
        (Files::Fast(kept, shape), Some(order)) => Sorted::Fast(kept, order, *shape),
        // A path with a lone surrogate: Python sorts by code point.
        (Files::Fast(..), None) => {
            let (sorted, shape) = fileset::python(Op::Split, files)?;
            Sorted::Python(sorted, shape)
        }
        (Files::Python(l, shape), _) => Sorted::Python(l.clone(), *shape),
    })
}

/// Sort every dataset's files, all datasets in parallel with the GIL released.
fn sort_all<'a, 'py>(
    py: Python<'py>,
    gathered: &'a [Gathered<'py>],
) -> PyResult<Vec<Sorted<'a, 'py>>> {
    let keys = all_keys(gathered);
    let orders = threads::par_map(py, &keys, |k| k.as_deref().map(sorted_order));
    drop(keys);
    gathered
        .iter()
        .zip(orders)
        .map(|(g, order)| sorted_of(g, order))
        .collect()
}

/// A `str`'s UTF-8 bytes; a lone surrogate (which only a Python `str` can hold) is written as
/// its three-byte form, as `s.encode("utf-8", "surrogatepass")` writes it. Overridden methods
/// of a `str` subclass are not called.
fn utf8_surrogatepass(s: &Bound<'_, PyString>) -> PyResult<Vec<u8>> {
    if let Ok(text) = s.to_str() {
        return Ok(text.as_bytes().to_vec());
    }
    let py = s.py();
    let encoded = py
        .get_type::<PyString>()
        .call_method1(pyo3::intern!(py, "encode"), (s, "utf-8", "surrogatepass"))?;
    Ok(encoded.cast::<PyBytes>()?.as_bytes().to_vec())
}

/// The boundary hashes of a dataset that Python sorted, in its sorted order; a path that is not
/// a `str` raises.
fn python_hashes(
    name: &Bound<'_, PyAny>,
    dataset: &[u8],
    files: &Sorted<'_, '_>,
) -> PyResult<Vec<u64>> {
    let (list, shape) = match files {
        Sorted::Python(list, shape) => (list, *shape),
        // Hashed by `stable_split`'s worker; never asked for.
        Sorted::Fast(..) => return Ok(Vec::new()),
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list.iter() {
        let path = match shape {
            Shape::Dict => pyobj::unpack2(&item)?.0,
            Shape::List => item,
        };
        let Ok(text) = path.cast::<PyString>() else {
            return Err(Error::StablePath(&path, name).into());
        };
        out.push(stable::boundary_hash(dataset, &utf8_surrogatepass(text)?));
    }
    Ok(out)
}

/// A dataset entry for one bin: a copy of `data` whose `files` holds `[start, end)`.
fn rebuild<'py>(
    data: &Bound<'py, PyAny>,
    files: &Sorted<'_, 'py>,
    start: usize,
    end: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let py = data.py();
    let new = PyDict::new(py);
    new.update(data.cast::<PyMapping>()?)?;
    let sliced = match files {
        Sorted::Fast(pairs, order, Shape::Dict) => {
            let d = PyDict::new(py);
            let order = &order[start..end];
            for (j, &i) in order.iter().enumerate() {
                // Inserting reads each key's cached hash and takes a reference to each value;
                // both are scattered in memory (values are dicts in a preprocessed fileset).
                if let Some(&ahead) = order.get(j + AHEAD) {
                    let (k, v) = &pairs[ahead as usize];
                    prefetch_object(k);
                    if let Some(v) = v {
                        prefetch_object(v);
                    }
                }
                let (k, v) = &pairs[i as usize];
                match v {
                    Some(v) => d.set_item(k, v)?,
                    None => d.set_item(k, py.None())?,
                }
            }
            d.into_any()
        }
        Sorted::Fast(paths, order, Shape::List) => {
            PyList::new(py, order[start..end].iter().map(|&i| &paths[i as usize].0))?.into_any()
        }
        Sorted::Python(list, Shape::Dict) => py
            .get_type::<PyDict>()
            .call1((list.get_slice(start, end),))?,
        Sorted::Python(list, Shape::List) => list.get_slice(start, end).into_any(),
    };
    new.set_item("files", sliced)?;
    Ok(new)
}

/// A file's `num_entries`, if it has a usable one: its value is a dict (read as `dict.get`
/// reads it) whose `num_entries` is an int, not a bool, and not negative.
fn num_entries(value: &Bound<'_, PyAny>) -> PyResult<Option<u128>> {
    let Ok(d) = value.cast::<PyDict>() else {
        return Ok(None);
    };
    let Some(n) = d.get_item(pyo3::intern!(value.py(), "num_entries"))? else {
        return Ok(None);
    };
    if !n.is_instance_of::<PyInt>() || n.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(None);
    }
    if let Ok(v) = n.extract::<u64>() {
        return Ok(Some(u128::from(v)));
    }
    // Rare: beyond 64 bits, or negative.
    match n.extract::<u128>() {
        Ok(v) => Ok(Some(v)),
        Err(_) if n.gt(0)? => Ok(Some(u128::MAX)),
        Err(_) => Ok(None),
    }
}

/// The `events_per_chunk` bins of one dataset, or the error naming its first file (in sorted
/// order) without a usable `num_entries`.
fn event_bins(
    name: &Bound<'_, PyAny>,
    files: &Sorted<'_, '_>,
    limit: u128,
) -> PyResult<Vec<(usize, usize)>> {
    Ok(pack_events(event_counts(name, files)?, limit))
}

/// Every file's `num_entries` (saturated at `u128::MAX`), in sorted order, or the error naming
/// the first file without a usable one.
fn event_counts(name: &Bound<'_, PyAny>, files: &Sorted<'_, '_>) -> PyResult<Vec<u128>> {
    let missing = |path: &Bound<'_, PyAny>| Err(Error::NoNumEntries(path, name).into());
    let counts: Vec<u128> = match files {
        Sorted::Fast(pairs, order, Shape::Dict) => {
            // Read in the dict's order (the value dicts were usually allocated in that order,
            // so this walks memory forwards), then look the counts up in sorted order.
            let by_position = pairs
                .iter()
                .map(|(_, v)| v.as_ref().map_or(Ok(None), num_entries))
                .collect::<PyResult<Vec<_>>>()?;
            let mut counts = Vec::with_capacity(order.len());
            for &i in order {
                match by_position[i as usize] {
                    Some(c) => counts.push(c),
                    None => return missing(pairs[i as usize].0.as_any()),
                }
            }
            counts
        }
        Sorted::Fast(paths, order, Shape::List) => match order.first() {
            Some(&i) => return missing(paths[i as usize].0.as_any()),
            None => Vec::new(),
        },
        Sorted::Python(list, Shape::Dict) => {
            let mut counts = Vec::with_capacity(list.len());
            for item in list.iter() {
                let (path, value) = pyobj::unpack2(&item)?;
                match num_entries(&value)? {
                    Some(c) => counts.push(c),
                    None => return missing(&path),
                }
            }
            counts
        }
        Sorted::Python(list, Shape::List) => match list.iter().next() {
            Some(path) => return missing(&path),
            None => Vec::new(),
        },
    };
    Ok(counts)
}

/// Below this many files, `stable_split` hashes them on the calling thread.
const INLINE_HASHING: usize = 4096;

/// `stable=True`: each dataset's chunks, cut by [`stable::Rule`] (files, or events with
/// `events`), one dataset to a chunk, datasets in order.
///
/// Hashing the paths is the one cost positional splitting does not have, so it is hidden
/// behind the rest: one worker thread hashes the datasets read fast, in order, while this
/// thread sorts them (on rayon's pool, with the GIL released) and then builds each dataset's
/// chunks (with the GIL) as soon as its hashes are in. One worker, not rayon's pool: building
/// the chunks holds the GIL on one core, and hashing on more than the other would slow it down.
///
/// The worker reads the paths' UTF-8 bytes while this thread holds the GIL and may run Python
/// code (a key's `__eq__` while a dict is built, say). That is sound because those bytes belong
/// to exact `str` objects, which never change, and `gathered` holds a reference to each of them
/// until the worker is joined; their UTF-8 form was made by [`all_keys`] before it started.
fn stable_split<'py>(
    py: Python<'py>,
    normalized: &[(Bound<'py, PyAny>, Bound<'py, PyAny>)],
    size: u128,
    events: bool,
) -> PyResult<Bound<'py, PyList>> {
    let names = normalized
        .iter()
        .map(|(name, _)| match name.cast::<PyString>() {
            Ok(text) => utf8_surrogatepass(text),
            Err(_) => Err(Error::StableName(name).into()),
        })
        .collect::<PyResult<Vec<_>>>()?;
    let gathered = normalized
        .iter()
        .map(|(_, data)| gather(data))
        .collect::<PyResult<Vec<_>>>()?;
    let keys = all_keys(&gathered);
    let rule = Rule::new(size);
    // A small fileset is hashed here, first: a thread costs more than its hashing.
    let inline = keys.iter().flatten().map(Vec::len).sum::<usize>() < INLINE_HASHING;
    std::thread::scope(|scope| {
        let (sender, mut receiver) = mpsc::channel::<Option<Vec<u64>>>();
        let (keys, names) = (&keys, &names);
        let hash_all = move || {
            for (k, name) in keys.iter().zip(names) {
                let hashes = k.as_deref().map(|k| stable::hashes(name, k));
                // Closed: this thread stopped at an error; nothing more is needed.
                if sender.send(hashes).is_err() {
                    break;
                }
            }
        };
        let worker = if inline {
            hash_all();
            None
        } else {
            Some(scope.spawn(hash_all))
        };
        let built = (|| -> PyResult<Bound<'py, PyList>> {
            let orders = threads::par_map(py, keys, |k| k.as_deref().map(sorted_order));
            let out = PyList::empty(py);
            let datasets = normalized.iter().zip(&gathered).zip(orders).zip(names);
            for ((((name, data), g), order), dataset) in datasets {
                let (hashes, back) = py.detach(move || (receiver.recv(), receiver));
                receiver = back;
                let hashes = hashes.map_err(|_| PyErr::from(Error::ThreadPanicked))?;
                let files = sorted_of(g, order)?;
                let hashes = match (&files, hashes) {
                    // Hashed in the container's order (which walks the paths' memory forwards):
                    // put them in sorted order.
                    (Sorted::Fast(_, order, _), Some(h)) => {
                        order.iter().map(|&i| h[i as usize]).collect()
                    }
                    _ => python_hashes(name, dataset, &files)?,
                };
                let counts = if events {
                    Some(event_counts(name, &files)?)
                } else {
                    None
                };
                for (start, end) in rule.ranges(&hashes, counts.as_deref()) {
                    let chunk = PyDict::new(py);
                    chunk.set_item(name, rebuild(data, &files, start, end)?)?;
                    out.append(chunk)?;
                }
            }
            Ok(out)
        })();
        // The receiver went with the closure: a worker still sending stops.
        if let Some(worker) = worker {
            py.detach(|| worker.join())
                .map_err(|_| PyErr::from(Error::ThreadPanicked))?;
        }
        built
    })
}

/// Split a fileset into chunks; see the Python docstring in `chunkwise/_core.pyi`.
#[allow(clippy::too_many_arguments)]
pub fn split_fileset<'py>(
    py: Python<'py>,
    fileset: &Bound<'py, PyAny>,
    strategy: Option<&Bound<'py, PyAny>>,
    datasets: Option<&Bound<'py, PyAny>>,
    percentage: Option<&Bound<'py, PyAny>>,
    treename: Option<&Bound<'py, PyAny>>,
    files_per_chunk: Option<&Bound<'py, PyAny>>,
    events_per_chunk: Option<&Bound<'py, PyAny>>,
    stable: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let by_dataset = match strategy {
        None => false,
        Some(s) => {
            if s.ne("by_dataset")? {
                return Err(Error::UnknownStrategy(s).into());
            }
            true
        }
    };
    // Stable chunks never mix datasets: `stable=True` implies strategy="by_dataset".
    let stable = match stable {
        None => false,
        Some(flag) if flag.is_instance_of::<PyBool>() => flag.is_truthy()?,
        Some(flag) => return Err(Error::StableNotBool(flag).into()),
    };
    if stable && percentage.is_some() {
        return Err(Error::StableWithPercentage.into());
    }
    if stable && files_per_chunk.is_none() && events_per_chunk.is_none() {
        return Err(Error::StableNeedsSize.into());
    }
    let cut = parse_cut(percentage, files_per_chunk, events_per_chunk)?;
    let selected = select(fileset, datasets)?;
    let normalized = normalize(&selected, treename)?;
    if stable {
        return match cut {
            Some(Cut::Files(Binning::FilesPerChunk(n))) => {
                stable_split(py, &normalized, n as u128, false)
            }
            Some(Cut::Events(n)) => stable_split(py, &normalized, n, true),
            Some(Cut::Files(Binning::Bins(_))) => Err(Error::StableWithPercentage.into()),
            None => Err(Error::StableNeedsSize.into()),
        };
    }

    let Some(cut) = cut else {
        let out = PyList::empty(py);
        if by_dataset {
            for (name, data) in &normalized {
                let d = PyDict::new(py);
                d.set_item(name, data)?;
                out.append(d)?;
            }
        } else {
            let d = PyDict::new(py);
            for (name, data) in &normalized {
                d.set_item(name, data)?;
            }
            out.append(d)?;
        }
        return Ok(out);
    };

    let gathered = normalized
        .iter()
        .map(|(_, data)| gather(data))
        .collect::<PyResult<Vec<_>>>()?;
    let sorted = sort_all(py, &gathered)?;

    // Each dataset's bins, as `[start, end)` ranges of its sorted files.
    let bins: Vec<Vec<(usize, usize)>> = match cut {
        Cut::Files(binning) => sorted
            .iter()
            .map(|files| {
                let n = files.len();
                (0..binning.count(std::iter::once(n)))
                    .map_while(|b| binning.range(b, n))
                    .collect()
            })
            .collect(),
        Cut::Events(limit) => normalized
            .iter()
            .zip(&sorted)
            .map(|((name, _), files)| event_bins(name, files, limit))
            .collect::<PyResult<_>>()?,
    };

    let groups: Vec<Vec<usize>> = if by_dataset {
        (0..normalized.len()).map(|i| vec![i]).collect()
    } else {
        vec![(0..normalized.len()).collect()]
    };
    let out = PyList::empty(py);
    for group in groups {
        // Bin `b` of the group holds bin `b` of each of its datasets that has one.
        let n_bins = group.iter().map(|&i| bins[i].len()).max().unwrap_or(0);
        for b in 0..n_bins {
            let chunk = PyDict::new(py);
            for &i in &group {
                let (name, data) = &normalized[i];
                if let Some(&(start, end)) = bins[i].get(b) {
                    chunk.set_item(name, rebuild(data, &sorted[i], start, end)?)?;
                }
            }
            if !chunk.is_empty() {
                out.append(chunk)?;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{pack_events, Binning};

    #[test]
    fn events_are_packed_greedily() {
        assert_eq!(pack_events([], 10), vec![]);
        assert_eq!(pack_events([3, 3, 3, 3], 10), vec![(0, 3), (3, 4)]);
        assert_eq!(pack_events([5, 5, 5], 10), vec![(0, 2), (2, 3)]);
        // A file larger than the limit stands alone, wherever it is.
        assert_eq!(pack_events([2, 20, 2, 2], 10), vec![(0, 1), (1, 2), (2, 4)]);
        assert_eq!(pack_events([20], 10), vec![(0, 1)]);
        // Empty files join any bin; a bin of exactly the limit is full.
        assert_eq!(pack_events([0, 10, 0, 1], 10), vec![(0, 3), (3, 4)]);
        // Counts beyond 64 bits (saturated to u128::MAX) cannot overflow the sums.
        assert_eq!(
            pack_events([u128::MAX, u128::MAX, 1], super::MAX_EVENTS),
            vec![(0, 1), (1, 2), (2, 3)]
        );
        assert_eq!(
            pack_events([1 << 100, 1 << 100, 1], super::MAX_EVENTS),
            vec![(0, 3)]
        );
    }

    fn bins(b: Binning, n: usize) -> Vec<(usize, usize)> {
        (0..b.count(std::iter::once(n)))
            .filter_map(|i| b.range(i, n))
            .collect()
    }

    #[test]
    fn percentage_bins() {
        assert_eq!(bins(Binning::Bins(2), 3), vec![(0, 2), (2, 3)]);
        assert_eq!(
            bins(Binning::Bins(5), 10),
            vec![(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
        );
        // Fewer files than bins: one file per bin, trailing bins empty.
        assert_eq!(bins(Binning::Bins(100), 3), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(bins(Binning::Bins(4), 0), vec![]);
        // ceil(11 / 4) = 3: bins of 3, 3, 3, 2.
        assert_eq!(
            bins(Binning::Bins(4), 11),
            vec![(0, 3), (3, 6), (6, 9), (9, 11)]
        );
    }

    #[test]
    fn files_per_chunk_bins() {
        assert_eq!(
            bins(Binning::FilesPerChunk(4), 10),
            vec![(0, 4), (4, 8), (8, 10)]
        );
        assert_eq!(bins(Binning::FilesPerChunk(50), 10), vec![(0, 10)]);
        assert_eq!(bins(Binning::FilesPerChunk(1), 0), vec![]);
        let b = Binning::FilesPerChunk(3);
        assert_eq!(b.count([2, 7, 0].into_iter()), 3);
        assert_eq!(b.range(2, 2), None);
        assert_eq!(b.range(usize::MAX, 5), None);
    }
}
