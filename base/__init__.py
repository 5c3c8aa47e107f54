"""Shared infrastructure below the stages: errors, atomic writes, hashing, the workspace,
locks and logging. Every stage may import it; it imports no stage."""
