"""The local fine-tuning service: a Nebius-compatible API on loopback whose jobs really train.

Modules, outside in::

    embedded.py   start_embedded() / EmbeddedService (uvicorn in a daemon thread), serve_forever()
                  for `sweep serve`, which prints "sweeper local service listening on URL"
    faults.py     FaultConfig and the ASGI Gate: per-route counters, injected faults, bearer auth
    app.py        FastAPI routes of finetune-api.md sections 1-5 with the provider's validation
    runner.py     a job's life: validating_files -> queued -> running -> terminal, in threads
    state.py      SQLite (WAL) persistence of files, jobs, events, checkpoints
    trainer.py    the tiny numpy language model and its AdamW loop (how each knob is used)
    datasets.py   JSONL parsing and byte tokenization (conversational, instruction, text, ids)
    catalog.py    Nebius model names -> tiny local base models
    sample_data.py, testing.py   quickstart data; helpers for tests and benchmarks

Job failures carry ``error.code``: ``invalid_training_file`` / ``invalid_validation_file`` (bad
dataset, message names the line), ``training_diverged`` (loss NaN/inf or exploded),
``internal_error`` (injected by ``job_failure_rate``, or an unexpected exception).

This package must not import ``sweeper.engine`` or ``sweeper.store``.
"""
