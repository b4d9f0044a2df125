//! Reading a dataset's `files`: the one place that tells the fast containers from the rest.
//!
//! A dataset's files are a dict `{path: value}` or a list (or tuple) of paths. The common case,
//! an exact `dict` whose keys are exact `str`, or an exact `list` or `tuple` of exact `str`, is
//! walked once, without running Python code, and each file is handed to a [`Reader`] (split
//! keeps the objects; hash borrows the paths' UTF-8 and encodes the values). Anything else
//! (subclasses, non-`str` paths), and any container a reader declines (a lone surrogate, a value
//! only Python can encode), is sorted by Python itself, with Python's comparison rules and
//! errors. A container that is neither raises the caller's version of coffea's message.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::errors::{Error, Op};
use crate::pyobj;

/// What a fast walk hands each file to.
pub trait Reader<'py> {
    type Out;
    /// One file: its path and, for a dict, its value (`None` for a list of paths). Returns
    /// false to decline the container, which Python then sorts.
    fn file(
        &mut self,
        path: Bound<'py, PyString>,
        value: Option<Bound<'py, PyAny>>,
    ) -> PyResult<bool>;
    /// The walk is over: the result, or `None` to decline after all.
    fn finish(self) -> PyResult<Option<Self::Out>>;
}

/// The container a dataset's files came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `{path: value}`.
    Dict,
    /// `[path, ...]` (a list or a tuple).
    List,
}

/// A dataset's files, read.
pub enum Files<'py, T> {
    /// Walked by the reader, which made `T` of them.
    Fast(T, Shape),
    /// Sorted by Python: `sorted(files.items())` for a dict, `sorted(files)` for a list.
    Python(Bound<'py, PyList>, Shape),
}

/// Read `files` (a dataset's `files` value) with `reader`; `start` makes the reader, given the
/// number of files, only for a container that will be walked.
pub fn read<'py, R: Reader<'py>>(
    op: Op,
    files: &Bound<'py, PyAny>,
    start: impl FnOnce(usize) -> R,
) -> PyResult<Files<'py, R::Out>> {
    if let Ok(d) = files.cast_exact::<PyDict>() {
        let mut reader = start(d.len());
        if walk(
            &mut reader,
            pyobj::DictItems::new(d).map(|kv| kv.map(|(k, v)| (k, Some(v)))),
        )? {
            if let Some(out) = reader.finish()? {
                return Ok(Files::Fast(out, Shape::Dict));
            }
        }
    } else if let Ok(l) = files.cast_exact::<PyList>() {
        let mut reader = start(l.len());
        // `PyList`'s iterator reads the list's current length at each step, so a list changed
        // by a finalizer is read safely (it gives a different, not an unsound, answer).
        if walk(&mut reader, l.iter().map(|p| Ok((p, None))))? {
            if let Some(out) = reader.finish()? {
                return Ok(Files::Fast(out, Shape::List));
            }
        }
    } else if let Ok(t) = files.cast_exact::<PyTuple>() {
        let mut reader = start(t.len());
        if walk(&mut reader, t.iter().map(|p| Ok((p, None))))? {
            if let Some(out) = reader.finish()? {
                return Ok(Files::Fast(out, Shape::List));
            }
        }
    }
    let (sorted, shape) = python(op, files)?;
    Ok(Files::Python(sorted, shape))
}

/// Hand every file to `reader`; false if a path is not an exact `str` or the reader declines.
fn walk<'py, R: Reader<'py>>(
    reader: &mut R,
    items: impl Iterator<Item = PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>>,
) -> PyResult<bool> {
    for item in items {
        let (path, value) = item?;
        let Ok(path) = path.cast_into_exact::<PyString>() else {
            return Ok(false);
        };
        if !reader.file(path, value)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The files sorted by Python (`sorted(files.items())` or `sorted(files)`), or coffea's error
/// for a container that is neither kind.
pub fn python<'py>(op: Op, files: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyList>, Shape)> {
    if files.is_instance_of::<PyDict>() {
        let items = files.call_method0(pyo3::intern!(files.py(), "items"))?;
        return Ok((pyobj::sorted(&items)?, Shape::Dict));
    }
    if pyobj::is_list_or_tuple(files) {
        return Ok((pyobj::sorted(files)?, Shape::List));
    }
    Err(Error::FilesType(op, files).into())
}

/// The `(path, value)` items of Python-sorted files: as they are for a dict, each path paired
/// with `None` for a list (the canonical files list of list-form files).
pub fn sorted_items<'py>(sorted: Bound<'py, PyList>, shape: Shape) -> PyResult<Bound<'py, PyList>> {
    match shape {
        Shape::Dict => Ok(sorted),
        Shape::List => {
            let py = sorted.py();
            let pairs = PyList::empty(py);
            for p in sorted.iter() {
                pairs.append((p, py.None()))?;
            }
            Ok(pairs)
        }
    }
}

/// A reader that keeps the objects, for `split_fileset`.
pub struct Keep<'py> {
    pub files: Vec<(Bound<'py, PyString>, Option<Bound<'py, PyAny>>)>,
}

impl<'py> Keep<'py> {
    pub fn with_capacity(n: usize) -> Self {
        Keep {
            files: Vec::with_capacity(n),
        }
    }
}

impl<'py> Reader<'py> for Keep<'py> {
    type Out = Vec<(Bound<'py, PyString>, Option<Bound<'py, PyAny>>)>;

    #[inline]
    fn file(
        &mut self,
        path: Bound<'py, PyString>,
        value: Option<Bound<'py, PyAny>>,
    ) -> PyResult<bool> {
        self.files.push((path, value));
        Ok(true)
    }

    fn finish(self) -> PyResult<Option<Self::Out>> {
        Ok(Some(self.files))
    }
}

/// A reader that only checks that every value is a `str` or `None` (the values whose encoding
/// cannot fail), for `hash_fileset`'s strict check.
pub struct PlainValues;

impl<'py> Reader<'py> for PlainValues {
    type Out = ();

    #[inline]
    fn file(
        &mut self,
        _: Bound<'py, PyString>,
        value: Option<Bound<'py, PyAny>>,
    ) -> PyResult<bool> {
        Ok(match value {
            None => true,
            Some(v) => v.is_none() || v.is_exact_instance_of::<PyString>(),
        })
    }

    fn finish(self) -> PyResult<Option<()>> {
        Ok(Some(()))
    }
}

/// The UTF-8 form of a `str`, or `None` for one with a lone surrogate (which has none: Python
/// then sorts by code point and its encoder escapes it).
#[inline]
pub fn utf8<'a>(s: &'a Bound<'_, PyString>) -> Option<&'a str> {
    s.to_str().ok()
}
