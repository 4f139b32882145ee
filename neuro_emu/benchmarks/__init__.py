"""Benchmark suites shared by `bench/` and `neuro-emu bench`."""
