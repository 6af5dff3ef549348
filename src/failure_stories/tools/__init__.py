"""Module entry points for make: `prepare` (build what the local provider needs),
`bench` (the suite's own numbers), `schema` (scenario.schema.json)."""
