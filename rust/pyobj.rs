//! Small helpers that apply Python's own protocols to arbitrary objects, so that rare inputs get
//! exactly the behaviour (and the exceptions) of the equivalent Python expression.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::errors::Error;

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
        return Err(Error::UnpackNonIterable(item.get_type().name()?.to_string()).into());
    };
    let mut got = Vec::with_capacity(2);
    for x in iter {
        got.push(x?);
        if got.len() > 2 {
            return Err(Error::UnpackTooMany.into());
        }
    }
    if got.len() < 2 {
        return Err(Error::UnpackTooFew(got.len()).into());
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

/// The items of an exact or subclassed `dict`, read with `PyDict_Next`, as a fallible iterator.
///
/// PyO3's own dict iterator panics when the dict changes size during iteration, and the
/// resulting `PanicException` is a `BaseException` that `except Exception` does not catch. This
/// one reports the change as Python does, with a `RuntimeError`, and stops.
///
/// The module is declared `gil_used = true`: while the GIL is held and the loop runs no Python
/// code, the dict cannot change; the check covers code that does run Python (a finalizer or a
/// garbage-collector callback that an allocation triggers), so that the worst outcome is an
/// exception.
pub struct DictItems<'py> {
    dict: Bound<'py, PyDict>,
    pos: pyo3::ffi::Py_ssize_t,
    len: pyo3::ffi::Py_ssize_t,
    remaining: pyo3::ffi::Py_ssize_t,
    done: bool,
}

impl<'py> DictItems<'py> {
    pub fn new(dict: &Bound<'py, PyDict>) -> Self {
        // SAFETY: `dict` is a live `dict` (or subclass) and we hold the GIL.
        let len = unsafe { pyo3::ffi::PyDict_Size(dict.as_ptr()) };
        DictItems {
            dict: dict.clone(),
            pos: 0,
            len,
            remaining: len,
            done: false,
        }
    }
}

impl<'py> Iterator for DictItems<'py> {
    type Item = PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let py = self.dict.py();
        // SAFETY: as in `new`.
        let now = unsafe { pyo3::ffi::PyDict_Size(self.dict.as_ptr()) };
        if now != self.len {
            self.done = true;
            return Some(Err(Error::DictChangedSize.into()));
        }
        let mut key = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        // SAFETY: we hold the GIL; `PyDict_Next` bounds-checks `pos` against the dict's current
        // table, so it is sound even if the dict was changed since the last call; it writes
        // borrowed references to `key` and `value`.
        let found = unsafe {
            pyo3::ffi::PyDict_Next(self.dict.as_ptr(), &mut self.pos, &mut key, &mut value)
        };
        if found == 0 {
            self.done = true;
            return None;
        }
        if self.remaining == 0 {
            // The same size, but more items than it had: keys were replaced under us.
            self.done = true;
            return Some(Err(Error::DictKeysChanged.into()));
        }
        self.remaining -= 1;
        // SAFETY: `PyDict_Next` returned non-null borrowed references to objects the dict holds;
        // no Python code ran since, so they are alive, and `from_borrowed_ptr` takes a new
        // strong reference to each before anything else can run.
        let (k, v) = unsafe {
            (
                Bound::from_borrowed_ptr(py, key),
                Bound::from_borrowed_ptr(py, value),
            )
        };
        Some(Ok((k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::exceptions::PyRuntimeError;

    #[test]
    fn dict_items_reports_a_change_as_runtime_error() {
        Python::initialize();
        Python::attach(|py| {
            let d = PyDict::new(py);
            for i in 0..4 {
                d.set_item(i, i).unwrap();
            }
            let all: Vec<_> = DictItems::new(&d).collect::<PyResult<_>>().unwrap();
            assert_eq!(all.len(), 4);

            let mut it = DictItems::new(&d);
            it.next().unwrap().unwrap();
            d.set_item(10, 10).unwrap();
            let err = it.next().unwrap().unwrap_err();
            assert!(err.is_instance_of::<PyRuntimeError>(py));
            assert!(err.to_string().contains("changed size"));
            assert!(it.next().is_none());

            // Same size, different keys: caught once the walk finds more items than it had.
            let d = PyDict::new(py);
            d.set_item("a", 1).unwrap();
            let mut it = DictItems::new(&d);
            it.next().unwrap().unwrap();
            d.del_item("a").unwrap();
            d.set_item("b", 2).unwrap();
            let err = it.next().unwrap().unwrap_err();
            assert!(err.to_string().contains("keys changed"));
        });
    }
}
