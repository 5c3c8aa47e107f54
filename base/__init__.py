"""Shared infrastructure below the stages: errors, atomic writes, hashing, the workspace,
locks, logging, the kaggle client wrapper and the config loader's typed helpers. Every
stage may import it; it imports no stage."""
