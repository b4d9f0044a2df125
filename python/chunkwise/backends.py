"""Where units run: one pool or client for a whole run (:class:`Backend`), in this process,
on a ``concurrent.futures`` process pool, or on a dask cluster."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any

from chunkwise.errors import ProcessorUnavailableError
from chunkwise.shipping import check_processor

# The private classes are for chunkwise._coffea (Plan.backend).
__all__ = ["Backend", "_DaskBackend", "_InProcessBackend", "_PoolBackend"]


class Backend:
    """One pool or client for a whole run: submit units, wait for any, cancel, close."""

    workers: int = 1
    #: Units run inside ``submit`` (this process): open one chunk at a time.
    runs_at_submit: bool = False

    def queue_target(self) -> int:
        """How many units to keep submitted: enough that no worker waits for the next one
        while this process learns that the last one finished (a round trip on dask)."""
        return 4 * self.workers + 4

    def default_in_flight(self) -> int:
        """The default bound on open chunks (see ``chunkwise.run``'s ``in_flight``)."""
        return 4 * self.workers

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def submit_many(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        """``[submit(fn, *a) for a in args]``, in one go where the backend can batch."""
        return [self.submit(fn, *a) for a in args]

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        """Block until at least one of ``futures`` is done; return the done ones."""
        raise NotImplementedError

    def share(self, blob: Any) -> Any:
        """Something to pass to ``submit`` in place of ``blob``, sent to workers once."""
        return blob

    def check(self, blob: Any) -> None:
        """Raise :class:`ProcessorUnavailableError` if the workers cannot load the processor."""

    def cancel(self, futures: Iterable[Any]) -> None:
        for future in futures:
            future.cancel()

    def close(self) -> None:
        pass

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _InProcessBackend(Backend):
    """Units run when submitted, so one chunk at a time: each is cached before the next."""

    workers = 1
    runs_at_submit = True

    def queue_target(self) -> int:
        return 1

    def default_in_flight(self) -> int:
        return 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # KeyboardInterrupt and SystemExit stop the run at once
            future.set_exception(exc)
        return future

    def submit_many(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        futures = []
        for a in args:
            future = self.submit(fn, *a)
            futures.append(future)
            outcome = future.result() if future.exception() is None else None
            if outcome is None or getattr(outcome, "kind", None) == "bug":
                break  # the run stops here: do not process the chunk's other files first
        for _ in range(len(args) - len(futures)):
            skipped: concurrent.futures.Future[Any] = concurrent.futures.Future()
            skipped.cancel()
            futures.append(skipped)
        return futures

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        return set(futures)  # all done at submit


def _unavailable(reason: str, where: str) -> ProcessorUnavailableError:
    return ProcessorUnavailableError(
        f"the processor cannot be loaded on the {where} ({reason}); make the modules it "
        "imports importable there (install them, or with dask use client.upload_file), "
        "then rerun"
    )


class _PoolBackend(Backend):
    def __init__(self, executor: Any) -> None:
        pool = executor.pool
        self._own = not isinstance(pool, concurrent.futures.Executor)
        self.pool = pool(max_workers=executor.workers) if self._own else pool
        self.workers = max(1, int(getattr(self.pool, "_max_workers", executor.workers) or 1))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        done, _ = concurrent.futures.wait(
            list(futures), return_when=concurrent.futures.FIRST_COMPLETED
        )
        return done

    def check(self, blob: Any) -> None:
        reason = self.pool.submit(check_processor, blob).result()
        if reason is not None:
            raise _unavailable(reason, "process pool's workers")

    def close(self) -> None:
        if self._own:
            self.pool.shutdown(wait=True)


def _identity(value: Any) -> Any:
    return value


class _DaskBackend(Backend):
    def __init__(self, executor: Any) -> None:
        import distributed

        self._distributed = distributed
        self._own = executor.client is None
        self.client = distributed.Client(threads_per_worker=1) if self._own else executor.client
        self.priority = executor.priority
        info = self.client.scheduler_info()
        threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())
        self.workers = max(1, threads)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, priority=self.priority)

    def submit_many(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        # One message to the scheduler for a chunk's files, not one per file.
        columns = [list(column) for column in zip(*args, strict=True)] if args else []
        return list(self.client.map(fn, *columns, pure=False, priority=self.priority))

    def wait_any(self, futures: Iterable[Any]) -> set[Any]:
        done, _ = self._distributed.wait(list(futures), return_when="FIRST_COMPLETED")
        return set(done)

    def share(self, blob: bytes) -> Any:
        # The bytes go to the scheduler once and reach each worker once, as coffea's own
        # heavy_input does (client.scatter is not robust on adaptive clusters).
        return self.client.submit(_identity, blob, pure=False)

    def check(self, blob: Any) -> None:
        try:
            reason = self.client.submit(check_processor, blob, pure=False).result()
        except Exception as exc:  # e.g. chunkwise itself is missing on the workers
            raise _unavailable(f"{type(exc).__name__}: {exc}", "dask workers") from None
        if reason is not None:
            raise _unavailable(reason, "dask workers")

    def cancel(self, futures: Iterable[Any]) -> None:
        futures = list(futures)
        if futures:
            self.client.cancel(futures)

    def close(self) -> None:
        if self._own:
            self.client.close()
