"""Tarn's differential query generator: random SQL over a small, adversarial Parquet lake,
run on DuckDB and on two `tarn serve` processes (every Tarn planner rule on, every rule
off); differences are shrunk and attributed to a rule. Run it with `scripts/fuzz`."""
