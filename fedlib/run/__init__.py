"""Run folders, in one package.

- ``fedlib.run.folder``: what a run folder holds, where each one goes (the names of runs
  and the default runs, figures and reports folders), when it has finished, whether its
  config is the one wanted, and the rules for writing one (target check, lock,
  transaction, recovery, progress line);
- ``fedlib.run.marker``: the ``.fedlib-run`` marker, which holds a copy of config.json as the
  run wrote it (``--resume`` refuses a hand edit, naming the changed keys);
- ``fedlib.run.io``: the files it holds, written whole or not at all (JSON, CSV, checkpoints);
- ``fedlib.run.results``: run folders read back as data (``load_run``, ``find_runs``...).
"""
