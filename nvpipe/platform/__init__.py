"""What the machine offers: `gpu` (CUDA, NVDEC/NVENC capabilities), `telemetry` (NVML),
`threads` (OpenMP and thread budgets)."""
