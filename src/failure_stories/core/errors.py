"""One exception tree for the whole suite.

    KfsError
    ├── DefinitionError          the input is wrong; retrying cannot help
    │   ├── UnknownScenarioError
    │   └── ScenarioDefinitionError
    ├── RunError                 something failed while running
    │   ├── TransientError       a retry may help (API hiccup, not ready yet)
    │   ├── WaitTimeout          a condition was not reached in time
    │   ├── NodeTooBusyError     too little idle CPU to judge a timing measurement
    │   ├── RefusedError         the cluster refused a change (admission, authorization,
    │   │                        validation); in mitigate, a `not-fixed` verdict
    │   └── PermanentError       a retry will not help
    │       ├── MissingToolError
    │       ├── ClusterUnreachableError
    │       ├── ProviderError
    │       └── GuardRefusedError
    Interrupted (BaseException)  Ctrl-C or SIGTERM: unwinds through teardown

Every KfsError renders as one line that says what to do; the CLI prints it
without a traceback.
"""

from __future__ import annotations


class KfsError(Exception):
    """Base of every error the suite raises on purpose."""


class DefinitionError(KfsError):
    """Bad input: a scenario definition, a CLI argument, a config file."""


class UnknownScenarioError(DefinitionError):
    def __init__(self, scenario_id: str, closest: list[str]) -> None:
        hint = f"; did you mean {', '.join(closest)}?" if closest else ""
        super().__init__(f"unknown scenario {scenario_id!r}{hint} (see `kfs list`)")
        self.scenario_id = scenario_id
        self.closest = closest


class ScenarioDefinitionError(DefinitionError):
    """A scenario folder is malformed (missing file, bad threshold...)."""


class RunError(KfsError):
    """Something failed while running a scenario or a cluster."""


class TransientError(RunError):
    """A retry may succeed."""


class NodeTooBusyError(RunError):
    """Other work kept the node's CPUs too busy for the numbers to be judged:
    the verdict is `error` (cannot judge), never one about the story. Not a
    TransientError: the window was already measured again before this is raised."""


class RefusedError(RunError):
    """The platform refused a change or could not carry it out: an admission
    webhook or policy, a Forbidden, an invalid object, pods a controller may not
    create. Raised by the mitigate step (or by the API server under it) this is
    the verdict `not-fixed`, with this message as its reason: the user's platform
    does not let the documented fix happen. Anywhere else it is an `error`."""


class WaitTimeout(RunError):
    """A waited-for condition did not hold in time."""


class PermanentError(RunError):
    """A retry will not help."""


class MissingToolError(PermanentError):
    def __init__(self, tool: str, how: str) -> None:
        super().__init__(f"{tool} is not installed: {how}")
        self.tool = tool


class ClusterUnreachableError(PermanentError):
    """The kube context is unknown or its API server does not answer."""


class ProviderError(PermanentError):
    """A cluster provider could not do what was asked."""


class GuardRefusedError(PermanentError):
    """A safety rail refused a destructive action."""


class Interrupted(BaseException):
    """Raised on SIGINT/SIGTERM so that teardown still runs on the way out."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name}")
        self.signal_name = signal_name
