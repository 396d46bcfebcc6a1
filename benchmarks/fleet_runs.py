"""The fleets a benchmark run includes, as one section of the results.

* ``redis``: the fleet at scale (:mod:`benchmarks.fleet_tasks`) sharing one real
  ``redis-server`` (skipped, saying why, when the binary is not installed);
* ``jitter``: the same fleet without a store, once with ``refresh_jitter=0.0`` and once with
  the default policy, for the refresh spread before and after (``fleet-jitter.png``), with
  ``fleet_jitter_ttl`` tokens (30 s): the jitter spreads refreshes over a share of the
  lifetime, so it needs a lifetime long enough for seconds to mean something;
* ``threads`` (opt-in, ``--fleet-threads``): the older thread fleet of :mod:`benchmarks.fleet`
  with no store and a file store.
"""

from __future__ import annotations

import shutil
from typing import Any, Callable, Dict, List

from .config import BenchConfig

__all__ = ["run_fleets"]

THREAD_FLEET_STORES = ("none", "file")
THREAD_FLEET_PROCESSES = 4
THREAD_FLEET_THREADS = 10
NO_JITTER = 0.0  # RefreshPolicy(refresh_jitter=0.0): the fleet before jitter


def _guarded(name: str, run: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    try:
        return dict(run(), status="ok")
    except Exception as exc:  # one failed fleet is reported; the others still run
        return {"name": name, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}


def run_fleets(config: BenchConfig, *, with_threads: bool = False) -> Dict[str, Any]:
    """Every fleet of the run; each entry has a ``status`` and, when ``ok``, its figures."""
    from .fleet_tasks import run_task_fleet

    def task_fleet(store: str, jitter: Any = None) -> Callable[[], Dict[str, Any]]:
        shared = store != "none"
        return lambda: run_task_fleet(
            config.fleet_processes,
            config.fleet_tasks,
            config.fleet_ttl if shared else config.fleet_jitter_ttl,
            config.fleet_lifetimes if shared else config.fleet_jitter_lifetimes,
            store=store,
            jitter=jitter,
        )

    section: Dict[str, Any] = {"status": "ok"}
    if shutil.which("redis-server") is None:
        section["redis"] = {"status": "skipped", "error": "redis-server is not on PATH"}
    else:
        print("fleet: redis ...", flush=True)
        section["redis"] = _guarded("redis", task_fleet("redis"))
    print("fleet: no store, without and with refresh jitter ...", flush=True)
    section["jitter"] = {
        "without": _guarded("without jitter", task_fleet("none", NO_JITTER)),
        "with": _guarded("default jitter", task_fleet("none")),
    }
    if with_threads:
        from .fleet import run_fleet

        runs: List[Dict[str, Any]] = []
        for store in THREAD_FLEET_STORES:
            try:
                runs.append(
                    run_fleet(
                        processes=THREAD_FLEET_PROCESSES,
                        threads=THREAD_FLEET_THREADS,
                        ttl=config.contention_ttl,
                        duration=config.contention_duration,
                        store_kind=store,
                    )
                )
            except Exception as exc:
                runs.append({"store": store, "error": f"{type(exc).__name__}: {exc}"[:200]})
        section["threads"] = {"status": "ok", "runs": runs}
    return section
