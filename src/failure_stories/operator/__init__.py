"""The kfs operator's Python side: running it (host process, local pod or in-cluster
Deployment), building its image offline, and the RedisFailover planner."""
