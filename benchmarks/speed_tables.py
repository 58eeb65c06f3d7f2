"""Tables of the speed benchmark page (used by ``speed_render.py``).

``Results`` wraps the JSON of ``speed_measure.py``, ``speed_frames.py`` and
``speed_profile.py``; the functions here format numbers and write the floors,
inference, allocator, ASE and training tables as markdown lines.
"""

import json
import math
from pathlib import Path

# ECSE floors (acceptance criteria) checked in the "Key ratios" table
FLOOR_ATOM_GROWTH = 1.3  # cost per atom, largest vs smallest cell, per-atom frames
FLOOR_ATOM_OVERHEAD_SOLID = 20.0  # atom / token frames vs plain, diamond
FLOOR_MOLECULE_OVERHEAD = 10.0  # ECSE vs plain, molecules <= 30 atoms
FLOOR_TRAINING = 1.0  # pet_ecse plain / pet training and inference throughput
PAPER_MODE = "plain, paper defaults"
LOOP_ADAM_MODE = "plain, torch's Adam"
ECSE_MODES = ["ecse-structure", "ecse-atom", "ecse-token"]
PER_ATOM_MODES = ["ecse-atom", "ecse-token"]
MEASURED = {"mem", "cpu", "wall", "sys", "first"}


def _nan(value):
    """JSON nulls of measured quantities (NaN written by the measuring scripts,
    e.g. peak memory where it cannot be measured) back to NaN."""
    if isinstance(value, dict):
        return {
            k: float("nan") if v is None and k in MEASURED else _nan(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return value


def load(path) -> dict:
    """A JSON file of the measuring scripts ({} for None)."""
    return _nan(json.loads(Path(path).read_text())) if path else {}


class Results:
    """The measurements of one benchmark run, from the three JSON files."""

    def __init__(self, speed: dict, frames: dict, profile: dict):
        self.speed = speed
        self.run_frames = frames
        self.frames = frames.get("frames", {})
        self.quadrature = frames.get("quadrature", {})
        self.profiles = profile.get("profiles", [])
        self.pairs = speed["pairs"]
        self.systems = {**frames.get("systems", {}), **speed["systems"]}
        self.training = speed.get("training", {})

    def atoms(self, system: str) -> int:
        """Number of atoms of ``system``."""
        return self.systems[system]["atoms"]

    def inference(self, pair: str, system: str, mode: str) -> dict | None:
        """The raw-model result of ``mode`` of ``pair`` on ``system``."""
        return self.speed.get("inference", {}).get(pair, {}).get(system, {}).get(mode)

    def ase(self, system: str, mode: str) -> dict | None:
        """The ASE result of ``mode`` on ``system``."""
        return self.speed.get("ase", {}).get(system, {}).get(mode)

    def allocator(self) -> dict:
        """{cell: {mode: result}} of the allocator check."""
        return self.speed.get("allocator", {})

    def cells(self, pair: str = "tiny") -> list[str]:
        """The diamond cells of ``pair``."""
        return [s for s in self.pairs[pair]["systems"] if s.startswith("C")]


def md_table(header, rows) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def fmt(value, digits=3) -> str:
    """A number in a few significant digits (n/a for None and NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.0f}"


def ok(result) -> bool:
    """Whether ``result`` was measured or estimated."""
    return result is not None and result.get("status") in ("measured", "estimated")


def measured(result) -> bool:
    """Whether ``result`` was measured (not estimated)."""
    return result is not None and result.get("status") == "measured"


def cost(result, per=1) -> str:
    """CPU ms (``~`` for estimates) or the status."""
    if not ok(result):
        return result["status"] if result else "n/a"
    prefix = "~" if result["status"] == "estimated" else ""
    return prefix + fmt(result["cpu"] / per)


def ratio(a, b, key="cpu") -> str:
    """a / b of the CPU (or ``key``) times, ``~`` where one is estimated."""
    if not (ok(a) and ok(b)) or key not in a or key not in b:
        return "n/a"
    prefix = "~" if "estimated" in (a["status"], b["status"]) else ""
    return prefix + f"{a[key] / b[key]:.2f}"


def mode_label(mode: str) -> str:
    """``pet`` or ``pet_ecse <mode>``."""
    return "pet" if mode == "pet" else f"pet_ecse {mode}"


def layers(hypers: dict) -> str:
    """``"3 x 3 post-LayerNorm"``: blocks x layers and normalization."""
    position = {"PreLN": "pre", "PostLN": "post"}[hypers["transformer_type"]]
    return (
        f"{hypers['num_gnn_layers']} x {hypers['num_attention_layers']} "
        f"{position}-{hypers['normalization']}"
    )


def atom_frames_growth(r: Results, mode: str = "ecse-atom"):
    """(smallest cell, largest cell, growth of the CPU, wall and user time per
    atom) of the tiny pair's ``mode`` calls, or None with fewer than two cells."""
    cells = [c for c in r.cells() if measured(r.inference("tiny", c, mode))]
    if len(cells) < 2:
        return None
    a = r.inference("tiny", cells[0], mode)
    b = r.inference("tiny", cells[-1], mode)
    scale = r.atoms(cells[0]) / r.atoms(cells[-1])
    return (
        cells[0],
        cells[-1],
        b["cpu"] / a["cpu"] * scale,
        b["wall"] / a["wall"] * scale,
        (b["cpu"] - b["sys"]) / (a["cpu"] - a["sys"]) * scale,
    )


def _floor_row(label, value, wall, floor, at_most=True) -> tuple:
    """A row of the floors table: label, value, wall ratio, bound, PASS/FAIL."""
    passes = value <= floor if at_most else value >= floor
    bound = f"<= {floor:g}" if at_most else f">= {floor:g}"
    return (label, f"{value:.2f}", wall, bound, "PASS" if passes else "FAIL")


def floors_table(r: Results) -> list[str]:
    """The "Key ratios against the floors" table."""
    rows = []
    for mode in PER_ATOM_MODES:
        scaling = atom_frames_growth(r, mode)
        if scaling is not None:
            first, last, growth, wall, user = scaling
            row = _floor_row(
                f"{mode} cost per atom, {last} / {first} (tiny pair)",
                growth,
                f"{wall:.2f}",
                FLOOR_ATOM_GROWTH,
            )
            rows.append((row[0], f"{row[1]} (user time only: {user:.2f})", *row[2:]))
        tuned = [
            (cell, by_mode[mode])
            for cell, by_mode in r.allocator().items()
            if measured(by_mode.get(mode))
        ]
        if len(tuned) == 2:
            (first, a), (last, b) = tuned
            scale = r.atoms(first) / r.atoms(last)
            rows.append(
                _floor_row(
                    f"same, glibc mmap off (allocator check), {last} / {first}",
                    b["cpu"] / a["cpu"] * scale,
                    f"{b['wall'] / a['wall'] * scale:.2f}",
                    FLOOR_ATOM_GROWTH,
                )
            )
    for pair in ("tiny", "matched"):
        for cell in r.cells(pair):
            for mode in PER_ATOM_MODES:
                a, b = r.inference(pair, cell, mode), r.inference(pair, cell, "plain")
                label = f"{mode} / plain, {cell} ({pair} pair)"
                if not (ok(a) and ok(b)):
                    status = a["status"] if a else "n/a"
                    rows.append((label, status, "", "", ""))
                    continue
                rows.append(
                    _floor_row(
                        label,
                        a["cpu"] / b["cpu"],
                        ratio(a, b, "wall"),
                        FLOOR_ATOM_OVERHEAD_SOLID,
                    )
                )
    for name in r.pairs["matched"]["systems"]:
        if name.startswith("C"):
            continue
        for mode in ECSE_MODES:
            a, b = (
                r.inference("matched", name, mode),
                r.inference("matched", name, "plain"),
            )
            if ok(a) and ok(b):
                rows.append(
                    _floor_row(
                        f"{mode} / plain, {name} ({r.atoms(name)} atoms)",
                        a["cpu"] / b["cpu"],
                        ratio(a, b, "wall"),
                        FLOOR_MOLECULE_OVERHEAD,
                    )
                )
    for name in r.pairs["matched"]["systems"]:
        for how, get in (("raw model", lambda s, m: r.inference("matched", s, m)),
                         ("ASE", r.ase)):  # fmt: skip
            a, b = get(name, "pet"), get(name, "plain")
            if ok(a) and ok(b):
                rows.append(
                    _floor_row(
                        f"inference throughput, pet_ecse plain / pet, {how}, {name}",
                        a["cpu"] / b["cpu"],
                        ratio(a, b, "wall"),
                        FLOOR_TRAINING,
                        at_most=False,
                    )
                )
    pet = r.training.get("pet")
    for mode, extra in [
        ("plain", ""),
        ("plain+fallback", ""),
        ("ecse-token", " (ECSE trained in, the default)"),
        (LOOP_ADAM_MODE, " (the model alone: same optimizer as pet)"),
        (PAPER_MODE, " (not matched in parameters)"),
    ]:
        if ok(r.training.get(mode)) and ok(pet):
            rows.append(
                _floor_row(
                    f"training throughput, pet_ecse {mode} / pet (structures/s){extra}",
                    pet["cpu"] / r.training[mode]["cpu"],
                    ratio(pet, r.training[mode], "wall"),
                    FLOOR_TRAINING,
                    at_most=False,
                )
            )
    header = ["ratio", "measured (CPU time)", "wall time", "floor", ""]
    return [md_table(header, rows)]


def inference_table(r: Results, pair: str) -> list[str]:
    """The raw-model table of ``pair`` (the matched one with the paper model)."""
    rows = []
    for name in r.pairs[pair]["systems"]:
        n = r.atoms(name)
        keys = [(pair, mode) for mode in r.pairs[pair]["modes"]]
        if pair == "matched" and r.inference("paper", name, "plain"):
            keys.insert(2, ("paper", "plain"))
        for key_pair, mode in keys:
            result = r.inference(key_pair, name, mode)
            if result is None:
                continue
            pet = r.inference(pair, name, "pet")
            plain = r.inference(pair, name, "plain") if key_pair == pair else None
            label = (
                f"pet_ecse {PAPER_MODE}" if key_pair == "paper" else mode_label(mode)
            )
            done = measured(result)
            memory = result.get("note", "")
            if ok(result):
                memory = ("~" if not done else "") + fmt(result["mem"])
            rows.append(
                (
                    name,
                    n,
                    label,
                    cost(result),
                    cost(result, n),
                    fmt(result["wall"]) if done else "",
                    f"{100 * result['sys'] / result['cpu']:.0f}%" if done else "",
                    ratio(result, pet),
                    "" if mode == "pet" or plain is None else ratio(result, plain),
                    memory,
                )
            )
    header = ["system", "atoms", "model", "CPU ms/call", "CPU ms/atom"]
    header += ["wall ms/call", "system share", "vs pet", "vs plain", "peak MB"]
    return [md_table(header, rows)]


def allocator_table(r: Results) -> list[str]:
    """Default allocator against glibc's mmap off, per cell and mode."""
    rows = []
    for cell, by_mode in r.allocator().items():
        n = r.atoms(cell)
        for mode, tuned in by_mode.items():
            default = r.inference("tiny", cell, mode)
            if not (measured(tuned) and measured(default)):
                rows.append((cell, mode_label(mode), tuned["status"], "", "", "", ""))
                continue
            rows.append(
                (
                    cell,
                    mode_label(mode),
                    f"{fmt(default['cpu'] / n)} "
                    f"({100 * default['sys'] / default['cpu']:.0f}%)",
                    f"{fmt(tuned['cpu'] / n)} "
                    f"({100 * tuned['sys'] / tuned['cpu']:.0f}%)",
                    f"{default['cpu'] / tuned['cpu']:.2f}",
                    fmt(default["mem"]),
                    fmt(tuned["mem"]),
                )
            )
    header = ["system", "model", "CPU ms/atom, default (system share)"]
    header += ["glibc mmap off", "speed-up", "peak MB, default", "peak MB, mmap off"]
    return [md_table(header, rows)]


def ase_table(r: Results) -> list[str]:
    """Exported models through ``MetatomicCalculator``."""
    rows = []
    for name in r.pairs["matched"]["systems"]:
        for mode in r.pairs["matched"]["modes"]:
            result = r.ase(name, mode)
            if result is None:
                continue
            raw = r.inference("matched", name, mode)
            done = measured(result)
            rows.append(
                (
                    name,
                    mode_label(mode),
                    cost(result),
                    fmt(result["wall"]) if done else "",
                    ratio(result, r.ase(name, "pet")),
                    "" if mode == "pet" else ratio(result, r.ase(name, "plain")),
                    fmt(result["cpu"] - raw["cpu"]) if done and ok(raw) else "",
                    fmt(result["first"]) if done else "",
                    fmt(result["mem"]) if done else "",
                )
            )
    header = ["system", "export", "CPU ms/call", "wall ms/call", "vs pet"]
    header += ["vs plain", "minus raw model (ms)", "first call (ms)", "peak MB"]
    return [md_table(header, rows)]


def training_table(r: Results) -> list[str]:
    """One training step of every contender."""
    rows = []
    pet = r.training.get("pet")
    for mode, result in r.training.items():
        if not ok(result):
            rows.append((mode_label(mode), result["status"], "", "", "", "", "", ""))
            continue
        rows.append(
            (
                mode_label(mode),
                fmt(result["cpu"]),
                fmt(result["wall"]),
                fmt(result["structures/s"]),
                fmt(result["atoms/s"]),
                ratio(pet, result),
                ratio(pet, result, "wall"),
                fmt(result["mem"]),
            )
        )
    header = ["model", "CPU ms/step", "wall ms/step", "structures/s (CPU)"]
    header += ["atoms/s (CPU)", "throughput vs pet", "(wall)", "peak MB"]
    return [md_table(header, rows)]
