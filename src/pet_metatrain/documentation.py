"""
PET with ECSE
=============

``pet_ecse`` is the Point Edge Transformer (PET, :footcite:p:`pozdnyakov_smooth_2023`),
a transformer over directed edges that reads Cartesian neighbour vectors, together with
the equivariant coordinate-system ensemble (ECSE) of the same paper, which makes the
model *exactly* rotationally equivariant.

PET itself is smooth and invariant to translations and permutations but not to
rotations; it is trained with O(3) augmentation. ECSE evaluates PET in local
coordinate systems built from pairs of neighbours and averages the results with
smooth weights, so that energies are exactly invariant and forces, stress and vector
outputs exactly equivariant. It is controlled by the ``symmetrization`` block of the
model hypers and runs inside the exported model, so every engine gets the symmetrized
predictions.

Additional outputs
------------------

- ``features``: the PET features (central token and cutoff-weighted sum of edge
  tokens, for every message-passing block).
- ``mtt::aux::{target}_last_layer_features``: the features entering the last linear
  layer of each target's heads (used by LLPR uncertainty estimates).
"""

from typing import Literal, Optional

from metatrain.composition.documentation import FixedCompositionWeights
from metatrain.pet.modules.finetuning import FinetuneHypers, NoFinetuneHypers
from metatrain.scaler.documentation import FixedScalerWeights
from metatrain.utils.hypers import init_with_defaults
from metatrain.utils.loss import LossSpecification
from typing_extensions import NotRequired, TypedDict


class SymmetrizationHypers(TypedDict):
    """How ECSE makes the model exactly rotationally equivariant."""

    method: Literal["ecse", "none"] = "ecse"
    """``ecse`` symmetrizes every prediction exactly over rotations; ``none`` gives
    plain PET (not rotationally equivariant)."""
    frames: Literal["auto", "token", "structure", "atom"] = "auto"
    """How frames are applied. ``token`` (the default through ``auto``) embeds
    each edge token in every frame of its centre atom and averages the embedding;
    the transformer then runs once per atom on invariant tokens. It costs about
    as much as plain PET at any system size, and it is a function of its own, so
    it is always trained in. ``structure`` pools the frames of all atoms of a
    structure, prunes them, and evaluates PET on the whole structure rotated into
    each surviving frame: an a-posteriori average of a plainly trained model (as
    in the paper), whose cost grows with the square of the system size (small
    molecules, ``pet-ecse symmetrize``). ``atom`` runs each atom's transformer in
    each of its frames and averages its output tokens in every message-passing
    block (several times the cost of plain PET; trained in). ``auto`` is
    ``token`` when ``during_training`` is true and ``structure`` otherwise."""
    during_training: bool = True
    """Symmetrize while training. ``frames: token`` and ``atom`` always do;
    with ``frames: auto``, false selects ``structure`` frames applied after
    plain training."""
    pair_order: Literal["species", "both"] = "species"
    """Which ordered neighbour pairs (j, k) make frames. The frames of (j, k) and
    (k, j) differ, and ``both`` (the paper) uses both. ``species`` keeps a single
    order where j and k are of different species (the heavier neighbour first):
    atomic numbers do not change under rotations, so the weighted frames still
    co-rotate and the average stays exact and smooth, with fewer frames (ethanol:
    1.8 instead of 2.4 per atom; benzene: 24 instead of 36 structure frames).
    Pairs of the same species keep both orders."""
    max_outer_cutoff: float = 5.0
    """Bound (in the length unit of the data set) on the radius within which frames
    and the adaptive inner cutoff are looked for; the model cutoff if smaller.
    The soft inner cutoff (``beta`` 1, token frames) is a weighted average over
    the neighbour pairs inside this radius, so it moves outwards as the radius
    takes in more pairs: a rattled 64-atom bcc Mo cell has 168 token frames per
    atom within 4.5 A, 624 within 6 and 3178 within 8, where an energy + forces
    call took 20 s and 5.6 GB against ``pet``'s 1.1 s and 1.2 GB
    (benchmarks/cutoff_scaling.py). The bound keeps the frames of a 5 A
    neighbourhood whatever the model cutoff (cutoff 8: 1.8 s and 1.7 GB; models
    with cutoff 4.5, the default, are unchanged; checkpoints keep the bound they
    were trained with)."""
    beta: Optional[float] = None
    """Sharpness (inverse length) of the smooth minimum defining the adaptive
    inner cutoff (``None``: 5 for ``structure`` and ``atom`` frames, 1 for
    ``token`` frames). A sharp minimum follows the nearest neighbour pair, and
    where that pair turns collinear or a bond breaks it jumps outwards within a
    fraction of an MD step, switching frames on at once: along a 0.4 ps
    ethanol trajectory, the energy-vs-work error of a trained token model fell
    from 345 meV (5) to 35 (1.5) and 3.5 meV (1), against 8 meV for plain
    PET. A softer minimum reaches further, so atoms get more frames (ethanol
    6.6 -> 22, bcc Mo 82 -> 166, diamond Ge 14 -> 157 per atom), which token
    frames pay for in the edge embedding only."""
    beta_weights: float = 1.0
    """Sharpness of the smooth maximum of frame weights used for pruning."""
    inner_cutoff_width: Optional[float] = None
    """Width of the switching function at the adaptive inner cutoff (``None``:
    0.15 for ``structure`` and ``atom`` frames, 0.3 for ``token`` frames, which
    are cheap: NVE of a trained token model of ethanol over 2 ps conserved
    energy like plain PET (5.2 meV) with 0.3 and no pruning, and drifted by
    388 meV with 0.15 and 684 meV with 0.15 and one pruning pass)."""
    collinearity_threshold: float = 0.2
    """Pairs with squared sine below this value are (partially) collinear."""
    collinearity_width: float = 0.15
    """Width of the collinearity switching window."""
    pruning_threshold: Optional[float] = None
    """Frames below this fraction of the best weight are pruned away...
    ``None``: 0.9 for ``structure`` and ``atom`` frames, where every frame costs
    a forward pass; ``token`` frames, which are cheap, are not pruned (see
    ``pruning_passes``): pruning makes forces steep where frames switch."""
    pruning_width: Optional[float] = None
    """...smoothly, over this fraction of the best weight (``None``: 0.1 for
    ``structure`` and ``atom`` frames, 0.5 for ``token`` frames)."""
    pruning_passes: Optional[int] = None
    """Number of pruning passes (``None``: 2 for ``structure`` and ``atom``
    frames, 0 (no pruning) for ``token`` frames). The reference uses 4; its compounded
    switching made forces steep enough to raise NVE energy drift up to 13x over
    plain PET in our tests, while 2 passes keep the drift at the plain model's
    level for a few more frames (ethanol: 10 structure frames instead of 6)."""
    centre_preference_length: Optional[float] = 0.5
    """Structure-wide frames of a molecule (a non-periodic structure): pruning
    ranks frames by weight times ``exp(-d / L)``, ``d`` the distance of the frame's
    centre atom to the molecule's centroid, so frames of the central atoms survive
    and the cost stops growing with molecule size. ``None`` (or 0) ranks by weight
    alone, as the reference does. Periodic structures always rank by weight
    alone."""
    centre_pruning_threshold: float = 0.5
    """``pruning_threshold`` where frames are ranked by centre preference
    (molecules). The ranking already keeps few frames; a wide window lets them
    fade in and out gently: with the reference's 0.9/0.1, ECSE forces were 3-8%
    less accurate than plain PET's on ethanol and methane, with 0.5/0.5 as
    accurate."""
    centre_pruning_width: float = 0.5
    """``pruning_width`` where frames are ranked by centre preference."""
    centre_pruning_passes: int = 1
    """``pruning_passes`` where frames are ranked by centre preference: every
    further pass steepens the switching of the few frames that remain."""
    max_atoms_per_pass: int = 8192
    """``structure`` frames: rotated copies of structures are evaluated in
    forward passes of at most this many copied atoms (bounds the memory of a
    pass)."""
    training_weight_noise: float = 0.5
    """Per-atom frames (``token``, ``atom``) in training: every frame weight is
    multiplied by ``exp(s n)``, ``n ~ N(0, 1)``, and the weights renormalized.
    The network learns to predict nearly the same whatever the weighting of its
    frames, so frames that switch on or off in MD (at the adaptive inner
    cutoff) move the energy little. The trainer turns it on for its training
    steps only: validation, evaluation and exported models use the exact
    weights. rMD17 ethanol, 3 seeds, ``beta: 5``: force MAE 0.89x that of
    training without it, NVE excursions over 1.2 ps 27-1116 meV instead of
    960-8652 (docs/ecse.md). 0 turns it off."""
    training_frames_per_atom: Optional[int] = 32
    """Per-atom frames (``token``, ``atom``) in training: each atom averages over
    at most this many of its frames, drawn at random in every step (weights
    renormalized), before the weight noise. Dense solids have many frames per
    atom (bcc Mo about 160, molecules about 20) and the second derivatives of
    training pay for each; validation, evaluation and exported models use all
    frames, exactly. ``None`` uses all frames in training too."""
    max_copied_atoms: int = 32768
    """``structure`` frames: the most copied atoms (frames times atoms) one call
    may evaluate. Forces keep every pass's activations until the backward pass,
    and frames times atoms grows as N^2 for periodic cells: a larger request
    fails with an error before allocating instead of exhausting memory."""


class ModelHypers(TypedDict):
    """Hyperparameters of the PET model and of its symmetrization."""

    cutoff: float = 4.5
    """Cutoff radius of the neighbour list (length unit of the data set). Aim for
    about 20 neighbours on average; for molecules a cutoff covering the molecule."""
    cutoff_function: Literal["Cosine", "Bump"] = "Bump"
    """Switching function at the cutoff, as in metatrain's ``pet``: ``Bump``
    (C-infinity, ``0.5 (1 + tanh(cot(pi x)))``) or ``Cosine`` (the paper's)."""
    cutoff_width: float = 0.5
    """Width of the switching function at the cutoff."""
    d_pet: int = 128
    """Dimension of the edge tokens."""
    d_node: Optional[int] = 256
    """Width of the central-token (node) stream. ``None`` (or ``d_pet``) gives the
    paper's central token; wider, it gets its own projections and feed-forward
    network, which run once per atom and so add capacity at little cost (the same
    idea as ``d_node`` in metatrain's ``pet``)."""
    d_edge_embedding: Optional[int] = 32
    """Width of a nonlinear embedding of every edge's (x, y, z, r), shared by the
    blocks (``expm1(A (x, y, z, r) + b)``, see ``edge_embedding_activation``).
    It is the one part of the network that reads directions, so ECSE's ``token``
    frames evaluate it in every frame and average it, and the rest runs once.
    ``None`` feeds (x, y, z, r) to each block's linear geometry embedding (the
    paper, metatrain's ``pet``); ``token`` frames then are not available."""
    edge_embedding_activation: Literal["expm1", "SiLU", "ELU"] = "expm1"
    """Nonlinearity of the edge embedding. The forces' backward pass keeps the
    embedding of every edge in every frame: ``expm1`` (``exp(x) - 1``, the
    default) and ``ELU`` keep it once (their derivatives read their own output),
    ``SiLU`` twice (its derivative reads its input, the frame weights' gradient
    its output): 1.65-1.76x ``pet``'s bytes for an energy + forces call on bcc Mo
    against SiLU's 2.2-2.4x. ``expm1`` is curved everywhere and learns best
    (3 seeds each, force MAE against SiLU's: mlearn Mo 0.88x, Ge 0.76x, ethanol
    0.81x); its inputs are bounded by the cutoff. ELU learns dense solids less
    well (mlearn Mo 1.23x SiLU's): it is linear above zero, where the average
    over frames keeps little of the directions. ``SiLU`` is the embedding of
    model versions up to 11, which keep it."""
    angular_bias_order: int = 4
    """Degree of the angular bias of attention: every head adds
    ``sum_l c_l P_l(cos theta_jk)``, l = 1..order, to its score between the edges
    to neighbours j and k (Legendre polynomials of their angle, learnt weights
    starting at zero). Invariant, so exact in every ECSE mode; ``0`` turns it off
    (metatrain's ``pet``, checkpoints from before it)."""
    d_head: int = 128
    """Hidden width of the readout heads."""
    bond_bias: bool = False
    """metatrain ``pet``'s readout layout: the bond (edge) readout gets a bias that
    is added once per neighbour, weighted by its cutoff factor, and vector targets
    get biases too. ``pet-ecse convert`` sets it to reproduce a ``pet`` model."""
    zbl: bool = False
    """Add the ZBL screened nuclear repulsion (metatrain's, as ``pet``'s ``zbl``):
    a pair potential of the distances, switched off at the sum of the two atoms'
    covalent radii, so exactly invariant; the network learns the rest. Data
    rarely holds atoms closer than bonds, and without it a model can let two
    atoms merge (an ethanol model of 300 frames: two hydrogens at 0.14 A in
    NVE). Needs lengths in angstrom."""
    d_feedforward: int = 256
    """Hidden width of the transformer feed-forward networks."""
    num_heads: int = 8
    """Number of attention heads."""
    num_attention_layers: int = 2
    """Transformer layers in each message-passing block."""
    num_gnn_layers: int = 2
    """Number of message-passing blocks."""
    transformer_type: Literal["PostLN", "PreLN"] = "PreLN"
    """``PostLN`` normalizes after each residual sum (the paper); ``PreLN`` before
    attention and feed-forward, which trains stably at higher learning rates."""
    featurizer_type: Literal["residual", "feedforward"] = "feedforward"
    """How blocks pass information on. ``residual`` (the paper): each block starts
    from a fresh species embedding of the centre, messages are averaged with the
    reverse edge's output and every block has readout heads. ``feedforward`` (the
    default of metatrain's ``pet``): the node stream carries on through the blocks,
    messages are updated by an MLP of the edge's and its reverse's outputs, the
    neighbour's species is re-embedded in every block, and the readout comes once,
    after the last block: central heads on the node stream, bond heads on the final
    messages."""
    activation: Literal["SiLU", "SwiGLU"] = "SwiGLU"
    """Activation of the transformer feed-forward networks (``SwiGLU``: gated)."""
    normalization: Literal["LayerNorm", "RMSNorm"] = "RMSNorm"
    """Normalization of the transformer layers."""
    symmetrization: SymmetrizationHypers = init_with_defaults(SymmetrizationHypers)
    """Exact rotational symmetrization by ECSE, see :class:`SymmetrizationHypers`."""


class TrainerHypers(TypedDict):
    """Hyperparameters for training ``pet_ecse`` models."""

    distributed: NotRequired[bool]
    """Whether to use distributed training. When not set, it is enabled
    automatically when running under more than one SLURM task."""
    distributed_port: int = 39591
    """Port for distributed communication among processes."""
    batch_size: int = 16
    """Number of structures in each training batch."""
    num_epochs: int = 1000
    """Number of epochs."""
    warmup_fraction: float = 0.01
    """Fraction of the training steps with a linear learning-rate warm-up; a cosine
    decay follows."""
    learning_rate: float = 1e-4
    """Peak learning rate of Adam."""
    weight_decay: Optional[float] = None
    """AdamW weight decay, or ``None`` for plain Adam."""
    log_interval: int = 1
    """Interval (epochs) between logged metrics."""
    checkpoint_interval: int = 100
    """Interval (epochs) between saved checkpoints."""
    atomic_baseline: FixedCompositionWeights | str = {}
    """Per-species baselines, as for metatrain's other architectures: fitted by
    least squares unless given here (a dictionary, or a composition checkpoint)."""
    scale_targets: bool = True
    """Normalize targets to unit standard deviation during training."""
    fixed_scaling_weights: FixedScalerWeights | str = {}
    """Fixed weights for target scaling (see metatrain's ``Scaler``)."""
    per_structure_targets: list[str] = []
    """Targets whose losses and errors are computed per structure."""
    num_workers: Optional[int] = None
    """Data-loading workers; chosen automatically when not given."""
    log_mae: bool = True
    """Log MAE alongside RMSE."""
    log_separate_blocks: bool = False
    """Log the error of each block separately."""
    best_model_metric: Literal["rmse_prod", "mae_prod", "loss"] = "loss"
    """Validation metric selecting the best model (exported by ``mtt export``).
    The validation loss weighs targets as training does; ``mae_prod`` (the product
    of the MAEs) can pick an early, barely trained epoch whose energy error happens
    to be low while its forces are poor."""
    grad_clip_norm: float = 1.0
    """Maximum gradient norm."""
    loss: str | dict[str, LossSpecification | str] = "mse"
    """Loss specification, see metatrain's loss documentation."""
    max_atoms_per_batch: Optional[int] = None
    """If set, batches are packed up to this many atoms instead of ``batch_size``
    structures."""
    min_atoms_per_batch: int = 0
    """Batches with fewer atoms are dropped when ``max_atoms_per_batch`` is set."""
    augmentation: bool = True
    """Random O(3) rotation of every training structure (needed by plain PET)."""
    finetune: NoFinetuneHypers | FinetuneHypers = {
        "read_from": None,
        "method": "full",
        "config": {},
        "inherit_heads": {},
    }
    """Fine-tuning, with metatrain ``pet``'s methods: ``read_from`` a trained
    ``pet_ecse`` checkpoint (its best model) or a metatrain ``pet`` checkpoint
    (converted on reading); ``method``: ``full`` (all weights), ``heads`` (only
    the heads and last layers; ``config``: ``head_modules``,
    ``last_layer_modules``, with pet's names ``node_heads``/``edge_heads`` and
    ``node_last_layers``/``edge_last_layers``) or ``lora`` (``config``:
    ``rank``, ``alpha``, ``target_modules``, default pet's ``input_linear`` and
    ``output_linear``: the attention projections); ``inherit_heads``: new
    target -> existing target whose heads initialize it. A ``symmetrization``
    block in the model hypers switches ECSE on or off for the fine-tuning."""
