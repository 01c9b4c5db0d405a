"""The parts of the fault corpus (:mod:`benchmarks.studies.fault_corpus`, which holds the case table, the runner
and the report): ``harness`` (processes, results, judging), ``inputs`` (planted files), and the cases by theme:
``checkpoint_cases``, ``export_cases``, ``run_cases``."""
