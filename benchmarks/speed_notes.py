"""Observations of the speed benchmark page (used by ``speed_render.py``): findings
computed from the measurements, each skipped when its data is missing."""

from speed_tables import (
    FLOOR_ATOM_GROWTH,
    FLOOR_MOLECULE_OVERHEAD,
    LOOP_ADAM_MODE,
    PAPER_MODE,
    Results,
    atom_frames_growth,
    fmt,
    layers,
    measured,
    ok,
)

FRAME_RANGE = "ecse::frame_builder (forward)"
ELEMENTWISE = ("aten::mul", "aten::div", "aten::neg")
CUTOFF = 4.5


def _profile(r: Results, pair: str, mode: str = "ecse-atom") -> dict | None:
    """The profile of ``pair`` in ``mode``, if any."""
    return next(
        (p for p in r.profiles if p["pair"] == pair and p.get("mode", mode) == mode),
        None,
    )


def scaling_note(r: Results) -> str | None:
    """Cost per atom of per-atom frames from the smallest to the largest cell."""
    scaling = atom_frames_growth(r)
    if scaling is None:
        return None
    first, last, growth, _, user = scaling
    b = r.inference("tiny", last, "ecse-atom")
    kernel = b["sys"] / b["cpu"]
    if growth > FLOOR_ATOM_GROWTH and user <= FLOOR_ATOM_GROWTH:
        text = "**Page faults, not the algorithm, make atom frames grow with size.**"
    else:
        text = "**Cost per atom of the per-atom paths.**"
    text += (
        f" From {r.atoms(first)} to {r.atoms(last)} atoms the CPU time per atom of "
        f"the tiny model's ECSE-atom call grows {growth:.2f}x and its user time per "
        f"atom {user:.2f}x; at {r.atoms(last)} atoms {100 * kernel:.0f}% of its CPU "
        "time is spent in the kernel."
    )
    token = atom_frames_growth(r, "ecse-token")
    if token is not None:
        text += f" With token frames the CPU time per atom grows {token[2]:.2f}x."
    tuned = r.allocator().get(last, {}).get("ecse-atom")
    if measured(tuned):
        text += (
            f" With glibc's mmap off the ECSE-atom call takes {fmt(tuned['cpu'])} ms "
            f"of CPU time instead of {fmt(b['cpu'])} ms ("
            f"{b['cpu'] / tuned['cpu']:.2f}x; peak memory {fmt(tuned['mem'])} MB "
            f"instead of {fmt(b['mem'])} MB)."
        )
    if kernel >= 0.1:
        text += (
            " Large activations above glibc's largest mmap threshold (32 MB) are "
            "mapped, faulted in and zeroed anew on every call; "
            "`MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>` (or jemalloc / "
            "tcmalloc through `LD_PRELOAD`) avoids it for large systems."
        )
    return text


def elementwise_note(r: Results) -> str | None:
    """Share of ``aten::mul``, ``div`` and ``neg`` in the profiles (if >= 10%)."""
    tiny, matched = _profile(r, "tiny"), _profile(r, "matched")

    def share(profiled):
        return sum(row["share"] for row in profiled["ops"] if row["op"] in ELEMENTWISE)

    if tiny is None or share(tiny) < 0.1:
        return None
    text = (
        "**Element-wise passes.** `aten::mul`, `aten::div` and `aten::neg` take "
        f"{100 * share(tiny):.0f}% of the self time of the {tiny['system']} "
        "ECSE-atom profile of the tiny model"
    )
    if matched is not None:
        text += (
            f" and {100 * share(matched):.0f}% of the {matched['system']} profile "
            "of the matched model"
        )
    return text + "."


def memory_note(r: Results) -> str | None:
    """Memory per atom of the per-atom paths with forces (matched, 64 atoms)."""
    plain, pet = (r.inference("matched", "C64", m) for m in ("plain", "pet"))
    atom, token = (
        r.inference("matched", "C64", m) for m in ("ecse-atom", "ecse-token")
    )
    if not (measured(plain) and ok(atom) and ok(pet)):
        return None
    per_atom = atom["mem"] / 64
    views = r.frames.get("C64", {}).get("after", {}).get("atom mean")
    text = (
        "**Memory of per-atom frames with forces.** The matched model needs "
        f"{fmt(per_atom)} MB per atom for an energy + forces call with atom frames "
        f"({fmt(plain['mem'] / 64)} MB plain, {fmt(pet['mem'] / 64)} MB for `pet`"
    )
    if ok(token):
        text += f", {fmt(token['mem'] / 64)} MB with token frames"
    text += f"): ~{per_atom:.0f} GB for 1000 atoms with atom frames."
    if views:
        text += (
            f" The ~{views:.1f} views per atom multiply the saved activations of "
            "every transformer layer; token frames average the edge embedding "
            "only, and the transformer runs once."
        )
    return text


def molecule_notes(r: Results) -> list[str]:
    """Structure frames on the ethanol trimer and on benzene."""
    notes = []
    modes = ("plain", "ecse-structure", "ecse-atom")
    get = {m: r.inference("matched", "ethanol x3", m) for m in modes}
    frames = r.frames
    if all(ok(x) for x in get.values()) and {"methane", "ethanol"} <= set(frames):
        single = [frames[m]["after"]["structure"] for m in ("methane", "ethanol")]
        n_trimer = frames["ethanol x3"]["after"]["structure"]
        preference = frames["ethanol x3"].get("centre preference length") or 0.0
        text = (
            "**Structure frames on molecules.** Pooling frames over a structure and "
            "pruning them against the best one"
            + (
                f" (ranked with the centre preference, length {preference:g} A)"
                if preference > 0
                else ""
            )
            + f" keeps {min(single)}-{max(single)} frames for one small molecule "
            f"(methane, ethanol) and {n_trimer} for three ethanol copies"
        )
        if n_trimer > 2 * max(single):
            text += " (the frames of distinct fragments do not compete)"
        plain = get["plain"]["cpu"]
        text += (
            f", so `ecse-structure` costs {get['ecse-structure']['cpu'] / plain:.1f}x "
            "plain at 27 atoms, and atom frames, at "
            f"{frames['ethanol x3']['after']['atom mean']:.1f} views per atom, "
            f"{get['ecse-atom']['cpu'] / plain:.1f}x."
        )
        notes.append(text)
    benzene = {m: r.inference("matched", "benzene", m) for m in modes}
    if all(ok(x) for x in benzene.values()) and "benzene" in frames:
        structure = benzene["ecse-structure"]["cpu"] / benzene["plain"]["cpu"]
        atom = benzene["ecse-atom"]["cpu"] / benzene["plain"]["cpu"]
        notes.append(
            "**Symmetric molecules.** Structure frames are as many as the frames "
            "that weigh about the same as the best one, and symmetry makes many of "
            "them equal: nearly-D6h benzene keeps "
            f"{frames['benzene']['after']['structure']} frames (its 12 proper "
            "rotations map every good frame to 11 others), "
            f"so `ecse-structure` costs {structure:.1f}x plain there"
            + (
                f", above the {FLOOR_MOLECULE_OVERHEAD:g}x floor"
                if structure > FLOOR_MOLECULE_OVERHEAD
                else ""
            )
            + ". An exact average over frames cannot use fewer frames than the "
            "proper rotations of the molecule's symmetry group; atom frames stay at "
            f"{atom:.1f}x, but they are a different function of the weights (for "
            "models trained with them)."
        )
    return notes


def training_note(r: Results) -> str | None:
    """Training throughput of plain, token-frame and paper ``pet_ecse``."""
    t = r.training
    if not (ok(t.get("pet")) and ok(t.get("plain"))):
        return None
    pet = t["pet"]["cpu"]
    matched = r.pairs["matched"]["hypers"]["pet_ecse"]
    text = (
        "**Training.** In `pet`'s shape with matched parameters (d_node "
        f"{matched['d_node']}), plain `pet_ecse` trains at "
        f"{pet / t['plain']['cpu']:.2f}x the throughput of `pet` (CPU time)"
    )
    if ok(t.get("ecse-token")):
        text += (
            f", with token frames (the default) at {pet / t['ecse-token']['cpu']:.2f}x"
        )
    if ok(t.get(LOOP_ADAM_MODE)):
        text += f", plain with torch's Adam at {pet / t[LOOP_ADAM_MODE]['cpu']:.2f}x"
    if ok(t.get(PAPER_MODE)):
        paper = r.pairs["paper"]["hypers"]["pet_ecse"]
        count = r.pairs["paper"]["parameters"]
        text += (
            f"; at the paper's configuration ({layers(paper)} layers, d_feedforward "
            f"{paper['d_feedforward']}, {paper['num_heads']} heads, "
            f"{count['pet_ecse']:,} parameters, {count['pet_ecse'] / count['pet']:.2f}x"
            f" `pet`'s) at {pet / t[PAPER_MODE]['cpu']:.2f}x"
        )
    text += "."
    if ok(t.get("plain+fallback")):
        extra = 100 * (t["plain+fallback"]["cpu"] / t["plain"]["cpu"] - 1)
        text += (
            " Training the isotropic fallback (`mtt train` with `during_training: "
            f"false`) changes the step time by {extra:+.0f}% in this run (steps vary "
            "by a few per cent between runs)."
        )
    return text


def first_call_note(r: Results) -> str | None:
    """First calls of the exported models against later ones."""
    firsts = [
        (result["first"], result["cpu"])
        for name, by_mode in r.speed.get("ase", {}).items()
        for result in by_mode.values()
        if measured(result) and not name.startswith("C")
    ]
    if not firsts:
        return None
    return (
        "**First calls of exported models.** TorchScript optimizes a loaded model "
        "during its first calls: on the molecules the first call takes "
        f"{fmt(min(f for f, _ in firsts))}-{fmt(max(f for f, _ in firsts))} ms "
        f"against {fmt(min(c for _, c in firsts))}-{fmt(max(c for _, c in firsts))}"
        " ms afterwards (one-off, but visible in short runs and tests)."
    )


def builder_note(r: Results) -> str | None:
    """Share of the frame builder in the forward pass (profiles)."""
    parts = []
    for profiled in r.profiles:
        builder = profiled["ranges"].get(FRAME_RANGE)
        forward = profiled["ranges"].get("model forward")
        if builder and forward:
            mode = profiled.get("mode", "ecse-atom")
            parts.append(
                f"{100 * builder / forward:.0f}% with {mode} "
                f"({profiled['pair']} model, {profiled['system']})"
            )
    if not parts:
        return None
    system = r.profiles[0]["system"]
    text = (
        "**Frame builder.** Building per-atom frames takes "
        + ", ".join(parts)
        + " of the forward pass"
    )
    if system in r.frames:
        neighbours = r.frames[system]["max neighbors"]
        text += (
            ": it forms all neighbour pairs of every atom ([atoms, neighbours, "
            f"neighbours, 3] cross products, {neighbours**2} pairs per atom in "
            f"{system} at {CUTOFF:g} A, padded) to find the adaptive inner cutoff"
        )
    return text + "."


def observations(r: Results) -> list[str]:
    """All findings that have their data."""
    notes = [scaling_note(r), elementwise_note(r), memory_note(r)]
    notes += molecule_notes(r)
    notes += [training_note(r), first_call_note(r), builder_note(r)]
    return [note for note in notes if note]
