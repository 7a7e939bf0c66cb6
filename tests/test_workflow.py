"""The real workflow end to end: Snakemake + dask + zarr on the tiny config, no mocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from e2e import REPO, assert_cube_equals_direct, private_copy, snakemake, write_config

from ktsweep.sweep.layout import Layout, load_config
from ktsweep.sweep.store import open_cube


def test_progress_is_on_the_console_and_job_logs_are_clean(tiny_run):
    """Snakemake's own output carries one progress line per chunk job, ``ktsweep status``
    reads the finished sweep, and a job log holds ktsweep's lines, not dask's.

    Mutations caught: the rule's ``tail`` dropped (progress only in log files, or an analysis
    rule silent); the job's final line computed as if no job ran (it told a healthy run to
    restart); INFO logging
    of the job (dask's start-up banner and shutdown chatter back in the log); the shutdown
    traceback un-silenced."""
    work, _, _ = tiny_run
    out = (work / "snakemake.out").read_text()
    layout = Layout(load_config(str(work / "tiny.yaml")))
    assert sum("] committed " in line and "chunks committed" in line
               for line in out.splitlines()) == layout.n_chunks
    # a healthy run never tells the user to restart, and every analysis rule says what it did
    assert "stopped" not in out and "start or resume" not in out
    for words in ("points verified and published at", "fits written to",
                  "figures written to", "claims written to"):
        assert words in out, words
    status = subprocess.run([sys.executable, "-m", "ktsweep.cli", "status",
                             str(work / "results" / "tiny")], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert status.stdout.startswith("tiny: 100% (exact 12/12, mc 6/6, bound 12/12)")
    for log in (work / "logs" / "tiny" / "simulate").glob("c*.log"):
        text = log.read_text()
        assert "Traceback" not in text and "Scheduler at" not in text, log
        assert all(line.startswith("[c") for line in text.splitlines()), text


def test_cube_equals_direct_engine_calls(tiny_run):
    work, cfg, _ = tiny_run
    layout = Layout(load_config(str(cfg)))
    cube = work / "results" / "tiny" / "cube.zarr"
    assert_cube_equals_direct(cube, layout)
    ds = open_cube(cube)
    assert ds["risk_t2s"].attrs["long_name"]
    assert "1/2" in ds["risk_t2s"].attrs["note"]
    assert ds.attrs["mc_device"] == "cpu"  # the device Monte Carlo actually ran on
    for key in ("ktsweep_config", "code_version", "package_versions", "created"):
        assert key in ds.attrs
    summary = json.loads((work / "results" / "tiny" / "cube.json").read_text())
    assert summary["missing"] == {}
    assert (work / "results" / "tiny" / "fits.csv").exists()
    claims = (work / "results" / "tiny" / "claims.md").read_text()  # the claim table rule
    assert claims.startswith("# Claims of arXiv 2606.01292") and "kd_sign" in claims


def test_rerun_does_nothing(tiny_run):
    """Mutation caught: a workflow that always reruns the summary (e.g. cube.json removed
    by the plan-time check although nothing changed)."""
    work, cfg, _ = tiny_run
    out = snakemake(work, "--configfile", str(cfg), "-n")
    assert "Nothing to be done" in out.stdout + out.stderr
    markers = sorted((work / "results" / "tiny" / "cubes").rglob("*.commits/c*.json"))
    assert markers
    before = [m.stat().st_mtime_ns for m in markers]
    snakemake(work, "--configfile", str(cfg))
    assert [m.stat().st_mtime_ns for m in markers] == before


def test_extended_grid_computes_only_new_points(tiny_run, tmp_path):
    work, _ = private_copy(tiny_run, tmp_path)
    old = open_cube(work / "results" / "tiny" / "cube.zarr").load()
    bigger = write_config(tmp_path / "bigger.yaml", **{"grid.alpha_t": [1.5, 2.5, 3.5]})
    snakemake(work, "sweep", "--configfile", str(bigger))
    summary = json.loads((work / "results" / "tiny" / "cube.json").read_text())
    # 3 alpha_s x 2 N new points for alpha_t = 3.5; Monte Carlo only where N = 256.
    assert summary["computed"] == {"exact": 6, "mc": 3, "bound": 6}
    new = open_cube(work / "results" / "tiny" / "cube.zarr")
    kept = new.sel(alpha_t=[1.5, 2.5]).load()
    for k in ("risk_t2s", "risk_t2s_se", "status", "bound_t2s"):
        np.testing.assert_array_equal(kept[k].values, old[k].values, err_msg=k)
    assert_cube_equals_direct(work / "results" / "tiny" / "cube.zarr",
                              Layout(load_config(str(bigger))))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"grid.alpha_t": [-1.0, 2.0]}, ["alpha_t", "> 0"]),  # a value the point refuses
        ({"mc.subgrid": {"N": [999]}}, ["mc.subgrid.N", "999"]),  # checked against the grid
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, change, words):
    """The workflow validates the config before any job, without a traceback. Each start of
    Snakemake costs seconds, so the other kinds of bad input (unknown keys, schema bounds)
    are checked on the same loader in test_config.py."""
    cfg = write_config(tmp_path / "bad.yaml", **change)
    out = snakemake(tmp_path, "--configfile", str(cfg), check=False)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    for w in words:
        assert w in text, text
    assert not (tmp_path / "results").exists()
    assert "Traceback" not in text


REPORT_JS = r"""(async () => {
  const html = document.documentElement.outerHTML;
  const re = new RegExp("data:(image/png|image/svg\\+xml|text/csv);charset=utf8;" +
                       "filename=([^;\"']+);base64,([A-Za-z0-9+/=]+)", "g");
  const files = {}; let m;
  while ((m = re.exec(html)) !== null) files[m[2]] = [m[1], m[3]];
  const out = {images: {}, csv: {}};
  for (const [name, [type, data]] of Object.entries(files)) {
    if (type === "text/csv") { out.csv[name] = atob(data); continue; }
    const img = new Image();
    img.src = `data:${type};base64,${data}`;
    try { await img.decode(); out.images[name] = [img.naturalWidth, img.naturalHeight]; }
    catch (e) { out.images[name] = String(e); }
  }
  const fits = [...document.querySelectorAll("*")].find(
    e => e.children.length === 0 && e.textContent.trim() === "Fits");
  if (fits) { fits.click(); await new Promise(r => setTimeout(r, 500)); }
  out.fitsListed = document.body.innerText.includes("results/tiny/fits.csv");
  return out;
})()"""


def test_report_renders_in_headless_chromium(tiny_run):
    """``snakemake --report`` output opened in a real headless Chromium (DevTools protocol on
    a pipe): no uncaught exception or console error, a non-blank screenshot, every planned
    figure embedded as an image the browser decodes, and the fits table embedded and listed.

    Mutations caught: a figure missing from the report or embedded as bytes that are not an
    image (a broken ``report()`` output), the fits table not in the report, a report whose
    script throws on load."""
    import io

    import matplotlib.image as mpimg
    from browser import INSTALL_ENV, Browser, find_or_install

    from ktsweep.analysis.figures import planned_figures

    binary, why = find_or_install()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"the report check must run in CI ({INSTALL_ENV}=1): {why}")
        pytest.skip(why)
    work, cfg, _ = tiny_run
    snakemake(work, "--configfile", str(cfg), "--report", "report.html", cores="1")
    browser = Browser(binary)
    try:
        browser.open((work / "report.html").as_uri())
        found = browser.evaluate(REPORT_JS)
        shot = mpimg.imread(io.BytesIO(browser.screenshot()))
        errors = browser.errors()
    finally:
        browser.close()
    assert errors == []
    assert shot.std() > 0.05  # not a blank page
    layout = Layout(load_config(str(cfg)))
    for name in planned_figures(layout):
        size = found["images"].get(f"{name}.png")
        assert isinstance(size, list) and min(size) > 100, (name, size)
    header = found["csv"]["fits.csv"].splitlines()[0]
    assert header == (work / "results" / "tiny" / "fits.csv").read_text().splitlines()[0]
    assert found["fitsListed"]


def test_shell_prefix_runs_this_interpreter_from_any_path(tmp_path):
    """The workflow's shell prefix, formatted by Snakemake as a rule's command is, defines
    ``ktsweep`` and ``ktsweep_run_chunk`` for an interpreter whose path holds spaces, quotes
    and braces, and the chunk function carries the config's execution settings.

    Mutations caught: braces not doubled (Snakemake's format raises on the function body);
    the interpreter unquoted (a path with a space runs the wrong program); the execution
    words dropped or unquoted."""
    from snakemake.utils import format as snakemake_format

    from ktsweep.sweep.rules import execution_words, shell_prefix

    odd = tmp_path / "my {venv} it's" / "python"
    odd.parent.mkdir()
    odd.symlink_to(sys.executable)
    raw = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    raw["dask"] = {"processes": True}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    layout = Layout(load_config(str(tmp_path / "c.yaml")))
    prefix = snakemake_format(shell_prefix(layout, str(odd)))
    # ktsweep_run_chunk's last words are the execution settings: seen through a stand-in
    # `ktsweep` defined after the prefix (the real one is run just below)
    script = (prefix + 'ktsweep --help | head -n 1; ktsweep() { printf "%s\\n" "$@"; }; '
              "ktsweep_run_chunk cube c0 --threads 2")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("usage: ktsweep")
    assert lines[1:] == ["run-chunk", "cube", "c0", "--threads", "2", *execution_words(layout)]
    assert "--processes" in lines
