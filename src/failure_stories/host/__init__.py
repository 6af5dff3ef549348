"""This machine: the one way to run a command, supervised processes, cross-process
locks, outside-world hosts in network namespaces, the node's idle CPU."""
