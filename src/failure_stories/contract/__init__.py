"""What a story is: scenario.yaml as a typed, validated model, its thresholds, the
steps.py contract and the abilities a story may need."""
