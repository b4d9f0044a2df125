//! chunkwise's Rust core: exact, fast drop-ins for coffea's `split_fileset` and `hash_fileset`.
//!
//! This file only declares the Python module; the logic lives in modules named for what they do.

mod canonical;
mod errors;
mod escape;
mod fileset;
mod hash;
mod native;
mod prefetch;
mod pyobj;
mod sort;
mod split;
mod stable;
mod threads;

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Return coffea's stable SHA-256 hex digest of one chunk.
#[pyfunction]
fn hash_fileset(chunk: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(canonical::hex(&hash::hash_one(chunk)?))
}

/// Return the digests of many chunks, hashing them in parallel with the GIL released.
#[pyfunction]
fn hash_filesets(chunks: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    Ok(hash::hash_many(chunks)?
        .iter()
        .map(canonical::hex)
        .collect())
}

/// An argument as the caller passed it, `None` inside only when it was left out. (An
/// `Option<&Bound>` argument reads an explicit `None` as left out too; `stable=None` must be
/// refused as not a bool.)
struct Given<'py>(Option<Bound<'py, PyAny>>);

impl<'a, 'py> FromPyObject<'a, 'py> for Given<'py> {
    type Error = std::convert::Infallible;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        Ok(Given(Some(obj.to_owned())))
    }
}

/// Split a fileset into chunks; see the Python docstring in `chunkwise/_core.pyi`.
#[pyfunction]
#[pyo3(
    signature = (fileset, strategy=None, datasets=None, percentage=None, treename=None, *, files_per_chunk=None, events_per_chunk=None, stable=Given(None)),
    text_signature = "(fileset, strategy=None, datasets=None, percentage=None, treename=None, *, files_per_chunk=None, events_per_chunk=None, stable=False)"
)]
#[allow(clippy::too_many_arguments)]
fn split_fileset<'py>(
    py: Python<'py>,
    fileset: &Bound<'py, PyAny>,
    strategy: Option<&Bound<'py, PyAny>>,
    datasets: Option<&Bound<'py, PyAny>>,
    percentage: Option<&Bound<'py, PyAny>>,
    treename: Option<&Bound<'py, PyAny>>,
    files_per_chunk: Option<&Bound<'py, PyAny>>,
    events_per_chunk: Option<&Bound<'py, PyAny>>,
    stable: Given<'py>,
) -> PyResult<Bound<'py, PyList>> {
    split::split_fileset(
        py,
        fileset,
        strategy,
        datasets,
        percentage,
        treename,
        files_per_chunk,
        events_per_chunk,
        stable.0.as_ref(),
    )
}

// `gil_used = true`: the core is not known to be sound without the GIL, so a free-threaded
// CPython (3.13t and later) re-enables the GIL when it imports this module, with a warning.
// `split.rs` and `hash.rs` walk the caller's dicts and lists and read their `str` objects
// (borrowing their UTF-8 bytes while the GIL is released) on the promise that, while this thread
// holds the GIL and runs no Python code, no other thread can change them; on a free-threaded
// build another thread could, and nothing here locks or copies what is walked. It has not been
// built or tested under a free-threaded interpreter, so it does not claim to support one.
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_fileset, m)?)?;
    m.add_function(wrap_pyfunction!(hash_filesets, m)?)?;
    m.add_function(wrap_pyfunction!(split_fileset, m)?)?;
    // The one place the version is written is Cargo.toml: maturin gives it to the wheel's
    // metadata, and this gives it to `chunkwise.__version__`.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
