//! The exceptions `split_fileset` and `hash_fileset` raise for input coffea rejects, in one place.
//!
//! Each message starts with coffea 2026.9.0's exact text (checked differentially against coffea
//! in `tests/test_core_differential.py`), so that code matching coffea's messages keeps working;
//! chunkwise's hint, if any, follows it. The text is built by Python's own `str.format`, which
//! formats each argument as coffea's f-strings do (`format(x, "")`, so `str(x)` for most
//! objects) and keeps strings Rust cannot hold (lone surrogates) exact.

use pyo3::exceptions::{PyTypeError, PyValueError};
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

/// `strategy` is neither `"by_dataset"` nor `None`.
pub fn unknown_strategy(strategy: &Bound<'_, PyAny>) -> PyErr {
    value_error(text(
        strategy.py(),
        "Unknown strategy '{}'. Use 'by_dataset' or None.",
        (strategy,),
    ))
}

/// `percentage` is not an int that divides 100.
pub fn bad_percentage(py: Python<'_>) -> PyErr {
    value_error(text(
        py,
        "'percentage' must be an int that divides 100 evenly (e.g. 10, 20, 25, 50). \
         For any other chunk size, chunkwise has files_per_chunk=N and events_per_chunk=N.",
        (),
    ))
}

const TREENAME_HINT: &str = " Pass treename=\"Events\" (or the tree to read) to split_fileset.";

/// `split_fileset`: a dataset given as a bare list of paths, and no `treename`.
pub fn split_list_dataset_needs_treename(name: &Bound<'_, PyAny>) -> PyErr {
    value_error(text(
        name.py(),
        &format!(
            "Dataset '{{}}' uses list-format files; 'treename' must be supplied to make the \
             chunk self-contained.{TREENAME_HINT}"
        ),
        (name,),
    ))
}

/// `split_fileset`: a dataset dict whose `files` is a list, with no `treename` key or argument.
pub fn split_list_files_need_treename(name: &Bound<'_, PyAny>) -> PyErr {
    value_error(text(
        name.py(),
        &format!(
            "Dataset '{{}}' uses list-format files without a dataset-level 'treename' field; \
             'treename' must be supplied to make the chunk self-contained.{TREENAME_HINT}"
        ),
        (name,),
    ))
}

/// `split_fileset`: a dataset that is neither a dict nor a list or tuple of paths.
pub fn split_dataset_type(name: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyErr {
    let py = name.py();
    type_error(type_name(data).and_then(|t| {
        text(
            py,
            "Unsupported dataset value type for '{}': {}. A fileset maps each dataset to a dict \
             {{\"files\": {{path: treename}}, ...}} or to a list of paths.",
            (name, t),
        )
    }))
}

/// `split_fileset`: a dataset's `files` that is neither a dict nor a list or tuple.
pub fn split_files_type(files: &Bound<'_, PyAny>) -> PyErr {
    let py = files.py();
    type_error(type_name(files).and_then(|t| {
        text(
            py,
            "Expected dataset['files'] to be a dict or list, got {} \
             (a dict {{path: treename}} or a list of paths).",
            (t,),
        )
    }))
}

/// `hash_fileset`: a dataset that is not a dict.
pub fn hash_dataset_type(name: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> PyErr {
    let py = name.py();
    type_error(type_name(data).and_then(|t| {
        text(
            py,
            "Unsupported dataset value type for '{}': {}. Pass a fileset chunk produced by \
             split_fileset, or supply a dataset-level 'treename' for list-format filesets.",
            (name, t),
        )
    }))
}

/// `hash_fileset`: a dataset whose `files` is a list, with no `treename` key.
pub fn hash_list_files_need_treename(name: &Bound<'_, PyAny>) -> PyErr {
    value_error(text(
        name.py(),
        "Dataset '{}' uses list-format files without a dataset-level 'treename' field; the \
         chunk is not self-contained and cannot be hashed reliably. Split it with \
         split_fileset(..., treename=\"Events\").",
        (name,),
    ))
}

/// `hash_fileset`: a dataset's `files` that is neither a dict nor a list or tuple.
pub fn hash_files_type(files: &Bound<'_, PyAny>) -> PyErr {
    let py = files.py();
    type_error(
        type_name(files)
            .and_then(|t| text(py, "Expected 'files' to be a dict or list, got {}", (t,))),
    )
}

/// `events_per_chunk`: a file without a usable `num_entries` (chunkwise's own option).
pub fn no_num_entries(path: &Bound<'_, PyAny>, dataset: &Bound<'_, PyAny>) -> PyErr {
    value_error(text(
        path.py(),
        "events_per_chunk needs every file's number of events, but file {!r} of dataset {!r} \
         has no 'num_entries' (a non-negative int, as coffea.dataset_tools.preprocess writes \
         it): preprocess the fileset first, or use files_per_chunk",
        (path, dataset),
    ))
}
