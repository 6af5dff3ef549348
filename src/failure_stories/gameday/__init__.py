"""Game days: the interactive drill, GameDay resources as the operator reconciles them,
and the worker process that runs one."""
