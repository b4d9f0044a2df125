//! Canonical JSON of file-entry values, written by the core itself.
//!
//! After coffea's `preprocess`, each file maps to `{"object_path": str, "steps": [[int, int],
//! ...] or None, "num_entries": int, "uuid": str}`. Sending each of those through Python's `json`
//! costs far more than hashing their text, so the core writes them: `str` keys; `str`, `int` (any
//! size), `float`, `bool` and `None` values; lists, tuples and dicts of those, a few levels deep.
//! The same writer serves small metadata (`{"xsec": 831.76, "is_mc": True}`), which every chunk
//! of a dataset carries. The text
//! is what `json.dumps(v, sort_keys=True, separators=(",", ":"))` writes (CPython's encoder
//! writes an `int` as `int.__repr__`, a tuple as a list, and sorts `str` keys by code point,
//! which is the order of their UTF-8 bytes).
//!
//! Anything else (subclasses, other types, non-`str` keys, lone surrogates, deep
//! nesting) is declined, and the caller has Python's encoder write it: rare values stay
//! byte-exact and raise coffea's errors. No Python code runs here, so the objects walked cannot
//! change under us while the GIL is held.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::escape::write_json_str;
use crate::fileset;
use crate::pyobj::DictItems;

/// Containers nested deeper than this are left to Python (whose encoder raises RecursionError
/// on absurd depths, as coffea's does).
const MAX_DEPTH: u32 = 8;

/// Append `v`'s canonical JSON to `out` and return true, or return false (with `out` as it was)
/// if `v` holds anything this module leaves to Python.
pub fn encode_value(v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> bool {
    let mark = out.len();
    let ok = write(v, out, 0);
    if !ok {
        out.truncate(mark);
    }
    ok
}

fn write(v: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: u32) -> bool {
    if v.is_none() {
        out.extend_from_slice(b"null");
        true
    } else if let Ok(s) = v.cast_exact::<PyString>() {
        match fileset::utf8(s) {
            Some(text) => {
                write_json_str(out, text);
                true
            }
            // A lone surrogate: Python's encoder escapes it.
            None => false,
        }
    } else if v.is_exact_instance_of::<PyBool>() {
        out.extend_from_slice(if v.is_truthy().unwrap_or(false) {
            b"true"
        } else {
            b"false"
        });
        true
    } else if v.is_exact_instance_of::<PyInt>() {
        write_int(v, out)
    } else if let Ok(f) = v.cast_exact::<PyFloat>() {
        let ok = write_float(f.value(), out);
        if !ok {
            // Out of memory: clear the error; Python's encoder, tried next, raises it.
            drop(PyErr::take(v.py()));
        }
        ok
    } else if depth >= MAX_DEPTH {
        false
    } else if let Ok(list) = v.cast_exact::<PyList>() {
        write_seq(list.iter(), out, depth)
    } else if let Ok(tuple) = v.cast_exact::<PyTuple>() {
        write_seq(tuple.iter(), out, depth)
    } else if let Ok(dict) = v.cast_exact::<PyDict>() {
        write_dict(dict, out, depth)
    } else {
        false
    }
}

fn write_seq<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    depth: u32,
) -> bool {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if !write(&item, out, depth + 1) {
            return false;
        }
    }
    out.push(b']');
    true
}

/// Dicts with up to this many keys are gathered and sorted on the stack (a preprocessed entry
/// has four).
const STACK_KEYS: usize = 8;

type Item<'py> = (Bound<'py, PyString>, Bound<'py, PyAny>);

/// Strong references to a dict's items (so that nothing we borrow from can be freed), with
/// `str` keys only.
fn gather_items<'py>(dict: &Bound<'py, PyDict>, mut put: impl FnMut(Item<'py>) -> bool) -> bool {
    for item in DictItems::new(dict) {
        let Ok((k, v)) = item else { return false };
        let Ok(k) = k.cast_into_exact::<PyString>() else {
            return false;
        };
        if !put((k, v)) {
            return false;
        }
    }
    true
}

fn write_dict(dict: &Bound<'_, PyDict>, out: &mut Vec<u8>, depth: u32) -> bool {
    if dict.len() > STACK_KEYS {
        let mut items = Vec::with_capacity(dict.len());
        if !gather_items(dict, |it| {
            items.push(it);
            true
        }) {
            return false;
        }
        let mut pairs = Vec::with_capacity(items.len());
        for (k, v) in &items {
            let Some(text) = fileset::utf8(k) else {
                return false;
            };
            pairs.push((text, Some(v)));
        }
        return write_pairs(&mut pairs, out, depth);
    }
    let mut items: [Option<Item<'_>>; STACK_KEYS] = Default::default();
    let mut len = 0;
    if !gather_items(dict, |it| {
        // More items than it had when we looked: it changed under us.
        let Some(slot) = items.get_mut(len) else {
            return false;
        };
        *slot = Some(it);
        len += 1;
        true
    }) {
        return false;
    }
    let mut pairs: [(&str, Option<&Bound<'_, PyAny>>); STACK_KEYS] = [("", None); STACK_KEYS];
    for (pair, item) in pairs.iter_mut().zip(&items[..len]) {
        let Some((k, v)) = item else { return false };
        let Some(text) = fileset::utf8(k) else {
            return false;
        };
        *pair = (text, Some(v));
    }
    write_pairs(&mut pairs[..len], out, depth)
}

/// Write `{"key":value,...}` with the keys in code-point order (the order of their UTF-8
/// bytes); `false` if a value is left to Python.
fn write_pairs(
    pairs: &mut [(&str, Option<&Bound<'_, PyAny>>)],
    out: &mut Vec<u8>,
    depth: u32,
) -> bool {
    // Keys are distinct, so any sort gives the one order.
    if pairs.len() <= STACK_KEYS {
        for i in 1..pairs.len() {
            let mut j = i;
            while j > 0 && pairs[j - 1].0.as_bytes() > pairs[j].0.as_bytes() {
                pairs.swap(j - 1, j);
                j -= 1;
            }
        }
    } else {
        pairs.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    }
    out.push(b'{');
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, key);
        out.push(b':');
        match value {
            Some(v) if write(v, out, depth + 1) => {}
            _ => return false,
        }
    }
    out.push(b'}');
    true
}

/// An exact `int` in decimal, as `int.__repr__` writes it.
fn write_int(v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> bool {
    let mut overflow = 0;
    // SAFETY: `v` is a live exact `int` and we hold the GIL. For an `int`, this reads its value
    // without calling Python code; on overflow it sets `overflow` and raises nothing.
    let n = unsafe { ffi::PyLong_AsLongLongAndOverflow(v.as_ptr(), &mut overflow) };
    if overflow == 0 {
        if n == -1 && PyErr::take(v.py()).is_some() {
            return false;
        }
        write_i64(out, n);
        return true;
    }
    // Beyond 64 bits: `str` of an exact int is its decimal text (it raises ValueError past
    // sys.get_int_max_str_digits(), and then Python's encoder raises the same error in order).
    match v.str() {
        Ok(text) => match text.to_str() {
            Ok(t) => {
                out.extend_from_slice(t.as_bytes());
                true
            }
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// A `float` as `json` writes it: `float.__repr__` (CPython's own `PyOS_double_to_string`,
/// shortest round-trip digits), or `NaN`, `Infinity`, `-Infinity`. `false` if CPython could not
/// allocate the text.
fn write_float(x: f64, out: &mut Vec<u8>) -> bool {
    if x.is_nan() {
        out.extend_from_slice(b"NaN");
        return true;
    }
    if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 {
            b"Infinity".as_slice()
        } else {
            b"-Infinity"
        });
        return true;
    }
    // SAFETY: we hold the GIL (callers hold a `Bound`); `PyOS_double_to_string` runs no Python
    // code and returns a NUL-terminated buffer from `PyMem_Malloc`, or NULL with MemoryError set.
    let text = unsafe {
        ffi::PyOS_double_to_string(
            x,
            b'r' as std::ffi::c_char,
            0,
            ffi::Py_DTSF_ADD_DOT_0,
            std::ptr::null_mut(),
        )
    };
    if text.is_null() {
        return false; // with MemoryError set, which the caller clears
    }
    // SAFETY: `text` is a valid NUL-terminated string that we own until we free it below.
    out.extend_from_slice(unsafe { std::ffi::CStr::from_ptr(text) }.to_bytes());
    // SAFETY: `text` came from `PyMem_Malloc` and is freed once, with the GIL held.
    unsafe { ffi::PyMem_Free(text.cast()) };
    true
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64_text(n: i64) -> String {
        let mut out = Vec::new();
        write_i64(&mut out, n);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers() {
        for n in [0, 1, -1, 9, 10, 99, 100, 123456789, i64::MAX, i64::MIN, -10] {
            assert_eq!(i64_text(n), n.to_string());
        }
    }

    #[test]
    fn floats_match_python_repr() {
        Python::initialize();
        Python::attach(|py| {
            let mut xs = vec![
                0.0,
                -0.0,
                1.0,
                -1.5,
                0.1,
                1e-4,
                1e-5,
                1.5e-5,
                1e15,
                1e16,
                1.2345678901234567e16,
                123456789012345.6,
                1234567890123456.0,
                1e22,
                1e100,
                1.7976931348623157e308,
                5e-324,
                2.2250738585072014e-308,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                0.30000000000000004,
                831.76,
            ];
            // And a spread of bit patterns: every exponent, varied mantissas.
            let mut state: u64 = 0x9e3779b97f4a7c15;
            for _ in 0..20_000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                xs.push(f64::from_bits(state));
            }
            let repr = py.import("json").unwrap().getattr("dumps").unwrap();
            for x in xs {
                let want: String = repr.call1((x,)).unwrap().extract().unwrap();
                let mut out = Vec::new();
                assert!(write_float(x, &mut out));
                assert_eq!(String::from_utf8(out).unwrap(), want, "{x:e}");
            }
        });
    }

    #[test]
    fn values_match_python_json() {
        Python::initialize();
        Python::attach(|py| {
            let json = py.import("json").unwrap();
            let kwargs = PyDict::new(py);
            kwargs.set_item("sort_keys", true).unwrap();
            kwargs.set_item("separators", (",", ":")).unwrap();
            let cases = [
                "{'object_path': 'Events', 'steps': [[0, 100], [100, 200]], 'num_entries': 200, \
                 'uuid': 'a-b'}",
                "{'steps': None, 'num_entries': 2**70, 'x': True, 'y': False, 'é': '😀\\n'}",
                "{'steps': [], 'num_entries': -2**64, 'b': (1, (2, 3)), 'a': {'z': [], 'y': {}}}",
                "[[-9223372036854775808, 9223372036854775807, 9223372036854775808]]",
                "{'xsec': 831.76, 'w': [1e-05, 1e16, -0.0, float('nan'), float('-inf')]}",
            ];
            for case in cases {
                let v = py
                    .eval(&std::ffi::CString::new(case).unwrap(), None, None)
                    .unwrap();
                let want: String = json
                    .call_method("dumps", (&v,), Some(&kwargs))
                    .unwrap()
                    .extract()
                    .unwrap();
                let mut out = b"prefix".to_vec();
                assert!(encode_value(&v, &mut out), "{case}");
                assert_eq!(std::str::from_utf8(&out[6..]).unwrap(), want, "{case}");
            }
            // Left to Python, with the buffer untouched.
            for case in [
                "{'num_entries': float}",
                "{1: 'a'}",
                "{'a': '\\ud800'}",
                "{'a': {1, 2}}",
                "[[[[[[[[[[1]]]]]]]]]]",
                "{'a': [0, 1j]}",
            ] {
                let v = py
                    .eval(&std::ffi::CString::new(case).unwrap(), None, None)
                    .unwrap();
                let mut out = b"prefix".to_vec();
                assert!(!encode_value(&v, &mut out), "{case}");
                assert_eq!(out, b"prefix");
            }
        });
    }
}
