"""Matplotlib helpers shared by the charts: atomic PNG writes and plain tick labels on log axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

#: the PNG ``Software`` text llmsim's charts carry: how a later plot knows it may replace one
SOFTWARE = "llmsim"
#: chart names drawn before the charts were marked (with matplotlib's own ``Software`` text)
CHART_NAMES = ("latency_vs_throughput.png", "goodput_vs_load.png", "run_timeline.png")


def drawn_by_llmsim(path: Path) -> bool:
    """Whether the PNG at ``path`` is one of llmsim's charts (its ``Software`` text says so)."""
    try:
        with open(path, "rb") as file:
            head = file.read(1 << 16)
    except OSError:
        return False
    if b"Software\x00" + SOFTWARE.encode() in head:
        return True
    return path.name in CHART_NAMES and b"Software\x00Matplotlib" in head


def save_figure(fig: Any, path: Path) -> None:
    """A PNG written atomically (an interrupted plot never leaves a truncated image).

    A file already there is replaced only when it is one of llmsim's charts; any other file, or a
    link, is left as it is (one-line error).
    """
    from llmsim.errors import LLMSimError
    from llmsim.outputs import atomic_write

    if path.is_symlink() or (path.exists() and not (path.is_file() and drawn_by_llmsim(path))):
        raise LLMSimError(f"{path} was not drawn by llmsim.plot: it is left as it is (move it away, or give --out)")
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", metadata={"Software": SOFTWARE}))


def plain_number(value: float, _position: Any = None) -> str:
    """``0.5``, ``20``, ``1,500``: a tick label without powers of ten."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def plain_log_axis(ax: Any, axis: str = "y") -> None:
    """A log axis labelled with plain numbers (``20``, ``50``, ``100``, not ``2x10^1``): the decades, and
    1-2-5 steps within them when the data span less than about two decades."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    target.set_major_locator(LogLocator(base=10))
    target.set_major_formatter(FuncFormatter(plain_number))
    if low > 0 and high / low < 100:
        span = high / low
        subs = (2.0, 5.0) if span > 8 else (1.5, 2.0, 3.0, 5.0, 7.0) if span > 3 else (1.5, 2, 3, 4, 5, 6, 7, 8)
        target.set_minor_locator(LogLocator(base=10, subs=subs))
        target.set_minor_formatter(FuncFormatter(plain_number))
    else:
        target.set_minor_formatter(NullFormatter())
