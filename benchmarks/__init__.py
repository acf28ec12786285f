"""Benchmark scripts: each measures, then writes JSON and a Markdown table into docs/benchmarks/."""
