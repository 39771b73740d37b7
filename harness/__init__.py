"""Tooling shared by the tests and the benchmarks: ports, topics, waiting, people, realistic posts, a whole
platform in separate processes, the stats event simulator. Never shipped in an image and never imported by
a service; `bench/` and `tests/` import it, and neither imports the other."""
