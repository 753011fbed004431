"""Where the real market data sets are: the compact samples the repository ships in
``data/samples`` and, optionally, the full five-day files beside the checkout (``../shared/data``
or ``TICKFORGE_SHARED_DATA``).

The demo and the tests read only the samples; benchmarks prefer the full files and fall back to
the samples, saying so, where a clone has nothing beside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO / "data" / "samples"

# Full shared file -> the sample cut from it by data/samples/cut_samples.py.
SAMPLE_OF = {
    "us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz": "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz",
    "us_equity_nbbo_BAC_2013-10-07_2013-10-11.csv.gz": "us_equity_nbbo_BAC_2013-10-08.csv.gz",
    "us_equity_minute_bars_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz": "us_equity_minute_bars_SPY_BAC_AIG_2013-10-08.csv.gz",
    "fx_quotes_oanda_EURUSD_NZDUSD_2014-05-01_2014-05-15.csv.gz": "fx_quotes_oanda_EURUSD_NZDUSD_2014-05-01_2014-05-02.csv.gz",
    "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz": "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
    "crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz": "crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
    "us_equity_daily_bars_10_symbols_1998-2021.csv.gz": "us_equity_daily_bars_10_symbols_1998-2021.csv.gz",
}


def shared_data_dir() -> Path:
    """The folder of the full shared files (it may not exist)."""
    return Path(os.environ.get("TICKFORGE_SHARED_DATA", REPO.parent / "shared" / "data"))


def sample_path(full_name: str) -> Path:
    """The sample the repository ships for a full shared file's name."""
    if full_name not in SAMPLE_OF:
        raise KeyError(f"no sample is cut from {full_name!r}; known: {sorted(SAMPLE_OF)}")
    return SAMPLES_DIR / SAMPLE_OF[full_name]


def full_or_sample(full_name: str) -> Path:
    """The full shared file where it is present, else its sample (a line on stderr says so)."""
    full = shared_data_dir() / full_name
    if full.is_file():
        return full
    sample = sample_path(full_name)
    print(f"{full} is absent: using the repository's sample {sample.relative_to(REPO)}", file=sys.stderr)
    return sample
