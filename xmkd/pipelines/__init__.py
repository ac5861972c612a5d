"""Multi-run jobs behind the make targets, each a module with ``add_arguments(parser)`` and ``run(args)``.

They chain LightningCLI jobs in-process through :func:`xmkd.runner.run_lightning_cli`, so every run
still gets its own run folder (resolved config, checkpoints, results.json) and a pipeline only adds
the comparison on top (``runs/<pipeline>/results.json`` and a printed table).

- ``pretrain_xkd``: XKD pretraining on the synthetic set + the same probe on a frozen random init.
- ``pretrain_xkd_ablation``: reconstruction only / + domain alignment / full XKD.
"""
