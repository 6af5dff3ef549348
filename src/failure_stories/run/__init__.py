"""Running stories: the runner and its phases, the RunContext steps receive, the
Session around a batch of runs, parallel runs, cleanup after crashes, the events a
run emits."""
