"""Cut the compact real samples in this folder from the full shared data sets.

    python data/samples/cut_samples.py [--source ../shared/data]

Rows are copied byte for byte (header included), so the samples keep every quirk of the vendor
files; only whole days are kept. Writes the files and ``SHA256SUMS`` beside this script.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
NEW_YORK = ZoneInfo("America/New_York")
DEMO_DAY = date(2013, 10, 8)


def _ny_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, NEW_YORK).date()


def _utc_day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).date()


def _cut(source: Path, target: Path, keep: Callable[[int], bool]) -> None:
    """Header plus the rows whose leading ``ts_ms`` field ``keep`` accepts."""
    with gzip.open(source, "rb") as src, gzip.GzipFile(target, "wb", mtime=0) as dst:
        dst.write(src.readline())
        for line in src:
            if keep(int(line.split(b",", 1)[0])):
                dst.write(line)


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("TICKFORGE_SHARED_DATA", HERE.parents[2] / "shared" / "data"))
    parser.add_argument("--source", type=Path, default=default)
    src = parser.parse_args().source
    fx_days = {date(2014, 5, 1), date(2014, 5, 2)}

    def demo(ts: int) -> bool:
        return _ny_day(ts) == DEMO_DAY

    plan: list[tuple[str, str, Callable[[Path, Path], None]]] = [
        ("us_equity_trades_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz",
         "us_equity_trades_SPY_BAC_AIG_2013-10-08.csv.gz", lambda s, t: _cut(s, t, demo)),
        ("us_equity_nbbo_BAC_2013-10-07_2013-10-11.csv.gz",
         "us_equity_nbbo_BAC_2013-10-08.csv.gz", lambda s, t: _cut(s, t, demo)),
        ("us_equity_minute_bars_SPY_BAC_AIG_2013-10-07_2013-10-11.csv.gz",
         "us_equity_minute_bars_SPY_BAC_AIG_2013-10-08.csv.gz", lambda s, t: _cut(s, t, demo)),
        ("fx_quotes_oanda_EURUSD_NZDUSD_2014-05-01_2014-05-15.csv.gz",
         "fx_quotes_oanda_EURUSD_NZDUSD_2014-05-01_2014-05-02.csv.gz",
         lambda s, t: _cut(s, t, lambda ts: _utc_day(ts) in fx_days)),
        ("crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
         "crypto_binance_trades_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz", _copy),
        ("crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz",
         "crypto_binance_bbo_2024-08-08T2354Z_2024-08-09T0005Z.csv.gz", _copy),
        ("us_equity_daily_bars_10_symbols_1998-2021.csv.gz",
         "us_equity_daily_bars_10_symbols_1998-2021.csv.gz", _copy),
    ]
    sums = []
    for source_name, target_name, make in plan:
        target = HERE / target_name
        make(src / source_name, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        sums.append(f"{digest}  {target_name}\n")
        print(f"{target_name}: {target.stat().st_size:,} bytes")
    (HERE / "SHA256SUMS").write_text("".join(sums))


if __name__ == "__main__":
    main()
