//! chunkwise's Rust core: exact, fast drop-ins for coffea's `split_fileset` and `hash_fileset`.
//!
//! This file only declares the Python module; the logic lives in modules named for what they do.

mod canonical;
mod escape;
mod hash;
mod pipeline;
mod prefetch;
mod pyobj;
mod sort;
mod split;

use pyo3::prelude::*;

/// Return coffea's stable SHA-256 hex digest of one chunk.
#[pyfunction]
fn hash_fileset(chunk: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(canonical::hex(&hash::hash_one(chunk)?))
}

/// Return the digests of many chunks, hashing them on two cores with the GIL released.
#[pyfunction]
fn hash_filesets(chunks: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    Ok(hash::hash_many(chunks)?
        .iter()
        .map(canonical::hex)
        .collect())
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_fileset, m)?)?;
    m.add_function(wrap_pyfunction!(hash_filesets, m)?)?;
    m.add_function(wrap_pyfunction!(split::split_fileset, m)?)?;
    Ok(())
}
