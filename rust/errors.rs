//! Every exception the core raises, in one place: [`Error`] names the condition, and its one
//! conversion into a `PyErr` (`From<Error> for PyErr`) writes the message.
//!
//! For input coffea rejects,
//! each message starts with coffea 2026.9.0's exact text (checked differentially against coffea
//! in `tests/test_core_differential.py`), so that code matching coffea's messages keeps working;
//! chunkwise's hint, if any, follows it. The text is built by Python's own `str.format`, which
//! formats each argument as coffea's f-strings do (`format(x, "")`, so `str(x)` for most
//! objects) and keeps strings Rust cannot hold (lone surrogates) exact.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `template.format(*args)` as a Python `str`; an error raised by an argument's `__format__` is
/// raised instead, as coffea's f-string would raise it.
fn text<'py>(
    py: Python<'py>,
    template: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Py<PyAny>> {
    Ok(PyString::new(py, template)
        .call_method1(pyo3::intern!(py, "format"), args)?
        .unbind())
}

fn type_name<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    obj.get_type().name()
}

/// `type(obj).__name__` as Rust text, `?` if it cannot be read.
fn type_name_lossy(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `repr(obj)`, shortened for messages.
fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let r = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".to_string());
    if r.chars().count() > 80 {
        let head: String = r.chars().take(77).collect();
        format!("{head}...")
    } else {
        r
    }
}

fn value_error(msg: PyResult<Py<PyAny>>) -> PyErr {
    match msg {
        Ok(m) => PyValueError::new_err(m),
        Err(e) => e,
    }
}

fn type_error(msg: PyResult<Py<PyAny>>) -> PyErr {
    match msg {
        Ok(m) => PyTypeError::new_err(m),
        Err(e) => e,
    }
}

const TREENAME_HINT: &str = " Pass treename=\"Events\" (or the tree to read) to split_fileset.";

/// Which function is reading: coffea words some of the same conditions differently in
/// `split_fileset` and `hash_fileset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Split,
    Hash,
}

/// A condition the core raises an exception for.
pub enum Error<'a, 'py> {
    /// `strategy` is neither `"by_dataset"` nor `None`.
    UnknownStrategy(&'a Bound<'py, PyAny>),
    /// `percentage` is not an int that divides 100.
    BadPercentage(Python<'py>),
    /// `percentage` and `files_per_chunk` together.
    PercentageAndFilesPerChunk,
    /// `events_per_chunk` with `percentage` or `files_per_chunk`.
    EventsCombined,
    /// `stable` is not a bool.
    StableNotBool(&'a Bound<'py, PyAny>),
    /// `stable=True` with `percentage`.
    StableWithPercentage,
    /// `stable=True` with neither `files_per_chunk` nor `events_per_chunk`.
    StableNeedsSize,
    /// `stable=True`: a dataset whose name is not a `str`.
    StableName(&'a Bound<'py, PyAny>),
    /// `stable=True`: a file (path, dataset) whose path is not a `str`.
    StablePath(&'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>),
    /// `files_per_chunk` or `events_per_chunk` (named) is not an int.
    NotAnInt(&'static str, &'a Bound<'py, PyAny>),
    /// `files_per_chunk` or `events_per_chunk` (named) is below 1.
    NotPositive(&'static str, &'a Bound<'py, PyAny>),
    /// `split_fileset`: a dataset given as a bare list of paths, and no `treename`.
    ListDatasetNeedsTreename(&'a Bound<'py, PyAny>),
    /// A dataset dict whose `files` is a list, with no `treename` key (or, for `split_fileset`,
    /// argument).
    ListFilesNeedTreename(Op, &'a Bound<'py, PyAny>),
    /// A dataset (name, value) of a type the function does not take.
    DatasetType(Op, &'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>),
    /// A dataset's `files` that is neither a dict nor a list or tuple.
    FilesType(Op, &'a Bound<'py, PyAny>),
    /// `events_per_chunk`: a file (path, dataset) without a usable `num_entries`.
    NoNumEntries(&'a Bound<'py, PyAny>, &'a Bound<'py, PyAny>),
    /// `a, b = item` on a non-iterable (its type name).
    UnpackNonIterable(String),
    /// `a, b = item` on more than two values.
    UnpackTooMany,
    /// `a, b = item` on fewer than two values (how many).
    UnpackTooFew(usize),
    /// A dict changed size while the core walked it.
    DictChangedSize,
    /// A dict's keys were replaced while the core walked it.
    DictKeysChanged,
    /// A worker thread panicked (a bug).
    ThreadPanicked,
}

impl From<Error<'_, '_>> for PyErr {
    fn from(e: Error<'_, '_>) -> PyErr {
        match e {
            Error::UnknownStrategy(strategy) => value_error(text(
                strategy.py(),
                "Unknown strategy '{}'. Use 'by_dataset' or None.",
                (strategy,),
            )),
            Error::BadPercentage(py) => value_error(text(
                py,
                "'percentage' must be an int that divides 100 evenly (e.g. 10, 20, 25, 50). \
                 For any other chunk size, chunkwise has files_per_chunk=N and events_per_chunk=N.",
                (),
            )),
            Error::PercentageAndFilesPerChunk => {
                PyValueError::new_err("pass either percentage or files_per_chunk, not both")
            }
            Error::EventsCombined => PyValueError::new_err(
                "events_per_chunk cannot be combined with percentage or files_per_chunk: pass \
                 one of the three",
            ),
            Error::StableNotBool(flag) => PyTypeError::new_err(format!(
                "stable must be a bool (True or False), not {}",
                type_name_lossy(flag)
            )),
            Error::StableWithPercentage => PyValueError::new_err(
                "stable=True cannot be combined with percentage: pass files_per_chunk=N or \
                 events_per_chunk=N, the mean chunk size",
            ),
            Error::StableNeedsSize => PyValueError::new_err(
                "stable=True needs files_per_chunk=N or events_per_chunk=N: the mean chunk size",
            ),
            Error::StableName(name) => {
                let py = name.py();
                type_error(type_name(name).and_then(|t| {
                    text(
                        py,
                        "stable=True needs every dataset name to be a str, but {!r} is of type {}",
                        (name, t),
                    )
                }))
            }
            Error::StablePath(path, dataset) => {
                let py = path.py();
                type_error(type_name(path).and_then(|t| {
                    text(
                        py,
                        "stable=True needs every path to be a str, but file {!r} of dataset {!r} \
                         is of type {}",
                        (path, dataset, t),
                    )
                }))
            }
            Error::NotAnInt(name, n) => {
                PyTypeError::new_err(format!("{name} must be an int, not {}", type_name_lossy(n)))
            }
            Error::NotPositive(name, n) => PyValueError::new_err(format!(
                "{name}={} is not allowed: it must be at least 1",
                short_repr(n)
            )),
            Error::ListDatasetNeedsTreename(name) => value_error(text(
                name.py(),
                &format!(
                    "Dataset '{{}}' uses list-format files; 'treename' must be supplied to make \
                     the chunk self-contained.{TREENAME_HINT}"
                ),
                (name,),
            )),
            Error::ListFilesNeedTreename(Op::Split, name) => value_error(text(
                name.py(),
                &format!(
                    "Dataset '{{}}' uses list-format files without a dataset-level 'treename' \
                     field; 'treename' must be supplied to make the chunk self-contained.\
                     {TREENAME_HINT}"
                ),
                (name,),
            )),
            Error::ListFilesNeedTreename(Op::Hash, name) => value_error(text(
                name.py(),
                "Dataset '{}' uses list-format files without a dataset-level 'treename' field; \
                 the chunk is not self-contained and cannot be hashed reliably. Split it with \
                 split_fileset(..., treename=\"Events\").",
                (name,),
            )),
            Error::DatasetType(op, name, data) => {
                let py = name.py();
                let template = match op {
                    Op::Split => {
                        "Unsupported dataset value type for '{}': {}. A fileset maps each \
                         dataset to a dict {{\"files\": {{path: treename}}, ...}} or to a list \
                         of paths."
                    }
                    Op::Hash => {
                        "Unsupported dataset value type for '{}': {}. Pass a fileset chunk \
                         produced by split_fileset, or supply a dataset-level 'treename' for \
                         list-format filesets."
                    }
                };
                type_error(type_name(data).and_then(|t| text(py, template, (name, t))))
            }
            Error::FilesType(op, files) => {
                let py = files.py();
                let template = match op {
                    Op::Split => {
                        "Expected dataset['files'] to be a dict or list, got {} \
                         (a dict {{path: treename}} or a list of paths)."
                    }
                    Op::Hash => "Expected 'files' to be a dict or list, got {}",
                };
                type_error(type_name(files).and_then(|t| text(py, template, (t,))))
            }
            Error::NoNumEntries(path, dataset) => value_error(text(
                path.py(),
                "events_per_chunk needs every file's number of events, but file {!r} of dataset \
                 {!r} has no 'num_entries' (a non-negative int, as \
                 coffea.dataset_tools.preprocess writes it): preprocess the fileset first, or \
                 use files_per_chunk",
                (path, dataset),
            )),
            Error::UnpackNonIterable(type_name) => {
                PyTypeError::new_err(format!("cannot unpack non-iterable {type_name} object"))
            }
            Error::UnpackTooMany => PyValueError::new_err("too many values to unpack (expected 2)"),
            Error::UnpackTooFew(got) => PyValueError::new_err(format!(
                "not enough values to unpack (expected 2, got {got})"
            )),
            Error::DictChangedSize => {
                PyRuntimeError::new_err("dictionary changed size during iteration")
            }
            Error::DictKeysChanged => {
                PyRuntimeError::new_err("dictionary keys changed during iteration")
            }
            Error::ThreadPanicked => PyRuntimeError::new_err("a hashing thread panicked"),
        }
    }
}
