use pyo3::prelude::*;

#[pyfunction]
#[pyo3(signature = (fileset, strategy=None, datasets=None, percentage=None, treename=None, *, files_per_chunk=None))]
pub fn split_fileset<'py>(
    fileset: &Bound<'py, PyAny>,
    strategy: Option<&Bound<'py, PyAny>>,
    datasets: Option<&Bound<'py, PyAny>>,
    percentage: Option<&Bound<'py, PyAny>>,
    treename: Option<&Bound<'py, PyAny>>,
    files_per_chunk: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let _ = (strategy, datasets, percentage, treename, files_per_chunk);
    Ok(fileset.clone())
}
