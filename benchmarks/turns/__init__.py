"""The labelled turn-taking benchmark: `python -m benchmarks.turns` (see its __main__)."""
