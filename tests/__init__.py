"""The suite's tests; packages so that unit and e2e modules may share a basename."""
