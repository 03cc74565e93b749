"""Independent, labelled scenario generator for scoring Rhythm's heads-up alerts.

See README.md in this folder. Entry points live in `tests.scenarios.generate`: `generate`,
`write_jsonl`, `labels_json` (kept out of this file so that `python -m
tests.scenarios.generate` does not import the module twice).
"""
