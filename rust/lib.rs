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
use rayon::prelude::*;

/// Return coffea's stable SHA-256 hex digest of one chunk.
#[pyfunction]
fn hash_fileset(chunk: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(canonical::hex(&hash::hash_one(chunk)?))
}

/// Files gathered before the GIL is released and a batch is hashed in parallel.
const BATCH_FILES: usize = 1 << 20;

/// Return the digests of many chunks, hashing them in parallel with the GIL released.
#[pyfunction]
fn hash_filesets(py: Python<'_>, chunks: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let mut out = Vec::new();
    let mut chunks = chunks.try_iter()?.peekable();
    while chunks.peek().is_some() {
        // One batch: gather plans (GIL held) until enough files, then hash them in parallel.
        let keep = hash::KeepAlive::new();
        let gatherer = hash::Gatherer::new(&keep);
        let mut plans = Vec::new();
        let mut files = 0;
        while files < BATCH_FILES {
            let Some(chunk) = chunks.next() else { break };
            let plan = gatherer.chunk(&chunk?)?;
            files += plan.n_entries() + 1;
            plans.push(plan);
        }
        let digests: Vec<[u8; 32]> =
            py.detach(|| plans.par_iter_mut().map(canonical::digest).collect());
        out.extend(digests.iter().map(canonical::hex));
    }
    Ok(out)
}

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_fileset, m)?)?;
    m.add_function(wrap_pyfunction!(hash_filesets, m)?)?;
    m.add_function(wrap_pyfunction!(split::split_fileset, m)?)?;
    Ok(())
}
