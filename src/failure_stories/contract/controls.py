"""Negative controls: the same story with one part withheld, which must fail.

A verdict proves something only if the story can fail. ``no-fault`` runs it
without its latent fault (the inject phase is withheld): the exposing event still
happens and the symptom must not appear, so the run must end ``not-reproduced``.
``no-fix`` runs it without its mitigation (the mitigate phase is withheld):
verify exposes the fault again and must still see the symptom, so the run must
end ``not-fixed``. Both work for every story without story code, because a story
keeps the latent fault (``inject``), the event that exposes it (``expose``) and
the measurement (``symptom``, ``verify``) apart.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Control:
    name: str
    withholds: str  # the phase the control does not run
    expects: str  # the verdict it must end with
    means: str  # what it proves, in one line

    def passed(self, verdict: str) -> bool:
        """A control passes when its run ends with the verdict it expects."""
        return verdict == self.expects


CONTROLS: dict[str, Control] = {
    c.name: c
    for c in (
        Control(
            "no-fault",
            "inject",
            "not-reproduced",
            "without the latent fault, the same event does not cause the symptom",
        ),
        Control(
            "no-fix",
            "mitigate",
            "not-fixed",
            "without the mitigation, the same event under the fault still causes the symptom",
        ),
    )
}
NAMES: tuple[str, ...] = tuple(CONTROLS)


def expected_verdict(control: str | None) -> str:
    """The verdict a run must end with: ``passed`` for the story itself."""
    return "passed" if control is None else CONTROLS[control].expects


def run_key(scenario_id: str, control: str | None) -> str:
    """The name of one run's report: ``<id>`` or ``<id>--<control>``."""
    return scenario_id if control is None else f"{scenario_id}--{control}"
