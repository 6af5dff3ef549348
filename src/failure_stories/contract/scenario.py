"""The Scenario contract: one published incident, made executable.

A scenario is a folder ``scenarios/<id>/`` holding ``scenario.yaml`` (the story's
metadata and the thresholds each phase is judged against), ``README.md``,
``manifests/`` and ``steps.py``. The steps only act and measure; the runner
decides the verdict by comparing measurements with the declared thresholds.

A story keeps three things apart, so that its negative controls (contract.controls)
need no story code:

- the **latent fault** (``inject``): a configuration or state that stays quiet
  until something exposes it; ``setup`` builds the system without it;
- the **event that exposes it** (``expose``, optional): a node failure, a backend
  outage, an edit, an attack; the same in symptom and verify, started by the
  measuring phase with ``ctx.expose()`` and ended by the event itself;
- the **measurement** (``symptom``, ``verify``): a window around the event that
  returns numbers whether or not the fault took hold.

``mitigate`` applies the fix and nothing else: it never undoes the event nor
prepares the next window, since a ``no-fix`` control does not run it.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import math
import operator
import os
import re
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from failure_stories.contract.abilities import ABILITIES
from failure_stories.core import paths
from failure_stories.core.errors import ScenarioDefinitionError, UnknownScenarioError

PHASES: tuple[str, ...] = (
    "setup",
    "steady-state",
    "inject",
    "symptom",
    "mitigate",
    "verify",
    "teardown",
)
# Phases a scenario implements as functions in steps.py (teardown is the framework's,
# plus whatever the steps deferred).
STEP_PHASES: tuple[str, ...] = PHASES[:-1]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
# ASCII digits only (Python's \d also takes other scripts' digits, which the JSON
# Schema's pattern would not), and exponents, which __str__ may write for large numbers.
_THRESHOLD_RE = re.compile(
    r"^\s*(<=|>=|==|<|>)\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*$"
)


@dataclass(frozen=True)
class Threshold:
    op: str
    value: float

    @classmethod
    def parse(cls, text: object) -> Threshold:
        match = _THRESHOLD_RE.match(str(text))
        shown = repr(text) if len(str(text)) <= 40 else repr(f"{str(text)[:37]}...")
        if not match:
            raise ScenarioDefinitionError(
                f"bad threshold {shown}: write an operator and a number, e.g. '>= 0.99'"
            )
        value = float(match.group(2))
        if not math.isfinite(value):
            raise ScenarioDefinitionError(
                f"bad threshold {shown}: the number is too large for a float; write a finite one"
            )
        return cls(match.group(1), value)

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)

    def __str__(self) -> str:
        # Reports keep this text and `kfs report --compare` parses it again: it must
        # give back the same number (':g' alone rounds to 6 digits).
        short = f"{self.value:g}"
        return f"{self.op} {short if float(short) == self.value else repr(self.value)}"


def _threshold(value: object) -> Threshold:
    if isinstance(value, Threshold):
        return value
    try:
        return Threshold.parse(value)
    except ScenarioDefinitionError as exc:
        # A ValueError, so pydantic names where in the file the bad threshold is.
        raise ValueError(str(exc)) from None


ThresholdField = Annotated[
    Threshold,
    BeforeValidator(_threshold),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "pattern": _THRESHOLD_RE.pattern}),
]
Text = Annotated[str, AfterValidator(str.strip)]
Phase = Literal["setup", "steady-state", "inject", "symptom", "mitigate", "verify"]
PlanPhase = Literal[
    "setup", "steady-state", "inject", "expose", "symptom", "mitigate", "verify", "teardown"
]
Ability = Literal[ABILITIES]  # type: ignore[valid-type]
LockName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]+$")]


class _Model(BaseModel):
    # Unknown keys are refused: a misspelled one would otherwise be ignored.
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class NodeUse(_Model):
    """How the story uses the node its pods run on, and so how runs share it."""

    changes: bool = Field(
        False,
        description="The fault changes the node (iptables, processes, a node's heartbeat): "
        "such runs share the node lock, and a crashed run's leftovers are swept from it.",
    )
    alone: bool = Field(
        False,
        description="The story needs the node to itself on every provider: it holds the "
        "node lock exclusively, so no other run shares the node meanwhile (a story with "
        "min_idle_cpu gets this only where the nodes share the host's CPUs, as on kind).",
    )
    locks: tuple[LockName, ...] = Field(
        (),
        description="Node resources the fault takes over (simulated-nodes, outside-network): "
        "runs naming the same one never overlap; others run beside them.",
    )
    min_idle_cpu: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="The least share of the node's CPU that must be idle during a measuring "
        "window for its numbers to be judged (0: the story needs no spare CPU).",
    )

    @property
    def shared(self) -> bool:
        """Holds the node lock at all (shared, or exclusively when alone)."""
        return self.changes or self.alone

    def exclusive(self, nodes_share_cpus: bool) -> bool:
        """Needs the node to itself on this provider: always when ``alone``, and
        a story that judges spare CPU where every node shares the host's CPUs
        with the others and the control plane (the provider's
        ``nodes_share_cpus``), because there no other run's work is elsewhere."""
        return self.alone or (nodes_share_cpus and self.min_idle_cpu > 0)


class ScenarioMeta(_Model):
    """scenario.yaml: one published incident, its fault and fix, and the
    thresholds each phase is judged against."""

    id: str
    title: Text
    company: Text
    year: int
    source: Annotated[str, StringConstraints(pattern=r"^https://")]
    story: Text
    fault: Text
    symptom: Text
    mitigation: Text
    event: Text = Field(
        "",
        description="The event that exposes the latent fault (steps.py expose), run the "
        "same way in the symptom and verify windows; empty when the measurement's own "
        "traffic exposes it.",
    )
    measured: dict[str, Text] = Field(
        description="Each measurement a phase reports, and what it means."
    )
    checks: dict[Phase, dict[str, ThresholdField]] = Field(
        description="Per phase, the measurements judged and their thresholds ('>= 0.99')."
    )
    kind_config: str = Field(description="The kind-configs/<name>.yaml cluster it runs on.")
    node: NodeUse = NodeUse()
    needs: tuple[Ability, ...] = Field(
        (), description="Provider abilities its steps use; a provider lacking one is refused."
    )
    min_nodes: int = 1
    briefing: Text = ""
    hints: tuple[str, ...] = ()
    root_cause: Text = ""
    takeaways: tuple[str, ...] = ()
    physics_seconds: float = Field(
        0.0,
        description="Seconds its physics imposes (grace periods, load windows): the floor "
        "under its wall time, for the suite's benchmark.",
    )
    plan: dict[PlanPhase, tuple[str, ...]] = Field(
        default_factory=dict,
        description="What each phase changes, in words an SRE can approve before a game day.",
    )

    def checks_for(self, phase: str) -> Mapping[str, Threshold]:
        """The thresholds ``phase`` is judged against (none for most phases)."""
        return next((c for p, c in self.checks.items() if p == phase), {})

    def plan_for(self, phase: str) -> tuple[str, ...]:
        return next((steps for p, steps in self.plan.items() if p == phase), ())

    @field_validator("checks")
    @classmethod
    def _proves_something(
        cls, checks: dict[str, dict[str, Threshold]]
    ) -> dict[str, dict[str, Threshold]]:
        for needed in ("symptom", "verify"):
            if not checks.get(needed):
                raise ValueError(f"a scenario must declare {needed} checks, or it proves nothing")
        return checks


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario.yaml, for editors (scenarios/scenario.schema.json)."""
    schema = ScenarioMeta.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kube-failure-stories scenario.yaml"
    return schema


StepFn = Callable[[Any], Any]


@dataclass
class Scenario:
    meta: ScenarioMeta
    path: Path
    _module: ModuleType | None = field(default=None, repr=False)
    _audit: ModuleType | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.meta.id

    @property
    def manifests(self) -> Path:
        return self.path / "manifests"

    def steps(self) -> ModuleType:
        """Import steps.py lazily: listing scenarios must not import their code."""
        if self._module is None:
            file = self.path / "steps.py"
            module = _import(file, "kfs_scenario_" + self.id.replace("-", "_"), self.id)
            check_steps(self.id, module)
            self._module = module
        return self._module

    def audit(self) -> ModuleType | None:
        """The story's audit checks (``audit.py``), if it has any; imported lazily."""
        if self._audit is None:
            file = self.path / "audit.py"
            if not file.is_file():
                return None
            self._audit = _import(file, "kfs_audit_" + self.id.replace("-", "_"), self.id)
        return self._audit

    def check(self) -> None:
        """What can be checked before a run touches a cluster: steps.py loads and
        defines its phases, and every manifest the plan names is there."""
        self.steps()
        for phase, steps in self.meta.plan.items():
            for step in steps:
                for name in manifest_names(step):
                    if not (self.manifests / name).is_file():
                        raise ScenarioDefinitionError(
                            f"{self.id}: the plan's {phase} step {step!r} names {name}, "
                            f"which is not in {self.manifests}: add it or fix the name"
                        )

    def manifest_path(self, name: str) -> Path:
        path = self.manifests / name
        if not path.is_file():
            raise ScenarioDefinitionError(
                f"{self.id}: no manifest {name} in {self.manifests}: add it or fix the name "
                "in steps.py"
            )
        return path

    def step(self, phase: str) -> StepFn | None:
        fn = getattr(self.steps(), phase.replace("-", "_"), None)
        return fn if callable(fn) else None

    def expose_step(self) -> StepFn | None:
        """steps.expose: the event that exposes the latent fault, if the story has one."""
        return self.step(EXPOSE)


def _import(file: Path, name: str, scenario_id: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ScenarioDefinitionError(f"{scenario_id}: cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


# The functions steps.py may define for phases (and the event), and the ones it must.
EXPOSE = "expose"
STEP_FUNCTIONS = (*(p.replace("-", "_") for p in PHASES), EXPOSE)
REQUIRED_STEPS = ("symptom", "verify")


def check_steps(scenario_id: str, module: ModuleType) -> None:
    """Refuse a steps.py that would silently skip a phase: a required step
    missing, or a function whose name is a near miss of a phase's (``sympton``,
    ``steadystate``, ``mitigation``), which the runner would never call."""
    functions = {
        name
        for name, obj in vars(module).items()
        if inspect.isfunction(obj) and obj.__module__ == module.__name__
    }
    where = f"{scenario_id}: steps.py"
    missing = [name for name in REQUIRED_STEPS if name not in functions]
    if missing:
        raise ScenarioDefinitionError(
            f"{where} defines no {', '.join(missing)} function: a story must measure "
            "its symptom and its fix, or it proves nothing"
        )
    for name in sorted(functions - set(STEP_FUNCTIONS)):
        if name.startswith("_"):
            continue
        close = difflib.get_close_matches(name, STEP_FUNCTIONS, n=1, cutoff=0.7)
        if close:
            raise ScenarioDefinitionError(
                f"{where} defines {name}(), which is no phase and would never run: "
                f"rename it {close[0]}(), or start it with _ if it is a helper"
            )


def _loc_part(part: object) -> str:
    """A key of a validation error's place; quoted unless plain (a key may hold a newline)."""
    text = str(part)
    return text if re.fullmatch(r"[\w-]+", text) else repr(text)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: where, and what (PyYAML's own text spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())} (not valid YAML)"


def load_meta(path: Path) -> ScenarioMeta:
    file = path / "scenario.yaml"
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioDefinitionError(f"{file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioDefinitionError(
            f"{file}: not UTF-8 text (byte {exc.start}): save it as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        raise ScenarioDefinitionError(f"{file}: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ScenarioDefinitionError(f"{file}: nested too deeply to be a scenario") from None
    if not isinstance(raw, dict):
        raise ScenarioDefinitionError(f"{file}: expected a mapping")
    if raw.get("id") != path.name:
        raise ScenarioDefinitionError(
            f"{file}: id {raw.get('id')!r} must match folder {path.name!r}"
        )
    try:
        return ScenarioMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(_loc_part(x) for x in first["loc"]) or "(top)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        message = first["msg"].removeprefix("Value error, ")
        raise ScenarioDefinitionError(
            f"{file}: {where}: {message}{more}; see scenarios/scenario.schema.json"
        ) from None


def scenarios_root() -> Path:
    env = os.environ.get("KFS_SCENARIOS_DIR")
    if env:
        return Path(env)
    return paths.SCENARIOS


def discover(root: Path | None = None) -> dict[str, Scenario]:
    root = root or scenarios_root()
    found: dict[str, Scenario] = {}
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if (child / "scenario.yaml").is_file():
            found[child.name] = Scenario(load_meta(child), child)
    return found


def get(scenario_id: str, root: Path | None = None) -> Scenario:
    known = discover(root)
    if scenario_id not in known:
        closest = difflib.get_close_matches(scenario_id, list(known), n=3, cutoff=0.3)
        raise UnknownScenarioError(scenario_id, closest)
    return known[scenario_id]


def manifest_names(step: str) -> list[str]:
    """The manifest files a plan step names ("apply fault.yaml ...")."""
    return re.findall(r"[\w.-]+\.yaml", step)


def manifest_objects(path: Path) -> list[str]:
    """`Kind/name` of each object in a manifest, variables left unfilled."""
    text = string.Template(path.read_text()).safe_substitute()
    return [
        f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        for d in yaml.safe_load_all(text)
        if isinstance(d, dict)
    ]
