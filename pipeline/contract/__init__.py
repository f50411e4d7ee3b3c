"""The stage contract, below the stages and the runner: what a stage is (stage.py), what it runs in
(context.py) and the typed options of a run (options.py). It imports only core, versioning and tools (the
run's registry-client pool)."""
