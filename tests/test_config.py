"""The typed config: the generated schema, and every bad input refused before compute with the
key, what is allowed and (where ktsweep reads the file) the file and line."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
from e2e import REPO, snakemake, write_config
from hypothesis import given, settings
from hypothesis import strategies as st

from ktsweep.model.params import MAX_D, MAX_SAMPLES
from ktsweep.sweep import config as cfgmod
from ktsweep.sweep import runner, store
from ktsweep.sweep.config import ConfigError
from ktsweep.sweep.layout import Layout, load_config

BASE = """\
name: t
grid:
  alpha_t: [1.5, 2.0]
  N: [64, 128]
fixed:
  alpha_s: 2.0
  n: 64
  sigma2: 0.1
  d: 8
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_committed_schema_is_the_generated_one() -> None:
    """Mutation: adding a key to a model (or editing the YAML by hand) without
    ``--write-schema`` leaves the committed file stale, and this fails."""
    committed = (REPO / "ktsweep" / cfgmod.SCHEMA_FILE).read_text()
    assert committed == cfgmod.schema_text(), \
        "run: python -m ktsweep.sweep.config --write-schema"
    linked = REPO / "workflow" / "schemas" / "config.schema.yaml"
    assert linked.resolve() == (REPO / "ktsweep" / cfgmod.SCHEMA_FILE).resolve()


@pytest.mark.parametrize("path", sorted([*(REPO / "config").rglob("*.yaml"),
                                         REPO / "tests" / "configs" / "tiny.yaml"]),
                         ids=lambda p: p.name)
def test_shipped_configs_pass_schema_and_models(path: Path) -> None:
    """The generated schema accepts what the models accept (a schema generated with a
    wrong type for, say, ``grid`` values would refuse the shipped configs)."""
    data = yaml.safe_load(path.read_text())
    jsonschema.Draft202012Validator(cfgmod.json_schema()).validate(data)
    assert Layout.from_file(path).n_points >= 1


def test_gamma0_axis_runs(tmp_path) -> None:
    """γ0 as a grid axis (documented) makes a cube: the axis holds the requested value, the
    used step size is ``gamma0_t_used``.

    Mutation: the store naming the used step ``gamma0_t`` again crashes init_cube with
    "found in both data_vars and coords"."""
    layout = Layout.from_config({
        "name": "g", "grid": {"gamma0_t": [0.1, {"scale": 0.3}, {"tune": [0.05, 0.2]}]},
        "fixed": {"alpha_t": 1.5, "alpha_s": 2.0, "N": 32, "n": 32, "sigma2": 0.1, "d": 6},
        "jobs": {"threads": 1}})
    path = tmp_path / "cube.zarr"
    store.init_cube(layout, path)
    runner.run_chunk(layout, "c00000", path, threads=1, processes=False, report=lambda s: None)
    ds = store.open_cube(path)
    assert list(ds["gamma0_t"].values) == ["0.1", '{"scale":0.3}', '{"tune":[0.05,0.2]}']
    used = ds["gamma0_t_used"].values
    lam_sum = float(np.sum(np.arange(1, 7) ** -1.5))
    assert used[0] == pytest.approx(0.1) and used[1] == pytest.approx(0.3 / lam_sum)
    assert used[2] in (0.05, 0.2)
    assert (ds["status"].values == 1).all()


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "../x", "a/b", ""])
def test_names_stay_inside_results(name: str) -> None:
    """Mutation: the old pattern ``^[A-Za-z0-9_.-]+$`` admits ``..`` and writes the cube into
    the repository root."""
    with pytest.raises(ConfigError, match="'name'"):
        cfgmod.parse({"name": name, "grid": {"N": [1]}})


def test_numeric_strings_become_numbers(tmp_path) -> None:
    """YAML 1.1 reads ``6.4e1`` as text; the config converts it, so the coordinate is numeric
    and ``ds.sel(N=256)`` works. Mutation: dropping the conversion makes N a text axis."""
    text = BASE.replace("N: [64, 128]", "N: [6.4e1, 2.56e2]").replace("d: 8", "d: 8e0")
    layout = Layout.from_file(write(tmp_path, text))
    assert layout.axes["N"] == [64, 256] and layout.fixed["d"] == 8
    ds = store.template(layout)
    assert ds["N"].dtype == np.float64
    assert ds.sel(N=256).sizes["alpha_t"] == 2


@pytest.mark.parametrize("values", ['[64, "64"]', "[100, 1e2]", "[64, 64.0]"])
def test_duplicates_are_found_after_conversion(tmp_path, values: str) -> None:
    """Mutation: comparing the raw YAML values misses ``[64, "64"]`` and ``[100, 1e2]``."""
    path = write(tmp_path, BASE.replace("N: [64, 128]", f"N: {values}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:4:" in str(err.value) and "grid.N" in str(err.value)
    assert "unique" in str(err.value)


def test_duplicated_yaml_key_names_both_lines(tmp_path) -> None:
    """Mutation: reading with yaml.safe_load lets the second ``n`` win silently."""
    path = write(tmp_path, BASE + "  n: 128\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:10:" in str(err.value) and "fixed.n" in str(err.value)
    assert "line 7" in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path) -> None:
    path = write(tmp_path, BASE.replace("N: [64, 128]", "N: [64, 128"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:") and "not valid YAML" in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ("d: 8", "d: 1e9", 9, ["'d'", f"1..{MAX_D}"]),
        ("N: [64, 128]", "N: [64, 1e20]", 4, ["'N'", "2^40"]),
        ("N: [64, 128]", "N: [64, 128]\n  gamma0_t: [{scale: -1}]", 5, ["gamma0_t", "c > 0"]),
        ("N: [64, 128]", "N: [64, 128]\n  gamma0_t: [{scal: 1}]", 5,
         ["gamma0_t", "{scale: c} or {tune: [g1, g2, ...]}", "scal"]),
        ("N: [64, 128]", "N: [64, 128]\n  gamma0_t: [{tune: []}]", 5, ["gamma0_t", "non-empty"]),
        ("d: 8", "d: 8\nmc: {replicates: 1e7}", 10, ["mc.replicates", "less than or equal"]),
        ("d: 8", "d: 8\nmc: {seed: -5}", 10, ["mc.seed", "greater than or equal to 0"]),
        ("d: 8", "d: 8\njobs:\n  threads: 0", 11, ["jobs.threads", "greater than or equal"]),
        ("d: 8", "d: 8\nmethods: [exact, mc]\nmc: {stride: {N: 0}}", 11, ["mc.stride.N"]),
        # moved here from the workflow test (one Snakemake start each): the same loader
        ("sigma2: 0.1", "sigma: 0.1", 8, ["sigma", "sigma2"]),
        ("d: 8", "d: 8\nmethods: [exact, montecarlo]", 10, ["methods", "montecarlo"]),
        ("d: 8", "d: 8\nmc: {replicates: 0}", 10, ["mc.replicates", "greater than or equal to 1"]),
    ],
)
def test_bad_values_name_key_file_and_line(tmp_path, old, new, line, words) -> None:
    """Each bad input is refused at load time (before any compute) with its line.

    Mutations: dropping the d or N limit in make_point (d: 1e9 then allocates 8 GB per
    vector in ``ktsweep plan``); losing the line lookup for nested keys."""
    path = write(tmp_path, BASE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}:{line}:"), text
    for w in words:
        assert w in text, text


def test_monte_carlo_memory_is_checked_before_compute(tmp_path) -> None:
    """A job's Monte Carlo tasks must fit jobs.mem_mb: d = 10^4 with 2^20 replicates needs
    terabytes and is refused at load time, naming the keys to change.

    Mutation: dropping _check_memory lets ``ktsweep plan`` accept it and the run allocate."""
    text = BASE.replace("d: 8", "d: 10000\nmethods: [exact, mc]\nmc:\n  replicates: 1048576")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f":{12}:" in str(err.value) and "the largest job ktsweep requests" in str(err.value)
    given = text.replace("mc:\n", "jobs:\n  mem_mb: 4000\nmc:\n")
    with pytest.raises(ConfigError, match="jobs.mem_mb = 4000"):
        load_config(write(tmp_path, given))
    ok = BASE.replace("d: 8", "d: 1000\nmethods: [exact, mc]\nmc:\n  replicates: 64")
    assert load_config(write(tmp_path, ok)).mc.replicates == 64


def test_limits_admit_large_horizons() -> None:
    """N, n up to 2^40 pass the config (the exact engine's large horizons)."""
    c = Layout.from_config({"name": "big", "grid": {"N": [MAX_SAMPLES]},
                            "fixed": {"alpha_t": 2, "alpha_s": 2, "n": MAX_SAMPLES,
                                      "sigma2": 0.1, "d": MAX_D}})
    assert c.max_steps == MAX_SAMPLES


def test_plan_refuses_bad_file_without_traceback(tmp_path, capsys) -> None:
    from ktsweep import cli as ktsweep_cli

    path = write(tmp_path, BASE + "  n: 128\n")
    assert ktsweep_cli.main(["plan", str(path)]) == 2
    assert f"{path}:10:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["N=1e20"], ["'N'", "2^40"]),
        (["d=1e9"], ["'d'", "1..10000"]),
        (["--seed", "-5"], ["--seed", "-5", "greater than or equal to 0"]),
        (["--replicates", "0"], ["--replicates", "greater than or equal to 1"]),
        (["--replicates", "1048576", "d=10000"], ["--replicates", "GiB", "lower"]),
        (["gamma0_t={scale: 0}"], ["gamma0_t", "c > 0"]),
    ],
)
def test_point_refuses_bad_input_cleanly(args, words, capsys) -> None:
    """Each refused with exit status 2 and a message naming the key (an uncaught
    OverflowError or MemoryError would propagate here instead).

    Mutation: building MCSettings straight from the flags lets ``--seed -5`` through."""
    from ktsweep import cli as ktsweep_cli

    base = {"alpha_t": "1.5", "alpha_s": "2", "N": "16", "n": "16", "sigma2": "0.1", "d": "4"}
    for a in args:
        if "=" in a:
            base.pop(a.split("=")[0], None)
    flags = [a for a in args if "=" not in a]
    given = [a for a in args if "=" in a] + [f"{k}={v}" for k, v in base.items()]
    assert ktsweep_cli.main(["point", *given, "--method", "mc", *flags]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err


def test_point_and_sweep_share_checkpoints(tmp_path, capsys) -> None:
    """One checkpoint rule: the direct student runs N / batch_s steps, more than the teacher
    (N / batch_t) and the T2S student (n / batch_s) here.

    Mutation: ``ktsweep point`` back on max(steps_t, steps_s) gives it fewer checkpoints than
    the sweep's cube for the same single point."""
    import json

    values = {"alpha_t": 1.5, "alpha_s": 2.0, "N": 256, "n": 32, "sigma2": 0.1, "d": 4,
              "batch_t": 4}
    layout = Layout.from_config({"name": "one", "grid": {"N": [256]},
                                 "fixed": {k: v for k, v in values.items() if k != "N"}})
    from ktsweep import cli as ktsweep_cli

    assert ktsweep_cli.main(["point", *(f"{k}={v}" for k, v in values.items()), "--json",
                             "--curves"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == layout.checkpoints.tolist()
    assert layout.checkpoints[-1] >= 256


def test_workflow_rereads_the_file_for_duplicates_and_lines(tmp_path) -> None:
    """Snakemake's own parse lets a duplicated key win; the workflow re-reads the file.

    Mutation: validating only Snakemake's ``config`` dict passes this config silently."""
    cfg = write_config(tmp_path / "dup.yaml")
    cfg.write_text(cfg.read_text() + "name: other\n")
    out = snakemake(tmp_path, "--configfile", str(cfg), "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "given twice" in text and f"{cfg}:" in text, text
    assert "Traceback" not in text


@pytest.mark.slow  # documents Snakemake's own messages (two Snakemake starts)
def test_missing_config_file_messages(tmp_path) -> None:
    """What config/README.md documents: without ``--configfile`` and without
    config/config.yaml in the working directory the workflow stops cleanly; a ``--configfile``
    that does not exist is reported by Snakemake's own parse (before any ktsweep code runs)
    with a FileNotFoundError naming the path."""
    out = snakemake(tmp_path, "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "config/config.yaml" in text and "Traceback" not in text
    out = snakemake(tmp_path, "--configfile", str(tmp_path / "absent.yaml"), "-n", check=False)
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "FileNotFoundError" in text and "absent.yaml" in text


def test_n_inf_survives_the_layout_file() -> None:
    """n: .inf (grid or fixed) comes back as inf from the layout JSON the workflow writes and
    init-cube reads. Mutation: pydantic's default JSON mode writes inf as null, and the layout
    file is then refused ('expected a number ..., got None'): every n = inf sweep broke."""
    layout = Layout.from_config({"name": "lim", "grid": {"N": [64, 128], "n": [64, float("inf")]},
                                 "fixed": {"alpha_t": 1.5, "alpha_s": 2.0, "sigma2": 0.1,
                                           "d": 10}})
    back = Layout.from_json(layout.to_json())
    assert back.axes["n"] == [64, float("inf")]
    fixed = Layout.from_config({"name": "lim", "grid": {"N": [64, 128]},
                                "fixed": {"alpha_t": 1.5, "alpha_s": 2.0, "sigma2": 0.1,
                                          "d": 10, "n": float("inf")}})
    assert Layout.from_json(fixed.to_json()).fixed["n"] == float("inf")


def test_estimators_listed_once() -> None:
    """``methods: [exact, exact]`` once planned 16 evaluations for 8 points. Planted bug: the
    uniqueness validator dropped (the config passes)."""
    with pytest.raises(ConfigError, match="'exact' is listed twice"):
        Layout.from_config({"name": "a", "grid": {"N": [10]}, "methods": ["exact", "exact"],
                            "fixed": {"alpha_t": 1.5, "alpha_s": 2, "n": 10, "sigma2": 0.1}})


@pytest.mark.parametrize(("grid", "fixed", "mc", "path"), [
    ({"N": [200, float("inf")]}, {"n": 100}, {}, ("mc", "subgrid")),
    ({"N": [200]}, {"n": "inf"}, {}, ("fixed", "n")),
    ({"N": [200], "n": [100, ".inf"]}, {}, {"stride": {"N": 1}}, ("mc", "subgrid")),
])
def test_monte_carlo_at_infinite_samples_is_refused(grid, fixed, mc, path) -> None:
    """A cube with Monte Carlo at N or n = inf could never complete (its rule failed with
    ``missing: {mc: 4}`` on every rerun); refused at plan time, and accepted once the sub-grid
    leaves inf out. Planted bugs: the check skipped; the check ignoring the sub-grid."""
    cfg = {"name": "a", "grid": {**grid, "alpha_t": [1.5]}, "methods": ["exact", "mc"],
           "fixed": {"alpha_s": 2, "sigma2": 0.1, "d": 8, **fixed}, "mc": mc}
    with pytest.raises(ConfigError, match="cannot simulate infinitely many") as err:
        Layout.from_config(cfg)
    assert err.value.path == path
    infinite = {"inf", ".inf", str(float("inf"))}
    axis = next((a for a in ("N", "n") if {str(v) for v in grid.get(a, [])} & infinite), None)
    if axis:
        finite = [v for v in grid[axis] if str(v) not in infinite]
        Layout.from_config({**cfg, "mc": {"subgrid": {axis: finite}}})


def test_job_graph_too_large_is_refused_before_it_is_built(monkeypatch) -> None:
    """2000 x 2000 x 2 points once went on to a 3.5 GB job graph; more than MAX_JOBS jobs is
    refused with the memory estimate and the points_per_job that fits, after building a few
    hundred points, not eight million. Planted bugs: the per-point check walking the whole
    product (8 million points built); the size check left out."""
    from ktsweep.model import params
    from ktsweep.sweep import layout as layout_module
    from ktsweep.sweep.layout import MAX_JOBS

    built = []
    real = params.make_point

    def counting(values):
        built.append(1)
        return real(values)

    monkeypatch.setattr(layout_module, "make_point", counting)
    cfg = {"name": "a", "grid": {"N": list(range(1, 2001)), "n": list(range(1, 2001)),
                                 "alpha_t": [1.5, 2.0]},
           "fixed": {"alpha_s": 2, "sigma2": 0.1, "d": 8}, "jobs": {"points_per_job": 16}}
    with pytest.raises(ConfigError, match=r"GiB to plan more than .* raise "
                       r"jobs.points_per_job to at least (\d+)") as err:
        Layout.from_config(cfg)
    assert len(built) < 10_000, f"{len(built)} points built to plan"
    need = int(str(err.value).rsplit("at least ", 1)[1].split()[0])
    assert -(-8_000_000 // need) <= MAX_JOBS


def test_settings_no_point_reads_are_warned_about() -> None:
    """amplitude with only the gaussian target is ignored: a warning, not an error; with a
    lowdim point on the grid it is read (no warning). alpha <= 1 is outside the theory.
    Planted bug: the warning given whenever amplitude is set."""
    from ktsweep.sweep.layout import config_warnings

    base = {"name": "a", "grid": {"N": [10], "alpha_t": [1.0, 1.5]},
            "fixed": {"alpha_s": 2, "n": 10, "sigma2": 0.1, "amplitude": 0.1, "k_dagger": 2}}
    warned = config_warnings(Layout.from_config(base))
    assert any("'amplitude' = 0.1 is ignored" in w for w in warned)
    assert any("'k_dagger' = 2 is ignored" in w for w in warned)
    assert any("alpha_t = 1 <= 1" in w for w in warned)
    mixed = {**base, "grid": {**base["grid"], "target": ["gaussian", "lowdim"]}}
    assert not [w for w in config_warnings(Layout.from_config(mixed)) if "ignored" in w]


_CHOICES: dict[str, list[Any]] = {
    "d": [10, 5, 2], "k_dagger": [1, 6, 3, 12], "target": ["gaussian", "lowdim"],
    "N": [4, 16], "batch_t": [3, 1], "horizon_t": [16, 5], "r_s": [1, 8, 4],
    "n": [8, 32], "batch_s": [4, 2], "horizon_s": [30, 4], "angle": [0.0, 30.0],
    "mixing_seed": [1], "mixing_dim": [2, 9, 4],
}
"""Values each valid with the others' first values, and invalid in some combinations."""


_INTERACTING = (("N", "batch_t", "horizon_t"), ("n", "batch_s", "horizon_s"),
                ("d", "k_dagger", "target"), ("d", "r_s"), ("d", "mixing_seed", "mixing_dim"),
                ("d", "angle"))
"""Parameters whose values fail only together (the test's own list, independent of COUPLED)."""


@st.composite
def _grid_spec(draw):
    spec = draw(st.dictionaries(st.sampled_from(sorted(_CHOICES)), st.tuples(
        st.sampled_from([True, True, True, False]),
        st.lists(st.integers(0, 3), min_size=2, max_size=3, unique=True)), max_size=3))
    for name in draw(st.sampled_from(_INTERACTING)):  # one interacting set, all as axes
        spec[name] = (True, list(range(len(_CHOICES[name]))))
    return spec


@given(_grid_spec())
@settings(max_examples=150, derandomize=True, deadline=None, database=None)
def test_grid_check_walks_what_the_whole_product_would_find(spec) -> None:
    """The planner validates a grid by its axis values and the products within each group of
    parameters checked together (COUPLED), never the whole product; on random small grids it
    refuses exactly the grids some point of the whole product is invalid on. Planted bugs: a
    group left out of COUPLED (e.g. the horizon's: horizon_t < N / batch_t found only at one
    combination), the axis walk skipping the values after the first."""
    from ktsweep.model.params import ParameterError, make_point
    from ktsweep.sweep.layout import point_values

    grid: dict[str, list[Any]] = {"alpha_t": [1.5]}
    fixed: dict[str, Any] = {"alpha_s": 2.0, "sigma2": 0.1, "N": 16, "n": 8}
    for name, (as_axis, picks) in spec.items():
        values = [_CHOICES[name][i % len(_CHOICES[name])] for i in picks]
        values = list(dict.fromkeys(values))
        if as_axis:
            grid[name] = values
            fixed.pop(name, None)
        else:
            fixed[name] = values[0]
    whole_ok = True
    for combo in itertools.product(*grid.values()):
        try:
            make_point(point_values(fixed, dict(zip(grid, combo, strict=True)), {}))
        except ParameterError:
            whole_ok = False
            break
    try:
        Layout.from_config({"name": "g", "grid": grid, "fixed": fixed})
        planned_ok = True
    except ConfigError:
        planned_ok = False
    assert planned_ok == whole_ok, (grid, fixed)


_COSTLY = {"name": "costly", "methods": ["exact", "mc"],
           "grid": {"d": [8, 16], "gamma0_t": [0.05, {"tune": [0.02, 0.05, 0.1]}],
                    "angle": [0, 30], "N": [64, 256], "batch_s": [1, 4]},
           "fixed": {"alpha_t": 1.5, "alpha_s": 2.0, "n": 128, "sigma2": 0.1,
                     "inputs": "rademacher"}, "mc": {"subgrid": {"N": [64]}}}
"""A grid on which every parameter the costs read varies (d, a tune list, a rotated student
with non-Gaussian inputs, the batch, the Monte Carlo sub-grid)."""


@pytest.mark.parametrize("path", ["tests/configs/tiny.yaml", "config/config.yaml",
                                  "config/theory/misalignment.yaml", "costly"])
def test_plan_sums_what_walking_every_point_sums(path) -> None:
    """``ktsweep plan`` counts evaluations and work over the distinct combinations of the
    parameters each cost reads, never over the whole grid; on shipped configs the sums equal
    those of a walk over every point. Planted bugs: a parameter the exact cost reads left out
    of COST_PARAMS (a tune list's length, d); the Monte Carlo count ignoring the sub-grid."""
    from ktsweep.sweep import costs

    layout = (Layout.from_config(_COSTLY) if path == "costly"
              else Layout(load_config(str(REPO / path))))
    info = costs.plan(layout, calibrate_here=False)
    from ktsweep.engines import cost

    counts = {m: 0 for m in layout.methods}
    work = {m: 0.0 for m in layout.methods}
    for idx, p in layout.iter_points():
        for m in layout.methods:
            if m == "mc" and not layout.mc_selected(idx):
                continue
            counts[m] += 1
            if m == "mc":
                work[m] += cost.mc_seconds(cost.Work.of(p), layout.config.mc.replicates)
            elif m == "exact" or "exact" not in layout.methods:
                work[m] += cost.exact_seconds(cost.Work.of(p))
    assert info["evaluations"] == counts
    assert info["nominal_seconds"] == pytest.approx(work, rel=1e-12)


_VALID: dict[str, list[Any]] = {
    "alpha_s": [2.0, 3.0], "sigma2": [0.1, 0.5], "N": [16, 64], "n": [8, 32],
    "batch_s": [1, 2], "d": [12, 8], "angle": [0.0, 30.0], "mixing_seed": [1, 2],
    "target": ["gaussian", "power"], "inputs": ["gaussian", "rademacher"],
}
"""Values valid in any combination: grids for the chunk points' fast path."""


@given(st.dictionaries(st.sampled_from(sorted(_VALID)), st.booleans(), min_size=1,
                       max_size=5))
@settings(max_examples=60, derandomize=True, deadline=None, database=None)
def test_chunk_points_equal_fully_validated_points(spec) -> None:
    """A chunk job builds its points from the grid's first point and each axis's resolved
    values instead of validating every point again; on random grids every point equals the
    one make_point resolves (γ0 maps sorted, defaults filled, ties followed). Planted bugs: a
    tied parameter left at the first point's value; the fast path taken where d is an axis
    and a mixing's dimension follows it."""
    from ktsweep.model.params import make_point
    from ktsweep.sweep.layout import point_values

    grid: dict[str, list[Any]] = {"alpha_t": [1.5, 2.0], "gamma0_t": [0.1, {"tune": [0.2, 0.1]}]}
    fixed: dict[str, Any] = {"alpha_s": 2.0, "sigma2": 0.1, "N": 16, "n": 8, "d": 10}
    for name, as_axis in spec.items():
        if as_axis:
            grid[name] = _VALID[name]
            fixed.pop(name, None)
        else:
            fixed[name] = _VALID[name][-1]
    layout = Layout.from_config({"name": "g", "grid": grid, "fixed": fixed,
                                 "tie": {"gamma0_s": "gamma0_t"},
                                 "jobs": {"points_per_job": 7}})
    for chunk in layout.chunk_ids():
        index, points = layout.chunk_points(chunk)
        for i, p in zip(index, points, strict=True):
            assert p == make_point(point_values(layout.fixed, layout.values_at(i), layout.tie))
