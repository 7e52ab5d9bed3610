"""Evaluation: MEGC 2019 scores, intervals and tests, the report, the challenge's log, audits."""
