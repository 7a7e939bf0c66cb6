"""Config → layout (validation, chunks, sub-grids, keys), the plan, and the cube store."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ktsweep.sweep import runner as sweep
from ktsweep.sweep import store
from ktsweep.sweep.costs import plan
from ktsweep.sweep.layout import ConfigError, Layout


def config(**changes) -> dict:
    cfg = {
        "name": "t",
        "grid": {"alpha_t": [1.5, 2.0], "alpha_s": [1.5, 2.0, 3.0], "N": [64, 128]},
        "fixed": {"n": 128, "sigma2": 0.1, "d": 12},
        "methods": ["exact", "mc", "bound"],
        "mc": {"replicates": 4, "subgrid": {"N": [128]}},
        "jobs": {"points_per_job": 4, "points_per_task": 2, "threads": 1},
    }
    cfg.update(changes)
    return cfg


def test_chunks_tile_the_grid_exactly_once() -> None:
    layout = Layout.from_config(config())
    assert layout.shape == (2, 3, 2) and layout.n_points == 12
    seen = []
    for chunk in layout.chunk_ids():
        idx, points = layout.chunk_points(chunk)
        assert len(idx) == len(points) <= 4
        seen += idx
    assert sorted(seen) == sorted(np.ndindex(*layout.shape))
    with pytest.raises(ValueError, match="does not exist"):
        layout.chunk_slices("c99999")


def test_explicit_chunk_lengths_and_dimension_order() -> None:
    layout = Layout.from_config(config(jobs={"chunks": {"alpha_t": 2}, "points_per_job": 4}))
    assert layout.chunks[0] == 2
    again = Layout.from_json(layout.to_json())
    assert list(again.axes) == ["alpha_t", "alpha_s", "N"]  # config order, not sorted
    assert again.layout_key() == layout.layout_key()


def test_mc_subgrid_and_stride() -> None:
    layout = Layout.from_config(config(mc={"subgrid": {"N": [128]}, "stride": {"alpha_s": 2}}))
    chosen = [idx for idx in np.ndindex(*layout.shape) if layout.mc_selected(idx)]
    assert chosen == [(a, s, 1) for a in range(2) for s in (0, 2)]


def test_tie_makes_a_line() -> None:
    cfg = config(grid={"alpha_t": [1.5, 2.5], "N": [64]}, tie={"alpha_s": "alpha_t"}, mc={})
    layout = Layout.from_config(cfg)
    assert [p.alpha_s for _, p in layout.iter_points()] == [1.5, 2.5]


def test_keys_separate_layout_from_results() -> None:
    base = Layout.from_config(config())
    rechunked = Layout.from_config(config(jobs={"points_per_job": 2}))
    more = Layout.from_config(config(grid={**config()["grid"], "alpha_t": [1.5, 2.0, 2.5]}))
    reseeded = Layout.from_config(config(mc={"seed": 5}))
    assert rechunked.result_key() == base.result_key() != reseeded.result_key()
    assert more.result_key() == base.result_key()
    assert len({base.layout_key(), rechunked.layout_key(), more.layout_key()}) == 3


def test_mc_kernel_is_part_of_the_result_key() -> None:
    """A kernel draws its own stream, so fused and auto results never share a cube with
    torch's; torch, the default, is left out of the key, which keeps the keys of cubes made
    before the choice existed.

    Planted bugs caught: the kernel left out of result_fields (fused shares torch's key);
    torch kept in it (the default's key moves, so the explicit and implicit torch differ only
    if the default changes: caught by the field check)."""
    base = Layout.from_config(config())
    keys = {k: Layout.from_config(config(mc={**config()["mc"], "kernel": k})).result_key()
            for k in ("torch", "fused", "auto")}
    assert keys["torch"] == base.result_key()
    assert len({keys["torch"], keys["fused"], keys["auto"]}) == 3
    assert "kernel" not in base.config.mc.result_fields()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"fixed": {"n": 128, "sigma2": 0.1, "d": 12, "N": 5}}, ["'N'", "grid, fixed"]),
        ({"tie": {"alpha_s": "alpha_t"}}, ["'alpha_s'", "given twice"]),
        ({"grid": {"alpha_t": [1.5], "N": [64]}, "tie": {"alpha_s": "beta"}, "mc": {}},
         ["tie.alpha_s", "not a grid axis"]),
        ({"mc": {"subgrid": {"N": [999]}}}, ["mc.subgrid.N", "999"]),
        ({"mc": {"stride": {"d": 2}}}, ["mc.stride.d", "not a grid axis"]),
        ({"grid": {"alpha_t": [1.5, 1.5], "alpha_s": [2], "N": [64]}}, ["grid.alpha_t", "unique"]),
        ({"fixed": {"n": 128, "d": 12}}, ["'sigma2'", "required"]),
        ({"jobs": {"points_per_job": 0}}, ["jobs.points_per_job", "greater than or equal to 1"]),
        ({"outputs": {"modes": "yes"}}, ["outputs.modes", "valid boolean"]),
        ({"name": "a b"}, ["name", "should match pattern"]),
    ],
)
def test_config_errors_name_the_key(change: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        Layout.from_config(config(**change))
    for w in words:
        assert w in str(err.value)


def test_plan_counts_and_cli(tmp_path) -> None:
    layout = Layout.from_config(config())
    info = plan(layout, calibrate_here=False)
    assert info["points"] == 12 and info["jobs"] == layout.n_chunks
    assert info["evaluations"] == {"exact": 12, "mc": 6, "bound": 12}
    assert info["store_bytes"] > 0
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config()))  # JSON is YAML
    out = subprocess.run([sys.executable, "-m", "ktsweep.cli", "plan", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["cpu_seconds_total"] > 0 and set(info["cpu_seconds"]) == {"exact", "mc", "bound"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ngrid: {alpha_t: [1]}\nfixed: {alpha_s: 1, N: 1, n: 1, sigma: 1}\n")
    out = subprocess.run([sys.executable, "-m", "ktsweep.cli", "plan", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "sigma" in out.stderr and "Traceback" not in out.stderr


def _fill(layout: Layout, path) -> None:
    """Compute every chunk of ``layout`` into the cube at ``path`` in this process."""
    for chunk in layout.chunk_ids():
        sweep.run_chunk(layout, chunk, path, threads=1, processes=False, report=lambda s: None)


def test_cubes_are_content_addressed_and_never_mixed(tmp_path) -> None:
    """Each identity gets its own cube; a new grid copies committed points of a sibling.

    Mutations caught: cube_key ignoring fixed values (A and B share a cube, B's numbers
    overwrite A's); copying from a cube of other physics; init_cube modifying or deleting
    the narrower/older cube; copied chunks lacking a new method's files (then read as
    damaged and recomputed: found by this test, fixed by _fill_committed_chunks).
    """
    small = Layout.from_config(config(methods=["exact"]))
    path = store.cube_path(small, tmp_path)
    assert store.init_cube(small, path) == "created"
    _fill(small, path)
    before = store.open_cube(path).load()
    assert store.init_cube(small, path) == "unchanged"
    bigger = Layout.from_config(config(methods=["exact", "bound"],
                                       grid={**config()["grid"], "N": [64, 128, 256]}))
    big = store.cube_path(bigger, tmp_path)
    assert big != path
    assert store.init_cube(bigger, big) == "created; 12 committed points copied from " + path.name
    after = store.open_cube(big)
    kept = after.sel(N=[64.0, 128.0]).load()
    np.testing.assert_array_equal(kept["risk_t2s"].values, before["risk_t2s"].values)
    assert (after["status"].sel(N=256.0).values == 0).all()
    assert (after["bound_status"].values == 0).all()  # a new method starts missing
    done = [sweep.run_chunk(bigger, c, big, threads=1, processes=False, report=lambda s: None)
            for c in bigger.chunk_ids()]
    assert sum(d["computed"]["exact"] for d in done) == 6  # only N = 256; copies are kept
    assert sum(d["computed"]["bound"] for d in done) == 18 and not any(d["damage"] for d in done)
    other = Layout.from_config(config(methods=["exact"], fixed={"n": 64, "sigma2": 0.1,
                                                                "d": 12}))
    assert store.cube_path(other, tmp_path) != path
    assert store.init_cube(other, store.cube_path(other, tmp_path)) == "created"
    assert (store.open_cube(store.cube_path(other, tmp_path))["status"].values == 0).all()
    again = store.open_cube(path).load()  # the first cube is untouched by all of this
    np.testing.assert_array_equal(again["risk_t2s"].values, before["risk_t2s"].values)


def test_broken_store_gives_a_clear_error(tmp_path) -> None:
    with pytest.raises(store.StoreError, match="no cube"):
        store.open_cube(tmp_path / "missing.zarr")
    junk = tmp_path / "junk.zarr"
    junk.mkdir()
    (junk / "zarr.json").write_text("{not json")
    with pytest.raises(store.StoreError, match="move it aside"):
        store.open_cube(junk)
    layout = Layout.from_config(config())
    other = tmp_path / "other.zarr"
    store.init_cube(Layout.from_config(config(jobs={"points_per_job": 2})), other)
    with pytest.raises(store.StoreError, match="another config"):
        sweep.run_chunk(layout, "c00000", other, report=lambda s: None)


def test_cube_under_construction_is_never_taken_for_a_cube(tmp_path) -> None:
    """A killed init leaves only a hidden temporary directory, removed by the next init.

    Mutation caught: writing the template straight to the final path (a half-built cube
    would then read as "unchanged").
    """
    layout = Layout.from_config(config(methods=["exact"]))
    path = store.cube_path(layout, tmp_path)
    path.parent.mkdir(parents=True)
    half = path.with_name(f".{path.name}.tmp-dead")
    half.mkdir()
    (half / "zarr.json").write_text("{}")
    assert store.init_cube(layout, path) == "created"
    assert not half.exists() and store.check_metadata(path, layout) == []


def test_damage_is_found_by_name_and_recomputed(tmp_path) -> None:
    """Deleted, flipped, swapped chunks and a deleted variable are reported by name; a
    reset chunk is recomputed to the same numbers; damage never reads as a number.

    Mutations caught: no crc32c codec (flip reads as a number); no commit record hash
    (a chunk copied over another passes); read_block trusting a block whose data file is
    missing (reads NaN with status ok); repair not dropping the status (chunk never reruns).
    """
    layout = Layout.from_config(config(methods=["exact", "bound"]))
    path = store.cube_path(layout, tmp_path)
    store.init_cube(layout, path)
    _fill(layout, path)
    clean = store.open_cube(path).load()
    assert store.verify(path)["problems"] == []
    files0 = store.chunk_files(path, layout, "c00000")
    files1 = store.chunk_files(path, layout, "c00001")
    flip = bytearray(files0["risk_t2s"].read_bytes())
    flip[len(flip) // 2] ^= 1
    files0["risk_t2s"].write_bytes(bytes(flip))
    files1["der"].write_bytes(store.chunk_files(path, layout, "c00002")["der"].read_bytes())
    files1["bound_t2s"].unlink()
    report = store.verify(path)
    assert report["damaged_chunks"] == ["c00000", "c00001"]
    text = "\n".join(report["problems"])
    for words in ("c00000: variable risk_t2s", "c00001: variable der",
                  "c00001: variable bound_t2s"):
        assert words in text, text
    quick = store.verify(path, full=False)
    assert quick["damaged_chunks"] == ["c00000", "c00001"]
    for chunk in ("c00000", "c00001"):  # what a rerun of the job sees, records aside
        block, damage = store.read_block(path, layout, chunk)
        assert damage and (block["status"] == 0).all() and np.isnan(block["der"]).all()
    store.repair(path, report)
    assert store.verify(path)["problems"] == []  # reset chunks are uncommitted, not damaged
    for chunk in report["damaged_chunks"]:
        sweep.run_chunk(layout, chunk, path, threads=1, processes=False, report=lambda s: None)
    fixed = store.open_cube(path).load()
    for name in clean.data_vars:
        np.testing.assert_array_equal(fixed[name].values, clean[name].values, err_msg=name)
    import shutil

    shutil.rmtree(path / "w2s_ratio")
    assert any("w2s_ratio" in p for p in store.verify(path)["problems"])


def test_killed_job_keeps_finished_tasks(tmp_path) -> None:
    """Staged task files of a killed job are used by its rerun, which computes only the rest.

    Mutation caught: run_chunk ignoring the staging area (the rerun recomputes every point).
    """
    layout = Layout.from_config(config(methods=["exact"]))
    path = store.cube_path(layout, tmp_path)
    store.init_cube(layout, path)
    index, points = layout.chunk_points("c00000")
    from ktsweep.engines.dispatch import run

    store.stage(path, "c00000", [0, 1], run(points[:2], ["exact"], layout.checkpoints))
    summary = sweep.run_chunk(layout, "c00000", path, threads=1, processes=False,
                              report=lambda s: None)
    assert summary["staged_tasks_kept"] == 1
    assert summary["computed"] == {"exact": len(points) - 2}
    assert not list(store.staging_dir(path).rglob("*.npz"))


def test_gpu_worker_layout_routes_monte_carlo_to_gpu_workers() -> None:
    """One pinned worker per GPU carrying a GPU resource; mc tasks only land there.

    Runs without a GPU: the cluster is built as for 1 GPU with thread workers, and the
    test checks where dask places resource-annotated tasks (the routing run_chunk uses).
    """
    specs = sweep.worker_specs(threads=3, gpus=2, processes=True)
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["0", "1",
                                                                                      ""]
    assert [s["options"].get("resources") for s in specs.values()] == [{"GPU": 1}, {"GPU": 1},
                                                                       None]
    client, cluster = sweep._client(2, None, processes=False, gpus=1)
    try:
        from distributed import get_worker

        def where(_: int) -> str:
            return get_worker().name

        names = client.gather([client.submit(where, i, pure=False, resources={"GPU": 1})
                               for i in range(6)])
        assert set(names) == {"gpu0"}
    finally:
        client.close()
        cluster.close()


def test_diverged_point_never_reads_as_a_number(tmp_path) -> None:
    """A diverged exact run: status diverged, its risk NaN, the bound verdicts on it
    "undetermined" (not "no"), every flag int8 with flag_values/flag_meanings.

    Mutations caught: sandwich computed as float(lower <= NaN <= upper) = 0 ("no"); flags
    cast with astype(int8) (NaN becomes an arbitrary code); status strings mapped to the
    wrong code.
    """
    from ktsweep.model.cubespec import Flag, Status

    cfg = config(methods=["exact", "bound"], mc={},
                 grid={"alpha_t": [1.5], "alpha_s": [2.0], "N": [64, 128]},
                 fixed={"n": 128, "sigma2": 0.1, "d": 12, "gamma0_t": 50.0})
    layout = Layout.from_config(cfg)
    path = store.cube_path(layout, tmp_path)
    store.init_cube(layout, path)
    _fill(layout, path)
    ds = store.open_cube(path).load()
    ex = ds.sel(estimator="exact")
    assert (ex["status"].values == Status.DIVERGED).all()
    assert np.isnan(ex["risk_teacher"].values).all()
    assert (ds["sandwich_teacher"].values == Flag.UNDETERMINED).all()
    assert ds["sandwich_teacher"].dtype == np.int8
    assert ds["sandwich_teacher"].attrs["flag_meanings"] == "no yes undetermined"
    assert ds["step_condition"].attrs["flag_values"] == [0, 1]
    # tune-edge flags are flags too (int8, not float64 with NaN): not tuned here
    assert ds["tune_edge_t"].dtype == np.int8
    assert (ds["tune_edge_t"].values == Flag.UNDETERMINED).all()
    assert ds["tune_edge_t"].attrs["flag_meanings"] == "no yes undetermined"
    assert ds["status"].attrs["flag_meanings"] == "missing ok diverged"
    assert ds["bound_status"].attrs["flag_meanings"] == "missing computed"
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        Flag.codes(np.array([0.5]))


def test_check_and_gc_commands(tmp_path, capsys, monkeypatch) -> None:
    """`ktsweep check` names damage and exits 1 (0 when intact); `ktsweep gc` lists cubes not
    in use and removes nothing without --yes, keeping the linked cube.

    Mutations caught: check exiting 0 on damage; gc deleting without confirmation or
    deleting the cube in use (it did, comparing a resolved link with relative paths).
    """
    from ktsweep import cli

    monkeypatch.chdir(tmp_path)
    layout = Layout.from_config(config(methods=["exact"], grid={"alpha_t": [1.5], "N": [64]},
                                       fixed={"n": 64, "sigma2": 0.1, "d": 8, "alpha_s": 2.0},
                                       mc={}))
    other = Layout.from_config(config(methods=["exact"], grid={"alpha_t": [1.5], "N": [64]},
                                      fixed={"n": 64, "sigma2": 0.2, "d": 8, "alpha_s": 2.0},
                                      mc={}))
    for lay in (layout, other):
        store.init_cube(lay, store.cube_path(lay))
        _fill(lay, store.cube_path(lay))
    store.link(store.cube_path(layout), store.link_path(layout))
    assert cli.main(["check", "results/t"]) == 0
    victim = store.chunk_files(store.cube_path(layout), layout, "c00000")["risk_t2s"]
    victim.write_bytes(victim.read_bytes()[::-1])
    capsys.readouterr()
    assert cli.main(["check", "results/t"]) == 1
    assert "chunk c00000: variable risk_t2s" in capsys.readouterr().out
    assert cli.main(["gc", "results/t"]) == 0
    out = capsys.readouterr().out
    assert store.cube_path(other).name in out and "nothing removed" in out
    assert store.cube_path(other).exists()
    assert cli.main(["gc", "results/t", "--yes"]) == 0
    assert not store.cube_path(other).exists() and store.cube_path(layout).exists()


def test_per_mode_outputs_only_on_their_subgrid(tmp_path) -> None:
    """``outputs.subgrid`` keeps per-mode risks and learning curves only where it says (a
    large sweep stores them where figures need them); the risks are kept everywhere, and the
    sub-grid is part of the result key (a cube storing them everywhere is another cube).
    Planted bugs: merge ignoring the outputs mask (modes kept everywhere); the mask taken
    from the block's own position instead of the grid's (the wrong chunk's points kept)."""
    layout = Layout.from_config(config(methods=["exact", "mc"],
                                       outputs={"subgrid": {"alpha_s": [2.0], "N": [128]}}))
    path = store.cube_path(layout, tmp_path)
    store.init_cube(layout, path)
    _fill(layout, path)
    ds = store.open_cube(path).load()
    kept = (ds.alpha_s == 2.0) & (ds.N == 128)
    for name in ("mode_t2s", "curve_teacher"):
        exact = ds[name].sel(estimator="exact")
        finite = np.isfinite(exact).any([d for d in exact.dims if d in ("mode", "step")])
        assert (finite == kept.broadcast_like(finite)).all(), name
    assert np.isfinite(ds.risk_t2s.sel(estimator="exact")).all()
    full = Layout.from_config(config(methods=["exact", "mc"]))
    assert full.result_key() != layout.result_key()


def test_file_count_follows_jobs_not_points(tmp_path) -> None:
    """A cube holds one file per job and variable (sharded), plus its skeleton: a grid of 900
    points in one job writes as many chunk files as a grid of 9 points in one job, and a
    second job adds one file per variable. Planted bugs: shards left out (the 900-point cube
    writes a file per inner chunk); the skeleton counted per job."""
    def files(n_alpha: int, per_job: int) -> int:
        cfg = config(methods=["exact"], outputs={"modes": True, "curves": False},
                     jobs={"points_per_job": per_job, "threads": 1},
                     grid={"alpha_t": [1.2 + 0.01 * i for i in range(n_alpha)],
                           "alpha_s": [1.5, 2.0, 3.0], "N": [64, 128, 256]})
        cfg["fixed"] = {"n": 64, "sigma2": 0.1, "d": 400}
        layout = Layout.from_config(cfg)
        path = store.cube_path(layout, tmp_path / f"{n_alpha}-{per_job}")
        store.init_cube(layout, path)
        _fill(layout, path)
        names = store.variables(layout)
        return sum(1 for p in path.rglob("*") if p.is_file() and "/c/" in str(p)
                   and p.relative_to(path).parts[0] in names), len(names), layout.n_chunks

    small, n_vars, jobs = files(1, 900)
    large, _, jobs_large = files(100, 900)
    assert jobs == jobs_large == 1 and small == large == n_vars
    two, _, jobs_two = files(100, 450)
    assert jobs_two == 2 and two == 2 * n_vars


def test_tasks_are_sized_by_their_methods_cost() -> None:
    """With points_per_task: auto, an exact task holds about TASK_SECONDS of the nominal cost
    model and a Monte Carlo task far fewer points (a Monte Carlo point costs hundreds of
    exact ones), each capped at ceil(points / workers) so every worker gets a share.
    Planted bugs: one cap for every method (Monte Carlo tasks as large as exact ones: their
    memory grows with the stack); the cap from the mean over all methods."""
    from ktsweep.engines import cost
    from ktsweep.sweep.layout import TASK_SECONDS

    cfg = config(methods=["exact", "mc"], mc={"replicates": 64},
                 jobs={"points_per_job": 400, "threads": 1},
                 grid={"alpha_t": [1.2 + 0.02 * i for i in range(20)],
                       "alpha_s": [1.5, 2.0], "N": [256, 1024]})
    layout = Layout.from_config(cfg)
    exact, mc = layout.task_points("exact"), layout.task_points("mc")
    assert mc < exact
    per_exact = layout.seconds_by_method["exact"] + cost.POINT_OVERHEAD
    assert exact == min(4096, int(TASK_SECONDS // per_exact))
    index, points = layout.chunk_points("c00000")
    todo = {"exact": list(range(len(points))), "mc": list(range(len(points)))}
    tasks = sweep.make_tasks(layout, points, todo, workers=2)
    sizes = {m: max(len(t.points) for t in tasks if t.methods == (m,)) for m in ("exact", "mc")}
    assert sizes["mc"] <= mc and sizes["exact"] <= exact and sizes["exact"] > sizes["mc"]
