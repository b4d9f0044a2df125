//! `split_fileset`: coffea's splitting of a fileset into independent chunks, with the same output
//! and errors, plus `files_per_chunk`.
//!
//! Dataset-level steps use Python's own protocols (they run once per dataset). File-level work,
//! sorting each dataset's paths and slicing them into bins, is done once per dataset in Rust,
//! sorting all datasets in parallel with the GIL released, and the output reuses the original
//! key and value objects.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyMapping, PySequence, PyString, PyTuple};
use rayon::prelude::*;

use crate::errors;
use crate::prefetch::{prefetch_object, AHEAD};
use crate::pyobj;
use crate::sort::sorted_order;

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
fn positive_int(name: &str, n: &Bound<'_, PyAny>, max: u128) -> PyResult<u128> {
    if !n.is_instance_of::<PyInt>() || n.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, not {}",
            pyobj::type_name(n)
        )));
    }
    // Any size beyond `max` is as good as `max`.
    let value = match n.extract::<u128>() {
        Ok(v) => v.min(max),
        Err(_) if n.gt(0)? => max,
        Err(_) => 0,
    };
    if value == 0 {
        return Err(PyValueError::new_err(format!(
            "{name}={} is not allowed: it must be at least 1",
            pyobj::short_repr(n)
        )));
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
        (Some(_), Some(_), _) => Err(PyValueError::new_err(
            "pass either percentage or files_per_chunk, not both",
        )),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => Err(PyValueError::new_err(
            "events_per_chunk cannot be combined with percentage or files_per_chunk: pass one \
             of the three",
        )),
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
                _ => Err(errors::bad_percentage(p.py())),
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
                return Err(errors::split_list_dataset_needs_treename(&name));
            };
            let d = PyDict::new(py);
            d.set_item("files", data.cast::<PySequence>()?.to_list()?)?;
            d.set_item("treename", t)?;
            d.into_any()
        } else if data.is_instance_of::<PyDict>() {
            let files = pyobj::get_files(&data)?;
            if pyobj::is_list_or_tuple(&files) && !data.contains("treename")? {
                let Some(t) = treename else {
                    return Err(errors::split_list_files_need_treename(&name));
                };
                let d = PyDict::new(py);
                d.update(data.cast::<PyMapping>()?)?;
                d.set_item("treename", t)?;
                d.into_any()
            } else {
                data
            }
        } else {
            return Err(errors::split_dataset_type(&name, &data));
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

/// A dataset's files in sorted order, in the container shape they came in.
enum Sorted<'py> {
    /// `(path, value)` pairs of an exact dict with `str` paths, with the sort permutation.
    Pairs(Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>, Vec<u32>),
    /// Paths of an exact list or tuple of `str`, with the sort permutation.
    Paths(Vec<Bound<'py, PyAny>>, Vec<u32>),
    /// Sorted by Python itself (rare keys): the sorted items or paths, and whether it is a dict.
    Python(Bound<'py, PyList>, bool),
}

impl Sorted<'_> {
    fn len(&self) -> usize {
        match self {
            Sorted::Pairs(v, _) => v.len(),
            Sorted::Paths(v, _) => v.len(),
            Sorted::Python(l, _) => l.len(),
        }
    }
}

/// Files gathered for sorting: the objects, and whether a fast byte sort may apply.
enum Gathered<'py> {
    /// An exact dict whose keys are all exact `str`, and the dict.
    Pairs(
        Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
        Bound<'py, PyAny>,
    ),
    /// An exact list or tuple of exact `str`, and the container.
    Paths(Vec<Bound<'py, PyAny>>, Bound<'py, PyAny>),
    Python(Bound<'py, PyList>, bool),
}

fn gather<'py>(data: &Bound<'py, PyAny>) -> PyResult<Gathered<'py>> {
    let files = pyobj::get_files(data)?;
    if let Ok(d) = files.cast_exact::<PyDict>() {
        let mut pairs = Vec::with_capacity(d.len());
        let mut plain = true;
        // No Python code runs in this loop, so (with the GIL held) the dict cannot change while
        // we walk it; `DictItems` turns a change into a RuntimeError all the same.
        for item in pyobj::DictItems::new(d) {
            let (k, v) = item?;
            plain &= k.is_exact_instance_of::<PyString>();
            pairs.push((k, v));
        }
        if plain {
            return Ok(Gathered::Pairs(pairs, files));
        }
    }
    if files.is_instance_of::<PyDict>() {
        return Ok(Gathered::Python(
            pyobj::sorted(&files.call_method0("items")?)?,
            true,
        ));
    }
    if files.is_exact_instance_of::<PyList>() || files.is_exact_instance_of::<PyTuple>() {
        let paths: Vec<_> = files.try_iter()?.collect::<PyResult<_>>()?;
        if paths.iter().all(|p| p.is_exact_instance_of::<PyString>()) {
            return Ok(Gathered::Paths(paths, files));
        }
    }
    if pyobj::is_list_or_tuple(&files) {
        return Ok(Gathered::Python(pyobj::sorted(&files)?, false));
    }
    Err(errors::split_files_type(&files))
}

/// The UTF-8 bytes of every path, or `None` if one has no UTF-8 form (a lone surrogate).
fn utf8_keys<'a, 'py: 'a>(
    objs: impl Iterator<Item = &'a Bound<'py, PyAny>>,
) -> Option<Vec<&'a [u8]>> {
    objs.map(|o| {
        o.cast_exact::<PyString>()
            .ok()
            .and_then(|s| s.to_str().ok())
            .map(str::as_bytes)
    })
    .collect()
}

/// Sort every dataset's files, all datasets in parallel with the GIL released.
fn sort_all<'py>(py: Python<'py>, gathered: Vec<Gathered<'py>>) -> PyResult<Vec<Sorted<'py>>> {
    let keys: Vec<Option<Vec<&[u8]>>> = gathered
        .iter()
        .map(|g| match g {
            Gathered::Pairs(p, _) => utf8_keys(p.iter().map(|(k, _)| k)),
            Gathered::Paths(p, _) => utf8_keys(p.iter()),
            Gathered::Python(..) => None,
        })
        .collect();
    let orders: Vec<Option<Vec<u32>>> = py.detach(|| {
        keys.par_iter()
            .map(|k| k.as_deref().map(sorted_order))
            .collect()
    });
    drop(keys);
    gathered
        .into_iter()
        .zip(orders)
        .map(|(g, order)| {
            Ok(match (g, order) {
                (Gathered::Pairs(p, _), Some(order)) => Sorted::Pairs(p, order),
                (Gathered::Paths(p, _), Some(order)) => Sorted::Paths(p, order),
                // A path with a lone surrogate: Python sorts by code point.
                (Gathered::Pairs(_, files), None) => {
                    Sorted::Python(pyobj::sorted(&files.call_method0("items")?)?, true)
                }
                (Gathered::Paths(_, files), None) => Sorted::Python(pyobj::sorted(&files)?, false),
                (Gathered::Python(l, is_dict), _) => Sorted::Python(l, is_dict),
            })
        })
        .collect()
}

/// A dataset entry for one bin: a copy of `data` whose `files` holds `[start, end)`.
fn rebuild<'py>(
    data: &Bound<'py, PyAny>,
    files: &Sorted<'py>,
    start: usize,
    end: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let py = data.py();
    let new = PyDict::new(py);
    new.update(data.cast::<PyMapping>()?)?;
    let sliced = match files {
        Sorted::Pairs(pairs, order) => {
            let d = PyDict::new(py);
            let order = &order[start..end];
            for (j, &i) in order.iter().enumerate() {
                // Inserting reads each key's cached hash and takes a reference to each value;
                // both are scattered in memory (values are dicts in a preprocessed fileset).
                if let Some(&ahead) = order.get(j + AHEAD) {
                    let (k, v) = &pairs[ahead as usize];
                    prefetch_object(k);
                    prefetch_object(v);
                }
                let (k, v) = &pairs[i as usize];
                d.set_item(k, v)?;
            }
            d.into_any()
        }
        Sorted::Paths(paths, order) => {
            PyList::new(py, order[start..end].iter().map(|&i| &paths[i as usize]))?.into_any()
        }
        Sorted::Python(list, true) => py
            .get_type::<PyDict>()
            .call1((list.get_slice(start, end),))?,
        Sorted::Python(list, false) => list.get_slice(start, end).into_any(),
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
    files: &Sorted<'_>,
    limit: u128,
) -> PyResult<Vec<(usize, usize)>> {
    let missing = |path: &Bound<'_, PyAny>| Err(errors::no_num_entries(path, name));
    let counts: Vec<u128> = match files {
        Sorted::Pairs(pairs, order) => {
            // Read in the dict's order (the value dicts were usually allocated in that order,
            // so this walks memory forwards), then look the counts up in sorted order.
            let by_position = pairs
                .iter()
                .map(|(_, v)| num_entries(v))
                .collect::<PyResult<Vec<_>>>()?;
            let mut counts = Vec::with_capacity(order.len());
            for &i in order {
                match by_position[i as usize] {
                    Some(c) => counts.push(c),
                    None => return missing(&pairs[i as usize].0),
                }
            }
            counts
        }
        Sorted::Paths(paths, order) => match order.first() {
            Some(&i) => return missing(&paths[i as usize]),
            None => Vec::new(),
        },
        Sorted::Python(list, true) => {
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
        Sorted::Python(list, false) => match list.iter().next() {
            Some(path) => return missing(&path),
            None => Vec::new(),
        },
    };
    Ok(pack_events(counts, limit))
}

/// Split a fileset into chunks; see the Python docstring in `chunkwise/_core.pyi`.
#[pyfunction]
#[pyo3(signature = (fileset, strategy=None, datasets=None, percentage=None, treename=None, *, files_per_chunk=None, events_per_chunk=None))]
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
) -> PyResult<Bound<'py, PyList>> {
    let by_dataset = match strategy {
        None => false,
        Some(s) => {
            if s.ne("by_dataset")? {
                return Err(errors::unknown_strategy(s));
            }
            true
        }
    };
    let cut = parse_cut(percentage, files_per_chunk, events_per_chunk)?;
    let selected = select(fileset, datasets)?;
    let normalized = normalize(&selected, treename)?;

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
    let sorted = sort_all(py, gathered)?;

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
