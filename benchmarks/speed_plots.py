"""Plots of the speed benchmark page (used by ``speed_render.py``): cost per atom
against cell size, cost per call on the molecules, and rotational error against
cost of ECSE and quadrature."""

from pathlib import Path

import numpy as np
from speed_tables import PAPER_MODE, Results, measured, mode_label, ok

COLORS = {"pet": "C0", "plain": "C1", "ecse-atom": "C2", "ecse-token": "C4"}
MARKERS = {"pet": "o", "plain": "s", "ecse-atom": "^", "ecse-token": "v"}


def _save(fig, path: Path) -> Path:
    """Save ``fig`` to ``path`` (tight layout, 120 dpi)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def scaling_plot(r: Results, ax) -> None:
    """CPU ms per atom against the diamond cell size, both pairs, and the
    allocator check."""
    for pair, line in [("tiny", "-"), ("matched", "--")]:
        for mode in ("pet", "plain", "ecse-atom", "ecse-token"):
            points = [
                (r.atoms(c), r.inference(pair, c, mode)["cpu"] / r.atoms(c))
                for c in r.cells(pair)
                if ok(r.inference(pair, c, mode))
            ]
            if points:
                x, y = zip(*points, strict=True)
                label = f"{pair} {mode_label(mode)}"
                ax.plot(x, y, MARKERS[mode] + line, label=label, color=COLORS[mode])
    for mode in ("ecse-atom", "ecse-token"):
        tuned = [
            (r.atoms(cell), by_mode[mode]["cpu"] / r.atoms(cell))
            for cell, by_mode in r.allocator().items()
            if measured(by_mode.get(mode))
        ]
        if tuned:
            x, y = zip(*tuned, strict=True)
            label = f"tiny {mode_label(mode)}, glibc mmap off"
            ax.plot(
                x, y, MARKERS[mode] + ":", mfc="none", color=COLORS[mode], label=label
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (rattled diamond)")
    ax.set_ylabel("CPU ms per atom (energy + forces)")
    ax.set_title("Inference cost per atom (1 thread)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)


def molecules_plot(r: Results, ax) -> None:
    """CPU ms per call of every model on the matched pair's systems."""
    names = r.pairs["matched"]["systems"]
    contenders = [("matched", m, mode_label(m)) for m in r.pairs["matched"]["modes"]]
    if "paper" in r.pairs:
        contenders.insert(2, ("paper", "plain", f"pet_ecse {PAPER_MODE}"))
    width = 0.8 / len(contenders)
    for i, (pair, mode, label) in enumerate(contenders):
        results = [r.inference(pair, s, mode) for s in names]
        values = [res["cpu"] if ok(res) else 0.0 for res in results]
        offset = (i - (len(contenders) - 1) / 2) * width
        bars = ax.bar(np.arange(len(names)) + offset, values, width, label=label)
        for bar, res in zip(bars, results, strict=True):
            if ok(res) and res["status"] == "estimated":
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{s}\n({r.atoms(s)} atoms)" for s in names])
    ax.set_yscale("log")
    ax.set_ylabel("CPU ms per energy + forces call")
    ax.set_title("Raw-model inference (hatched: estimated)")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", which="both", alpha=0.3)


def quadrature_plot(r: Results, ax) -> None:
    """Relative energy error against CPU ms per call (ethanol)."""
    for name, result in r.quadrature.items():
        error = max(result["relative energy error"], 1e-12)
        if name.startswith("quadrature"):
            marker, color = "o", "C0"
        elif name == "plain":
            marker, color = "x", "C3"
        else:
            marker, color = "*", "C2"
        ax.scatter(result["cpu"], error, marker=marker, color=color, s=60)
        ax.annotate(
            name.replace("quadrature ", ""),
            (result["cpu"], error),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.axhline(1e-4, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("CPU ms per ASE get_forces call (ethanol)")
    ax.set_ylabel("std(E over rotations) / |E|")
    ax.set_title("ECSE vs quadrature (untrained pet_ecse)")
    ax.grid(True, which="both", alpha=0.3)


def plots(r: Results, out: Path) -> dict[str, Path]:
    """Write the plots that have data: {"scaling" | "molecules" | "quadrature":
    path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for name, draw, size, wanted in [
        ("scaling", scaling_plot, (6, 4), bool(r.cells())),
        ("molecules", molecules_plot, (7, 4), "inference" in r.speed),
        ("quadrature", quadrature_plot, (6, 4), bool(r.quadrature)),
    ]:
        if not wanted:
            continue
        fig, ax = plt.subplots(figsize=size)
        draw(r, ax)
        paths[name] = _save(fig, out / f"benchmarks-speed-{name}.png")
        plt.close(fig)
    return paths
