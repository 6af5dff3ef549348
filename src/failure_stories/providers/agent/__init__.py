"""The node agent: node-level actions on a cluster kfs did not build.

Per run, a namespace of its own holds one privileged pod per node the run
touches (host PID and network namespaces, the toolbox image), and a journal of
every change made through it, so `kfs cleanup` can undo a crashed run's changes
from any machine. Deleting the namespace removes the agent and, with it, the
outside hosts it created (their namespaces are pinned inside its container)."""

from failure_stories.providers.agent.node_agent import NodeAgent, agent_namespaces, revert

__all__ = ["NodeAgent", "agent_namespaces", "revert"]
