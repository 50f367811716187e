"""feedsvc benchmarks: measurements, not tests (pytest never collects them).

Every module here other than ``common`` and the ``_``-prefixed ones is a benchmark: it
has ``run(quick: bool, *, show_machine: bool = True) -> None`` that measures and
prints, and runs alone as ``python -m bench.NAME [--quick]``. ``python -m bench
[--quick]`` runs them all. See bench/README.md.
"""
