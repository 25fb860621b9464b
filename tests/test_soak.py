"""100 submit-and-wait cycles (hook + trigger wait logic) with 20% injected faults: all succeed,
no PanDA task duplicated, none lost. The 1,000-cycle run is `python bench/soak.py`."""

from __future__ import annotations

from airflow_provider_panda.testing.soak import run_soak


def test_soak_100_cycles_with_20_percent_faults(panda_server):
    result = run_soak(panda_server.connection(), cycles=100, fault_rate=0.2)
    print(result.line())
    assert (result.succeeded, result.duplicates, result.lost) == (100, 0, 0), result.line()
    assert panda_server.panda.fault_rate == 0.0
