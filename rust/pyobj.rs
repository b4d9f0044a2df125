//! Small helpers that apply Python's own protocols to arbitrary objects, so that rare inputs get
//! exactly the behaviour (and the exceptions) of the equivalent Python expression.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

static SORTED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ENCODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `sorted(obj)`, with Python's own comparison rules and errors.
pub fn sorted<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    let py = obj.py();
    let f = SORTED.get_or_try_init(py, || -> PyResult<_> {
        Ok(py.import("builtins")?.getattr("sorted")?.unbind())
    })?;
    Ok(f.bind(py).call1((obj,))?.cast_into::<PyList>()?)
}

/// `json.dumps(obj, sort_keys=True, separators=(",", ":"))` as bytes.
///
/// JSON encoding composes: a value's text inside a document equals its text on its own, so rare
/// subtrees are encoded by CPython's encoder itself, which guarantees the same bytes.
pub fn encode_json(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let py = obj.py();
    let f = ENCODE.get_or_try_init(py, || -> PyResult<_> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("sort_keys", true)?;
        kwargs.set_item("separators", (",", ":"))?;
        let encoder = py
            .import("json")?
            .getattr("JSONEncoder")?
            .call((), Some(&kwargs))?;
        Ok(encoder.getattr("encode")?.unbind())
    })?;
    let text = f.bind(py).call1((obj,))?;
    let text = text.cast::<PyString>()?;
    Ok(text.to_str()?.as_bytes().to_vec())
}

/// The JSON text of `key` used as an object key (`"..."`), as the encoder converts it.
pub fn encode_json_key(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let one = PyDict::new(key.py());
    one.set_item(key, key.py().None())?;
    let text = encode_json(one.as_any())?;
    // `{<key>:null}`
    Ok(text[1..text.len() - 6].to_vec())
}

/// `a, b = item`, with Python's unpacking errors.
pub fn unpack2<'py>(item: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    if let Ok(t) = item.cast::<PyTuple>() {
        if t.len() == 2 {
            return Ok((t.get_item(0)?, t.get_item(1)?));
        }
    }
    let Ok(iter) = item.try_iter() else {
        return Err(PyTypeError::new_err(format!(
            "cannot unpack non-iterable {} object",
            item.get_type().name()?
        )));
    };
    let mut got = Vec::with_capacity(2);
    for x in iter {
        got.push(x?);
        if got.len() > 2 {
            return Err(PyValueError::new_err(
                "too many values to unpack (expected 2)",
            ));
        }
    }
    if got.len() < 2 {
        return Err(PyValueError::new_err(format!(
            "not enough values to unpack (expected 2, got {})",
            got.len()
        )));
    }
    let b = got.pop().expect("two values");
    let a = got.pop().expect("two values");
    Ok((a, b))
}

/// Iterate `mapping.items()` as `(key, value)` pairs.
pub fn items<'py>(
    mapping: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    let view = mapping.call_method0(pyo3::intern!(mapping.py(), "items"))?;
    let mut out = Vec::new();
    for item in view.try_iter()? {
        out.push(unpack2(&item?)?);
    }
    Ok(out)
}

/// `isinstance(obj, (list, tuple))`.
pub fn is_list_or_tuple(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()
}

/// `data.get("files", {})` for a `dict` (or subclass) dataset entry.
pub fn get_files<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = data.py();
    let key = pyo3::intern!(py, "files");
    if let Ok(d) = data.cast_exact::<PyDict>() {
        return Ok(match d.get_item(key)? {
            Some(v) => v,
            None => PyDict::new(py).into_any(),
        });
    }
    data.call_method1(pyo3::intern!(py, "get"), (key, PyDict::new(py)))
}

/// `type(obj).__name__`, for messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `repr(obj)`, shortened for messages.
pub fn short_repr(obj: &Bound<'_, PyAny>) -> String {
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
