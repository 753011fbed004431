"""What the live view shows, as plain functions of data: frames, indicator overlays, charts, badges.

Indicators follow the one definition of :mod:`tickforge.platform.signals`: on 1 s bars they are
the signal worker's records from ``signals.1s``; on 1 m and 5 m bars the same kernels
(:func:`~tickforge.platform.signals.batch.compute_signals`) run over the bars shown, with the same
per-session resets and readiness (null until ready).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import altair as alt
import polars as pl

from tickforge.platform.signals.batch import compute_signals
from tickforge.platform.signals.spec import INDICATOR_FIELDS

if TYPE_CHECKING:
    from tickforge.dashboard.cache import Health
    from tickforge.platform.signals.pairs import PairStats

UP = "#26a69a"
DOWN = "#ef5350"
FILL_COLOR = "#1565c0"
OVERLAYS = {"ema12": "#1f77b4", "ema26": "#ff7f0e", "vwap_session": "#9467bd", "boll_mid": "#7f7f7f"}


def exchange_zone(session_tz: Mapping[str, str], symbol: str) -> str:
    """The IANA zone a symbol's times show in: its class's session zone (UTC for a symbol of no class)."""
    return session_tz.get(symbol, "UTC")


def merge_bars(history: pl.DataFrame, live: pl.DataFrame, limit: int) -> pl.DataFrame:
    """History then live bars, one row per window_start (live wins), the latest ``limit``."""
    frames = [f for f in (history, live) if f.height]
    if not frames:
        return live
    merged = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    return merged.unique("window_start", keep="last", maintain_order=True).sort("window_start").tail(limit)


def with_indicators(
    bars: pl.DataFrame, timeframe: str, symbol: str, session_tz: Mapping[str, str], signals: pl.DataFrame | None = None
) -> pl.DataFrame:
    """The bars with every indicator column (null where not ready or not known)."""
    if bars.is_empty():
        return bars.with_columns([pl.lit(None, pl.Float64).alias(c) for c in INDICATOR_FIELDS])
    if timeframe == "1s":
        if signals is None or signals.is_empty():
            values = pl.DataFrame(schema={"window_start": pl.Int64, **{c: pl.Float64 for c in INDICATOR_FIELDS}})
        else:
            values = signals.select("window_start", *INDICATOR_FIELDS)
    else:
        zone = {symbol: exchange_zone(session_tz, symbol)}
        values = compute_signals(bars.with_columns(pl.lit(symbol).alias("symbol")), zone).select(
            "window_start", *INDICATOR_FIELDS
        )
    return bars.join(values, on="window_start", how="left")


def exchange_times(epoch_ms: pl.Expr, zone: str, layout: str = "%Y-%m-%d %H:%M:%S %Z") -> pl.Expr:
    """Epoch milliseconds as wall-clock text in the exchange's zone (``%Z``: EDT, EST, UTC)."""
    return (
        pl.from_epoch(epoch_ms, time_unit="ms")
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(zone)
        .dt.strftime(layout)
    )


def chart_frame(frame: pl.DataFrame, zone: str = "UTC") -> pl.DataFrame:
    """The bars with what the chart encodes: ``slot``, one category per bar (its start in the
    exchange's zone, with the UTC offset so a repeated hour at a clock change stays two bars),
    ``time`` for the tooltip, and ``up``."""
    return frame.with_columns(
        slot=exchange_times(pl.col("window_start"), zone, "%Y-%m-%d %H:%M:%S %z"),
        time=exchange_times(pl.col("window_start"), zone),
        up=pl.col("close") >= pl.col("open"),
    )


def time_axis(slots: list[str], zone: str, ticks: int = 8, labels: bool = True, title: bool = True) -> alt.Axis:
    """An axis of a few evenly spaced bar starts, labelled in the exchange's zone: the time of
    day (to the second where a bar starts off the minute), with the date when the bars span days."""
    name = f"{zone} time" if title else None
    if not slots:
        return alt.Axis(title=name, labels=labels)
    count = min(ticks, len(slots))
    values = [slots[round(i * (len(slots) - 1) / max(count - 1, 1))] for i in range(count)]
    one_day = slots[0][:10] == slots[-1][:10]
    to_second = any(slot[17:19] != "00" for slot in slots)
    start, end = (11 if one_day else 5), (19 if to_second else 16)
    return alt.Axis(
        values=values,
        labelExpr=f"slice(datum.value, {start}, {end})",
        labelAngle=0,
        labelOverlap=True,
        title=name,
        labels=labels,
        ticks=labels,
    )


def candle_width(bars: int, width: int) -> float:
    """Pixels of a candle body: most of its slot, never a hairline, never a slab when few bars show."""
    return max(1.0, min(0.7 * width / max(bars, 1), 16.0))


def price_domain(frame: pl.DataFrame) -> list[float] | None:
    """The price axis spans the candles (low to high, padded), not the overlays: a Bollinger band
    blown wide by one auction print must not flatten every candle (the overlays are clipped)."""
    if frame.is_empty():
        return None
    low, high = float(frame["low"].min()), float(frame["high"].max())  # type: ignore[arg-type]
    pad = max((high - low) * 0.08, abs(high) * 1e-4)
    return [low - pad, high + pad]


def fill_marks(framed: pl.DataFrame, fills: pl.DataFrame | None) -> pl.DataFrame:
    """The fills inside the bars shown, each on the slot of the bar whose window holds it."""
    schema = {"slot": pl.String, "ts_ms": pl.Int64, "side": pl.String, "price": pl.Float64, "quantity": pl.Float64}
    if fills is None or fills.is_empty() or framed.is_empty():
        return pl.DataFrame(schema=schema)
    windows = framed.select("window_start", "window_end", "slot").sort("window_start")
    return (
        fills.select("ts_ms", "side", "price", "quantity")
        .sort("ts_ms")
        .join_asof(windows, left_on="ts_ms", right_on="window_start", strategy="backward")
        .filter(pl.col("ts_ms") < pl.col("window_end"))
        .select(list(schema))
    )


def price_chart(
    frame: pl.DataFrame, zone: str = "UTC", width: int = 900, fills: pl.DataFrame | None = None
) -> alt.VConcatChart:
    """Candlesticks with volume and overlays (EMA, Bollinger, VWAP) over a MACD and an RSI pane.

    One slot per bar (time gaps without bars are closed up), so candles keep their width when
    bars are sparse (after hours), and every candle shows a tick at its close, so a bar of one
    trade (open = close) is not a body of no height. The time axis reads the exchange's zone.
    """
    framed = chart_frame(frame, zone)
    data = framed.to_pandas()
    slots = framed["slot"].to_list()
    scale = alt.Scale(domain=slots, paddingInner=0.2, paddingOuter=0.1)

    def pane(axis: alt.Axis) -> alt.Chart:
        return alt.Chart(data).encode(x=alt.X("slot:O", sort=slots, scale=scale, axis=axis))

    top = pane(time_axis(slots, zone, title=False))
    middle = pane(time_axis(slots, zone, labels=False, title=False))
    bottom = pane(time_axis(slots, zone))
    color = alt.condition("datum.up", alt.value(UP), alt.value(DOWN))
    size = candle_width(len(slots), width)
    price_scale = alt.Scale(zero=False, domain=price_domain(frame) or alt.Undefined)
    band = top.mark_area(opacity=0.15, color="#7f7f7f", clip=True).encode(
        y=alt.Y("boll_lower:Q", scale=price_scale, title="price"), y2="boll_upper:Q"
    )
    wick = top.mark_rule().encode(y=alt.Y("low:Q", scale=price_scale), y2="high:Q", color=color)
    body = top.mark_bar(size=size).encode(y=alt.Y("open:Q", scale=price_scale), y2="close:Q", color=color)
    close = top.mark_tick(size=size, thickness=1.5).encode(y=alt.Y("close:Q", scale=price_scale), color=color)
    lines = (
        top.transform_fold(list(OVERLAYS), as_=["indicator", "value"])
        .mark_line(strokeWidth=1.2, clip=True)
        .encode(
            y=alt.Y("value:Q", scale=price_scale),
            color=alt.Color(
                "indicator:N",
                scale=alt.Scale(domain=list(OVERLAYS), range=list(OVERLAYS.values())),
                legend=alt.Legend(orient="top", title=None),
            ),
        )
    )
    tooltip = top.mark_bar(opacity=0).encode(  # the bar's whole slot, top to bottom
        tooltip=[
            alt.Tooltip("time:N", title=f"time ({zone})"),
            "open:Q",
            "high:Q",
            "low:Q",
            "close:Q",
            "volume:Q",
            "ema12:Q",
            "ema26:Q",
            "vwap_session:Q",
            "rsi14:Q",
        ],
    )
    marks = fill_marks(framed, fills).with_columns(time=exchange_times(pl.col("ts_ms"), zone))
    layers = [band, wick, body, close, lines, tooltip]
    if marks.height:
        layers.append(
            alt.Chart(marks.to_pandas())
            .mark_point(filled=True, size=90, color=FILL_COLOR, opacity=0.9)
            .encode(
                x=alt.X("slot:O", sort=slots, scale=scale, axis=time_axis(slots, zone, title=False)),
                y=alt.Y("price:Q", scale=price_scale),
                shape=alt.Shape(
                    "side:N",
                    scale=alt.Scale(domain=["buy", "sell"], range=["triangle-up", "triangle-down"]),
                    legend=alt.Legend(orient="top", title="fills"),
                ),
                tooltip=[alt.Tooltip("time:N", title=f"fill ({zone})"), "side:N", "quantity:Q", "price:Q"],
            )
        )
    price = alt.layer(*layers).properties(height=320, width=width)
    volume = (
        middle.mark_bar(size=size)
        .encode(y=alt.Y("volume:Q", title="volume"), color=color)
        .properties(height=70, width=width)
    )
    macd = alt.layer(
        middle.mark_bar(opacity=0.5, size=size).encode(
            y=alt.Y("macd_hist:Q", title="MACD"),
            color=alt.condition("datum.macd_hist >= 0", alt.value(UP), alt.value(DOWN)),
        ),
        middle.mark_line(color="#1f77b4").encode(y="macd:Q"),
        middle.mark_line(color="#ff7f0e").encode(y="macd_signal:Q"),
    ).properties(height=90, width=width)
    rsi = alt.layer(
        bottom.mark_line(color="#9467bd").encode(y=alt.Y("rsi14:Q", title="RSI 14", scale=alt.Scale(domain=[0, 100]))),
        alt.Chart(data).mark_rule(strokeDash=[4, 4], color="#999").encode(y="level:Q").transform_calculate(level="30"),
        alt.Chart(data).mark_rule(strokeDash=[4, 4], color="#999").encode(y="level:Q").transform_calculate(level="70"),
    ).properties(height=90, width=width)
    return alt.vconcat(price, volume, macd, rsi, spacing=6).resolve_scale(x="shared", color="independent")


BadgeColor = Literal["green", "orange", "red", "gray"]


@dataclass(frozen=True)
class Badge:
    label: str
    value: str
    color: BadgeColor
    help: str


def _grade(value: float | None, ok: float, warn: float) -> BadgeColor:
    if value is None:
        return "gray"
    return "green" if value <= ok else "orange" if value <= warn else "red"


def badges(health: Health, now_ms: int) -> list[Badge]:
    """End-to-end latency, consumer lag, data freshness and dead letters, graded; each badge's
    help says what it measures (the page shows it as the badge's tooltip)."""
    latency = sorted(health.latency_ms)
    p50 = latency[len(latency) // 2] if latency else None
    p99 = latency[min(len(latency) - 1, math.ceil(len(latency) * 0.99) - 1)] if latency else None
    lag_total = sum(health.lag.values()) if health.lag else None
    fresh = (now_ms - health.last_received_ms) / 1000 if health.last_received_ms is not None else None
    dead = sum(health.dead_letters.values())
    per_worker = ", ".join(f"{k} {v:,}" for k, v in health.lag.items()) or "no worker has committed yet"
    per_reason = ", ".join(f"{k}: {v:,}" for k, v in sorted(health.dead_letters.items())) or "none"
    return [
        Badge(
            "latency",
            "n/a" if p50 is None else f"{p50} ms p50 / {p99} ms p99",
            _grade(p50, 1_000, 5_000),
            "Latency: wall-clock time from the bar worker emitting a 1 s bar to this view receiving it "
            "(end to end), median and 99th percentile of the last 500 live bars. "
            "Green up to 1 s, orange up to 5 s.",
        ),
        Badge(
            "consumer lag",
            "n/a" if lag_total is None else f"{lag_total:,} msgs",
            _grade(lag_total, 1_000, 50_000),
            "Consumer lag: messages the streaming workers still have to read (the end of their input "
            f"topics minus the position they have committed), summed. Per worker: {per_worker}. "
            "Green up to 1,000, orange up to 50,000.",
        ),
        Badge(
            "freshness",
            "no data" if fresh is None else f"{fresh:.1f} s ago",
            _grade(fresh, 5, 60),
            "Freshness: wall-clock time since this view last received a bar, signal or pair statistic "
            "from Kafka. Green up to 5 s, orange up to 60 s.",
        ),
        Badge(
            "dead letters",
            f"{dead:,}",
            "green" if dead == 0 else "orange",
            "Dead letters: input the pipeline refused and set aside on the dead-letter topic, each with "
            f"a reason, counted over the topic's retention. By reason: {per_reason}. Green when there are none, "
            "orange otherwise.",
        ),
    ]


def latest_details(frame: pl.DataFrame, zone: str = "UTC") -> dict[str, object]:
    """The last bar's fields (and indicators) for display, times in the exchange's zone; empty without bars."""
    if frame.is_empty():
        return {}
    row = frame.row(-1, named=True)
    keys = [
        "window_start",
        "window_end",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "vwap",
        "trade_count",
        "spread_bps",
        "imbalance",
        "ema12",
        "ema26",
        "macd",
        "macd_signal",
        "rsi14",
        "boll_upper",
        "boll_lower",
        "vwap_session",
    ]
    out: dict[str, object] = {}
    for key in keys:
        if key not in row:
            continue
        value = row[key]
        if key in ("window_start", "window_end") and value is not None:
            value = pl.select(exchange_times(pl.lit(value, pl.Int64), zone)).item()
        out[key] = value
    return out


def pairs_table(stats: list[PairStats], session_tz: Mapping[str, str] | None = None) -> pl.DataFrame:
    """One row per candidate pair; ``as_of`` in the zone of the pair's first symbol."""
    zones = session_tz or {}
    rows = [
        {
            "pair": f"{s.symbol_a}/{s.symbol_b}",
            "as_of": pl.select(
                exchange_times(pl.lit(s.as_of, pl.Int64), exchange_zone(zones, s.symbol_a), "%Y-%m-%d %H:%M %Z")
            ).item(),
            "n_obs": s.n_obs,
            "return_corr": s.return_correlation,
            "hedge_ratio": s.hedge_ratio,
            "coint_p": s.coint_pvalue,
            "spread_z": s.spread_zscore,
            "half_life_min": s.half_life,
        }
        for s in stats
    ]
    if not rows:
        return pl.DataFrame(schema={"pair": pl.String, "as_of": pl.String, "n_obs": pl.Int64})
    return pl.DataFrame(rows)


def orders_table(orders: pl.DataFrame, zone: str, limit: int = 50) -> pl.DataFrame:
    """The latest ``limit`` orders (latest decision first), decision times in the exchange's zone."""
    return orders.head(limit).select(
        decided=exchange_times(pl.col("decision_ts_ms"), zone),
        side="side",
        quantity="quantity",
        type="order_type",
        limit_price="limit_price",
        status="status",
        filled="filled_quantity",
        avg_price="average_fill_price",
        book=pl.col("book").fill_null(pl.col("strategy")),
        client_order_id="client_order_id",
    )


def fills_table(fills: pl.DataFrame, zone: str, limit: int = 50) -> pl.DataFrame:
    """The latest ``limit`` fills (latest first), times in the exchange's zone."""
    return fills.head(limit).select(
        time=exchange_times(pl.col("ts_ms"), zone),
        side="side",
        quantity="quantity",
        price="price",
        liquidity="liquidity",
        fee="fee",
        client_order_id="client_order_id",
    )
