"""Sweep progress (``ktsweep status`` / ``watch``) read from a real cube's records and staging,
and the Monte Carlo progress hook behind ``ktsweep point``'s progress bar."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
from test_grid_store import config

from ktsweep import cli
from ktsweep.engines import mc
from ktsweep.model.params import make_point
from ktsweep.sweep import progress, store
from ktsweep.sweep import runner as sweep
from ktsweep.sweep.layout import Layout

CFG = config(name="prog")  # the store tests' small sweep, under its own name


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_status_counts_committed_staged_and_running_chunks(tmp_path, capsys):
    """Counts, the running set and the ETA follow the store, chunk by chunk.

    Mutations caught: Monte Carlo counted on every point instead of its sub-grid (total 12,
    not 6); a committed chunk's leftover staged files counted again; a marker left by a
    killed job taken for a running chunk, or left behind by a job that committed; no
    sweep-level line at the end of the job log; staged tasks of a running chunk not counted; an
    ETA without any measured rate."""
    layout = Layout.from_config(CFG)
    results = tmp_path / "results"
    cube = store.cube_path(layout, results)
    store.init_cube(layout, cube)
    prog = progress.measure(layout, cube)
    assert prog.total == {"exact": 12, "mc": 6, "bound": 12}
    assert prog.done == {m: 0 for m in layout.methods} and prog.eta_s is None
    assert "no chunk job running: the sweep is stopped" in prog.line()

    first, second = layout.chunk_ids()[:2]
    lines: list[str] = []
    sweep.run_chunk(layout, first, cube, threads=1, processes=False, report=lines.append)
    assert not (store.staging_dir(cube) / first / progress.MARKER).exists()  # job over
    assert any("left in this chunk" in s for s in lines)
    assert lines[-1].startswith(f"[{first}] committed") and "1/" in lines[-1]
    # written by the job as it ends, while Snakemake goes on: no advice to restart
    assert "stopped" not in lines[-1] and "of job time left" in lines[-1]
    owed = progress.chunk_totals(layout, first)
    prog = progress.measure(layout, cube)
    assert prog.committed == 1 and prog.done == owed and not prog.running
    assert prog.seconds_per_eval > 0

    # a second chunk: one finished task staged, its job alive (this process)
    _, points = layout.chunk_points(second)
    res = sweep.run(points[:2], ["exact", "bound"], layout.checkpoints, layout.mc_settings)
    store.stage(cube, second, [0, 1], res)
    progress.mark_running(cube, second)
    prog = progress.measure(layout, cube)
    assert prog.running == [second]
    assert prog.done["exact"] == owed["exact"] + 2 and prog.done["mc"] == owed["mc"]
    assert prog.eta_s is not None and prog.eta_s > 0 and "of job time left" in prog.line()

    # a killed job's marker: not running, its staged work still counted
    marker = store.staging_dir(cube) / second / progress.MARKER
    info = json.loads(marker.read_text())
    marker.write_text(json.dumps({**info, "pid": _dead_pid()}))
    prog = progress.measure(layout, cube)
    assert prog.running == [] and prog.done["exact"] == owed["exact"] + 2

    # a stray staged file under a committed chunk does not count twice
    store.stage(cube, first, [0], res)
    assert progress.measure(layout, cube).done["exact"] == owed["exact"] + 2

    # the command, from a results folder (the cube carries its config) and from the file
    assert cli.main(["status", str(results / "prog"), "--json"]) == 0
    line, js = capsys.readouterr().out.splitlines()
    assert line.startswith("prog: ") and "1/" in line
    assert json.loads(js)["done"]["exact"] == owed["exact"] + 2
    cfg_file = tmp_path / "prog.yaml"
    cfg_file.write_text(json.dumps(CFG))
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert cli.main(["status", str(cfg_file)]) == 0
    finally:
        os.chdir(cwd)
    assert capsys.readouterr().out.strip() == line


def test_mc_progress_reports_every_point_step_once():
    """The hook's ticks add up to :func:`mc.work_steps`, for points of different lengths
    stacked together and for unequal batch sizes (the direct student's own run).

    Mutations caught: ticks of the finished points counted again after they stop (sum too
    large), the final partial stretch not reported (sum too small), the direct student's
    separate run left out of ``work_steps``."""
    points = [make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": N, "n": 600, "sigma2": 0.1,
                          "d": 8}) for N in (300, 1000)]
    points.append(make_point({"alpha_t": 1.5, "alpha_s": 2.0, "N": 800, "n": 800,
                              "sigma2": 0.1, "d": 8, "batch_t": 4}))
    ticks: list[int] = []
    with mc.reporting(ticks.append):
        mc.simulate(points, 2, 0, "cpu", "float32", np.array([0, 10]))
    assert all(t >= 0 for t in ticks)
    assert sum(ticks) == mc.work_steps(points) > 0
    assert mc.work_steps(points) == sum(p.steps_t + p.steps_s for p in points) \
        + points[2].steps_direct
