"""The sweep config as typed models: every key, its default and what is allowed, in one place.

A config file becomes a :class:`SweepConfig` through :func:`load_config`, which reads the YAML
itself so that duplicated keys and every error can name the file and line. The JSON Schema that
Snakemake and editors see (``sweep/schemas/config.schema.yaml``) is generated from these models:
``python -m ktsweep.sweep.config --write-schema`` rewrites it, and a test checks it is current.
Documented key by key in config/README.md.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    ValidationError,
    WithJsonSchema,
)

from ktsweep.model.estimators import MCSettings, Method
from ktsweep.model.params import PARAMETERS, ParameterError, gamma0_map

SCHEMA_FILE = "sweep/schemas/config.schema.yaml"
"""The generated JSON Schema, inside the package (workflow/schemas links to it)."""

MAX_REPLICATES = 1 << 20
"""Largest ``mc.replicates``: beyond it one point's replicate tensors outgrow any node."""


class ConfigError(ValueError):
    """The sweep config is invalid; the message names the key, what is allowed and, when the
    config came from a file, the file and line."""

    def __init__(self, message: str, path: Sequence[str | int] = ()) -> None:
        super().__init__(message)
        self.path = tuple(path)


# -- value types -------------------------------------------------------------------------
if TYPE_CHECKING:  # a Literal of a tuple known at run time only: pydantic reads it, mypy not
    ParamName = str
else:
    ParamName = Literal[PARAMETERS]
"""A parameter name (docs/science/quantities.md): grid axes, fixed values, ties, sub-grids,
chunk lengths."""


def number_or_text(raw: Any) -> Any:
    """A numeric string becomes its number (YAML 1.1 reads ``1e4`` and ``6.4e1`` as text).

    Integral values of numeric strings become ints, so ``"64"`` and ``6.4e1`` equal ``64``;
    other text (``gaussian``, ``tail_geometric``) stays text.
    """
    if not isinstance(raw, str):
        return raw
    if raw.strip().lower() in (".inf", "+.inf"):  # YAML's spelling, quoted
        return math.inf
    try:
        value = float(raw)
    except ValueError:
        return raw
    if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
        return int(value)
    return value


def _param_value(raw: Any) -> Any:
    """One parameter value as the config may give it: a number, a text or a γ0 map."""
    raw = number_or_text(raw)
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"expected a number, a text or a gamma0 map, got {raw!r}")
    if isinstance(raw, int | float | str):
        return raw
    if isinstance(raw, Mapping):
        try:
            return gamma0_map(raw)
        except ParameterError as err:  # the key path is added by the caller
            raise ValueError(f"{dict(raw)!r} is invalid: "
                             f"{str(err).partition(' is invalid: ')[2]}") from None
    raise ValueError(f"expected a number, a text or a gamma0 map, got {raw!r}")


def _unique_methods(methods: list[Method]) -> list[Method]:
    seen = [m for i, m in enumerate(methods) if m in methods[:i]]
    if seen:
        raise ValueError(f"{seen[0]!r} is listed twice; give each estimator once")
    return methods


def _default_methods() -> list[Method]:
    return ["exact"]


class Gamma0Scale(BaseModel):
    """γ0 = scale / tr Σ."""

    model_config = ConfigDict(extra="forbid")
    scale: float = Field(gt=0)


class Gamma0Tune(BaseModel):
    """The candidate γ0 with the best exact risk, chosen per run."""

    model_config = ConfigDict(extra="forbid")
    tune: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)


ParamValue = Annotated[
    Any,
    PlainValidator(_param_value),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"},
                              Gamma0Scale.model_json_schema(), Gamma0Tune.model_json_schema()]}),
]
"""A parameter value: number (numeric strings converted), text, or γ0 map (checked here)."""


def _integer(raw: Any) -> Any:
    raw = number_or_text(raw)
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    return raw


Count = Annotated[int, BeforeValidator(_integer), Field(strict=True)]
"""An integer; numeric strings and integral floats accepted (``1e3``), booleans refused."""

ValueList = Annotated[list[ParamValue], Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MCConfig(_Section):
    """Monte Carlo settings (docs/science/montecarlo.md)."""

    replicates: Count = Field(64, ge=1, le=MAX_REPLICATES,
                              description="Monte Carlo replicates per point")
    seed: Count = Field(0, ge=0, description="base seed; each point's draws derive from "
                                             "(seed, point hash, stream)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses CUDA when visible; cuda without a GPU falls back to the "
                            "CPU with a warning")
    require_device: StrictBool = Field(False, description="with device: cuda, fail instead of "
                                                          "falling back")
    dtype: Literal["float32", "float64"] = Field("float32",
                                                 description="Monte Carlo precision")
    fixed_target: StrictBool = Field(False, description="gaussian target: one draw shared by "
                                                        "all replicates")
    kernel: Literal["torch", "fused", "auto"] = Field(
        "torch", description="torch: the reference path; fused: one compiled kernel a pass "
                             "(numba on the CPU, Triton on a GPU; another random stream); auto: "
                             "fused where it can run a point, torch elsewhere")
    subgrid: dict[ParamName, ValueList] = Field(
        default_factory=dict, description="run Monte Carlo only at these values of these axes")
    stride: dict[ParamName, Annotated[Count, Field(ge=1)]] = Field(
        default_factory=dict, description="... and only at every k-th value of these axes")

    def settings(self) -> MCSettings:
        """The engine's view of these settings (the sub-grid is the sweep's business)."""
        return MCSettings(self.replicates, self.seed, self.device, self.dtype,
                          self.fixed_target, self.require_device, self.kernel)

    def result_fields(self) -> dict[str, Any]:
        """The settings that change Monte Carlo numbers (not where or on what device).

        The kernel draws its own stream, so it counts, except at ``torch``, the default: left
        out, so that a config which does not name a kernel keeps its cube's key."""
        out = self.model_dump(exclude={"subgrid", "stride", "device", "require_device"})
        if out["kernel"] == "torch":
            del out["kernel"]
        return out


class OutputsConfig(_Section):
    """What the cube stores besides the per-point risks."""

    modes: StrictBool = Field(True, description="store per-mode risks (mode dimension)")
    curves: StrictBool = Field(True, description="store learning curves (step dimension)")
    checkpoints_per_decade: Count = Field(10, ge=1, le=100,
                                          description="learning-curve resolution: steps "
                                                      "round(10^(k/this))")
    subgrid: dict[ParamName, ValueList] = Field(
        default_factory=dict, description="store per-mode risks and learning curves only at "
        "these values of these axes (NaN elsewhere): a large sweep keeps them where figures "
        "need them")


class JobsConfig(_Section):
    """How the grid is cut into Snakemake jobs and dask tasks, and what a job requests."""

    points_per_job: Annotated[Count, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="about this many points per job (= per zarr chunk); auto: as many "
                            "as fill `minutes` by the nominal cost model")
    minutes: float = Field(10.0, gt=0, le=10080, description="wall minutes a job aims at when "
                           "points_per_job is auto (a few on a workstation, 30 or more on a "
                           "cluster)")
    points_per_task: Annotated[Count, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="largest stack of points in one dask task; auto: about "
                            "2 seconds of the nominal cost model per task (a finished task is "
                            "kept on disk at once, so a task is also what a kill loses)")
    chunks: dict[ParamName, Annotated[Count, Field(ge=1)]] = Field(
        default_factory=dict, description="explicit chunk length along some axes")
    threads: Count = Field(2, ge=1, description="threads of a job = dask workers of its "
                                                "local cluster")
    gpus: Annotated[Count, Field(ge=0)] | None = Field(
        None, description="GPUs per job; null = 1 when mc.device is cuda, else 0")
    mem_mb: Annotated[Count, Field(ge=100)] | None = Field(
        None, description="memory per job in MB (x attempt); null: estimated from the chunk's "
                          "block and the Monte Carlo tasks")
    runtime: Annotated[Count, Field(ge=1)] | None = Field(
        None, description="wall minutes per job (x attempt); null: three times the cost "
                          "model's estimate plus 5")

    def gpus_per_job(self, mc_device: str, runs_mc: bool) -> int:
        """``gpus``, else one GPU when Monte Carlo is set to run on cuda."""
        if self.gpus is not None:
            return self.gpus
        return int(runs_mc and mc_device == "cuda")


class DaskConfig(_Section):
    """Where a job's dask tasks run."""

    scheduler: str | None = Field(None, description="address of an existing dask scheduler "
                                                    "(tcp://host:8786), null = a local cluster "
                                                    "per job")
    processes: StrictBool = Field(False, description="local workers are processes instead of "
                                                     "threads")


class SweepConfig(_Section):
    """A sweep: the Cartesian product of the ``grid`` lists, each point completed by ``fixed``.

    Parameter names are those of docs/science/quantities.md.
    """

    # n: inf must survive the layout file (JSON's Infinity; the default would write null)
    model_config = ConfigDict(extra="forbid", validate_default=True, ser_json_inf_nan="constants",
                              title="ktsweep sweep configuration")

    name: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$",
                      description="sweep name (letters, digits, _ . -, not starting with a "
                                  "dot); outputs go to results/{name}/")
    grid: dict[ParamName, ValueList] = Field(
        min_length=1, description="sweep axes, parameter -> list of values (Cartesian "
                                  "product, in the order written)")
    fixed: dict[ParamName, ParamValue] = Field(default_factory=dict,
                                               description="parameters shared by every point")
    tie: dict[ParamName, ParamName] = Field(
        default_factory=dict, description="parameter -> grid axis whose value it takes at "
                                          "every point")
    methods: Annotated[list[Method], Field(min_length=1),
                       AfterValidator(_unique_methods)] = Field(
        default_factory=_default_methods, json_schema_extra={"uniqueItems": True},
        description="estimators to run (docs/science/exact.md, montecarlo.md, bounds.md)")
    mc: MCConfig = Field(default_factory=MCConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (key order kept: grid order is the cube's dimension order)."""
        return self.model_dump(mode="json")


# -- errors --------------------------------------------------------------------------------
def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _allowed(path: Sequence[str | int]) -> str:
    """The key's description from the models, for 'what is allowed'."""
    model: Any = SweepConfig
    info = None
    for p in path:
        if isinstance(p, str) and isinstance(model, type) and issubclass(model, BaseModel) \
                and p in model.model_fields:
            info = model.model_fields[p]
            model = info.annotation
        else:
            break
    return info.description if info is not None and info.description else ""


def from_validation_error(err: ValidationError) -> ConfigError:
    """The first pydantic error as a :class:`ConfigError` naming the key and what is allowed."""
    e = err.errors(include_url=False)[0]
    loc = [p for p in e["loc"] if p != "[key]"]
    key = _dotted(loc)
    if e["type"] == "extra_forbidden":
        parent = loc[:-1]
        node: Any = SweepConfig
        for p in parent:
            node = node.model_fields[p].annotation if isinstance(p, str) else node
        known = (", ".join(node.model_fields)
                 if isinstance(node, type) and issubclass(node, BaseModel) else "")
        return ConfigError(f"config key {key!r} is unknown; allowed keys here: {known}", loc)
    if "[key]" in e["loc"]:
        return ConfigError(f"config key {key!r}: {e['input']!r} is not a parameter name; "
                           f"known parameters: {', '.join(PARAMETERS)}", loc)
    if e["type"] == "missing":
        return ConfigError(f"config key {key!r} is required ({_allowed(loc)})", loc)
    if e["type"] == "value_error":  # our own validators say what is allowed
        return ConfigError(f"config key {key!r}: {e['msg'].removeprefix('Value error, ')}", loc)
    allowed = _allowed(loc)
    return ConfigError(f"config key {key!r}: {e['msg']}; got {e['input']!r}"
                       + (f" ({allowed})" if allowed else ""), loc)


def parse(raw: Mapping[str, Any]) -> SweepConfig:
    """Type-check a config mapping and fill its defaults (:class:`ConfigError` on failure)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config is a mapping of keys, got {type(raw).__name__}")
    try:
        return SweepConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise from_validation_error(err) from None


# -- YAML with file and line ---------------------------------------------------------------
Lines = dict[tuple[str | int, ...], int]


def _walk(node: yaml.Node, path: tuple, lines: Lines, source: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            line = key.start_mark.line + 1
            if name in seen:
                raise ConfigError(f"{source}:{line}: config key {_dotted((*path, name))!r} is "
                                  f"given twice (first on line {seen[name]}); keep one")
            seen[name] = line
            _walk(value, (*path, name), lines, source)
            lines[(*path, name)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines, source)


def read_yaml(path: str | Path) -> tuple[dict[str, Any], Lines]:
    """A YAML config file as data plus the line of every key and list item.

    Refuses duplicated keys (PyYAML would let the last one win) and names file and line of
    syntax errors.
    """
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {source!r} does not exist") from None
    except OSError as err:
        raise ConfigError(f"config file {source!r} cannot be read: {err.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{source}: the config file is empty; it needs at least name "
                              "and grid")
        lines: Lines = {}
        _walk(node, (), lines, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {err.problem or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a config file holds a mapping of keys (name, grid, …), "
                          f"got {type(data).__name__}")
    return data, lines


def locate(err: ConfigError, source: str, lines: Lines) -> ConfigError:
    """``err`` prefixed with the file and line of its key (or of its nearest enclosing key)."""
    path = err.path
    while path and path not in lines:
        path = path[:-1]
    line = lines.get(path, 1)
    located = ConfigError(f"{source}:{line}: {err}", err.path)
    return located


# -- schema --------------------------------------------------------------------------------
def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file, generated from :class:`SweepConfig`."""
    sch = SweepConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **sch}


def schema_text() -> str:
    head = ("# GENERATED from ktsweep/sweep/config.py: do not edit; regenerate with\n"
            "#   python -m ktsweep.sweep.config --write-schema\n")
    return head + yaml.safe_dump(json_schema(), sort_keys=False, width=100)


def schema_path() -> Path:
    return Path(str(resources.files("ktsweep").joinpath(SCHEMA_FILE)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ktsweep.sweep.config",
                                     description="Print or rewrite the config's JSON Schema.")
    parser.add_argument("--write-schema", action="store_true",
                        help=f"rewrite ktsweep/{SCHEMA_FILE} from the models")
    args = parser.parse_args(argv)
    if args.write_schema:
        schema_path().write_text(schema_text())
        print(f"wrote {schema_path()}")
    else:
        print(schema_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
