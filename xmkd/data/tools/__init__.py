"""The data tools' command lines, one module per tool (``add_arguments`` + ``run``, dispatched by
``xmkd.cli``): ``xmkd data synth-av | synth-untrimmed | synth-untrimmed-raw | inspect | shard`` and
``xmkd compute-flow``. The generators, readers and flow code they drive have no command line."""
