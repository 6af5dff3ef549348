"""The names of the provider abilities a story may need (``needs:`` in its
scenario.yaml). What each means, and which provider has it, is in
failure_stories.providers.capabilities, which maps every name to an interface."""

from __future__ import annotations

ABILITIES = (
    "node-shell",
    "node-failure",
    "cgroup-read",
    "outside-network",
    "image-loading",
    "operator-host",
    "egress-snat",
)
