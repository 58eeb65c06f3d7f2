"""The trainer's optimizer: torch's Adam, fused where torch has a kernel."""

import pytest
import torch

from pet_metatrain.optimization import make_optimizer


def parameters() -> list:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    return list(model.double().parameters())


@pytest.mark.parametrize("weight_decay", [None, 0.01])
def test_optimizer_is_fused_on_cpu_and_steps_like_torchs_loop(weight_decay):
    fused_parameters, loop_parameters = parameters(), parameters()
    fused = make_optimizer(fused_parameters, 1e-2, weight_decay)
    expected_class = torch.optim.Adam if weight_decay is None else torch.optim.AdamW
    loop = expected_class(loop_parameters, lr=1e-2, weight_decay=weight_decay or 0)
    assert type(fused) is expected_class
    assert fused.defaults["fused"]
    for _ in range(3):
        for group in (fused_parameters, loop_parameters):
            for parameter in group:
                parameter.grad = torch.cos(parameter.detach())
        fused.step()
        loop.step()
    for a, b in zip(fused_parameters, loop_parameters, strict=True):
        torch.testing.assert_close(a, b)


def test_empty_structures_are_refused_with_their_index_in_the_file():
    from metatomic.torch import System
    from metatrain.utils.data import Dataset

    from pet_metatrain.training_data import check_no_empty_structures

    def system(n_atoms: int) -> System:
        return System(
            types=torch.ones(n_atoms, dtype=torch.int32),
            positions=torch.rand(n_atoms, 3, dtype=torch.float64),
            cell=torch.zeros(3, 3, dtype=torch.float64),
            pbc=torch.tensor([False, False, False]),
        )

    counts = [2, 3, 0, 1]
    dataset = Dataset.from_dict(
        {"system": [system(n) for n in counts], "energy": [0.0] * len(counts)}
    )
    # metatrain splits the file into nested subsets
    subset = torch.utils.data.Subset(
        torch.utils.data.Subset(dataset, [3, 2, 1]), [1, 2]
    )
    with pytest.raises(ValueError, match=r"^structure 2 \(counting from 0\) .* no"):
        check_no_empty_structures([subset], "training")
    check_no_empty_structures([torch.utils.data.Subset(dataset, [0, 1, 3])], "x")
