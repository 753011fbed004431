"""Research: strategies, the compiled backtest engine, sweeps, scoring and next-day picks (no IO here)."""
