"""The benchmark scripts, run as modules from the repository root (no sys.path edits):

    python -m benchmarks.gpu_bench --tiny --out /tmp/gb
    python -m benchmarks.export_sd_size --tiny
    python -m benchmarks.train_sd_size --tiny --steps 2

Shared pieces: `sd_configs` (the SD 2.1-base networks), `fp8` (torchao float8), `bench_report`
(gpu_bench's JSON and tables).
"""
