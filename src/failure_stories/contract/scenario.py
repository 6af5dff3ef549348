"""The Scenario contract: one published incident, made executable.

A scenario is a folder ``scenarios/<id>/`` holding ``scenario.yaml`` (the story's
metadata and the thresholds each phase is judged against), ``README.md``,
``manifests/`` and ``steps.py``. The steps only act and measure; the runner
decides the verdict by comparing measurements with the declared thresholds.
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import operator
import os
import re
import string
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

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
_THRESHOLD_RE = re.compile(r"^\s*(<=|>=|==|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Threshold:
    op: str
    value: float

    @classmethod
    def parse(cls, text: object) -> Threshold:
        match = _THRESHOLD_RE.match(str(text))
        if not match:
            raise ScenarioDefinitionError(
                f"bad threshold {text!r}: write an operator and a number, e.g. '>= 0.99'"
            )
        return cls(match.group(1), float(match.group(2)))

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class ScenarioMeta:
    id: str
    title: str
    company: str
    year: int
    source: str
    story: str
    fault: str
    symptom: str
    mitigation: str
    measured: Mapping[str, str]
    checks: Mapping[str, Mapping[str, Threshold]]
    kind_config: str
    needs_real_node: bool = False
    # The fault changes a node (iptables, processes, a node's heartbeat...): a
    # crashed run's leftovers are swept from the node. Such runs share the node
    # lock, so `kfs cleanup` never sweeps under a live one.
    node_level_fault: bool = False
    # The story measures timing on the real node (CPU periods): it holds the
    # node lock exclusively, so no other run shares the node while it measures.
    exclusive: bool = False
    # Node resources the fault takes over (e.g. "simulated-nodes", "egress"):
    # runs naming the same resource never overlap; others run beside them.
    node_locks: tuple[str, ...] = ()
    min_nodes: int = 1
    briefing: str = ""
    hints: tuple[str, ...] = ()
    root_cause: str = ""
    takeaways: tuple[str, ...] = ()
    # Seconds the story's physics imposes (grace periods, load durations, CFS
    # periods): the floor under its wall time, for the suite's own benchmark.
    physics_seconds: float = 0.0
    # The least share of the node's CPU that must be idle while a measuring
    # window runs for its numbers to be judged (0: the story does not depend on
    # spare CPU). Steps measure through RunContext.quiet_window; see node_cpu.
    min_idle_cpu: float = 0.0
    # Provider abilities the story uses (see providers.capabilities): a provider
    # without one is refused before the run starts.
    needs: tuple[str, ...] = ()
    # What each phase changes, in words an SRE can approve before a game day;
    # `kfs run --dry-run` prints it with the objects of every manifest it names.
    plan: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


StepFn = Callable[[Any], Any]


@dataclass
class Scenario:
    meta: ScenarioMeta
    path: Path
    _module: ModuleType | None = field(default=None, repr=False)

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
            name = "kfs_scenario_" + self.id.replace("-", "_")
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise ScenarioDefinitionError(f"{self.id}: cannot import {file}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            check_steps(self.id, module)
            self._module = module
        return self._module

    def step(self, phase: str) -> StepFn | None:
        fn = getattr(self.steps(), phase.replace("-", "_"), None)
        return fn if callable(fn) else None


# The functions steps.py may define for phases, and the ones it must.
STEP_FUNCTIONS = tuple(p.replace("-", "_") for p in PHASES)
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


_REQUIRED = (
    "id",
    "title",
    "company",
    "year",
    "source",
    "story",
    "fault",
    "symptom",
    "mitigation",
    "measured",
    "checks",
    "kind_config",
)


def load_meta(path: Path) -> ScenarioMeta:
    file = path / "scenario.yaml"
    try:
        raw = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioDefinitionError(f"{file}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ScenarioDefinitionError(f"{file}: expected a mapping")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ScenarioDefinitionError(f"{file}: missing keys {', '.join(missing)}")
    if raw["id"] != path.name:
        raise ScenarioDefinitionError(f"{file}: id {raw['id']!r} must match folder {path.name!r}")
    checks: dict[str, dict[str, Threshold]] = {}
    for phase, items in (raw["checks"] or {}).items():
        if phase not in STEP_PHASES:
            raise ScenarioDefinitionError(f"{file}: checks for unknown phase {phase!r}")
        checks[phase] = {name: Threshold.parse(t) for name, t in (items or {}).items()}
    for needed in ("symptom", "verify"):
        if not checks.get(needed):
            raise ScenarioDefinitionError(
                f"{file}: a scenario must declare {needed} checks, or it proves nothing"
            )
    return ScenarioMeta(
        id=raw["id"],
        title=raw["title"],
        company=raw["company"],
        year=int(raw["year"]),
        source=raw["source"],
        story=raw["story"].strip(),
        fault=raw["fault"].strip(),
        symptom=raw["symptom"].strip(),
        mitigation=raw["mitigation"].strip(),
        measured=dict(raw["measured"]),
        checks=checks,
        kind_config=raw["kind_config"],
        needs_real_node=bool(raw.get("needs_real_node", False)),
        node_level_fault=bool(raw.get("node_level_fault", raw.get("needs_real_node", False))),
        exclusive=bool(raw.get("exclusive", False)),
        node_locks=_node_locks(file, raw.get("node_locks") or ()),
        min_nodes=int(raw.get("min_nodes", 1)),
        briefing=str(raw.get("briefing", "")).strip(),
        hints=tuple(raw.get("hints", ())),
        root_cause=str(raw.get("root_cause", "")).strip(),
        takeaways=tuple(raw.get("takeaways", ())),
        physics_seconds=float(raw.get("physics_seconds", 0)),
        min_idle_cpu=_ratio(file, "min_idle_cpu", raw.get("min_idle_cpu", 0)),
        needs=_needs(file, raw.get("needs") or ()),
        plan=_plan(file, raw.get("plan") or {}),
    )


def _node_locks(file: Path, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or not all(
        isinstance(x, str) and re.fullmatch(r"[a-z0-9-]+", x) for x in raw
    ):
        raise ScenarioDefinitionError(
            f"{file}: node_locks must be a list of lower-case names like simulated-nodes"
        )
    return tuple(sorted(set(raw)))


def _needs(file: Path, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list | tuple) or any(x not in ABILITIES for x in raw):
        raise ScenarioDefinitionError(
            f"{file}: needs must list provider abilities among {', '.join(ABILITIES)}"
        )
    return tuple(dict.fromkeys(raw))


def _ratio(file: Path, key: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if not 0 <= value < 1:
        raise ScenarioDefinitionError(f"{file}: {key} must be a number from 0 to below 1, e.g. 0.5")
    return value


def _plan(file: Path, raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or any(p not in PHASES for p in raw):
        raise ScenarioDefinitionError(f"{file}: plan must map phase names to lists of changes")
    return {phase: tuple(str(x) for x in items or ()) for phase, items in raw.items()}


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


def manifest_objects(path: Path) -> list[str]:
    """`Kind/name` of each object in a manifest, variables left unfilled."""
    text = string.Template(path.read_text()).safe_substitute()
    return [
        f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        for d in yaml.safe_load_all(text)
        if isinstance(d, dict)
    ]
