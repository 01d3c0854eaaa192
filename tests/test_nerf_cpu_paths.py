"""nerf.cpu_paths / nerf.hash_grid: the fused CPU paths give nerfstudio's outputs and gradients exactly."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nerfstudio")

from nerfstudio.field_components.encodings import HashEncoding  # noqa: E402
from nerfstudio.field_components.spatial_distortions import SceneContraction  # noqa: E402

from nerf.cpu_paths import FastSceneContraction, use_cpu_paths  # noqa: E402
from nerf.hash_grid import FusedHashEncoding  # noqa: E402


def _pair(**kwargs):
    torch.manual_seed(3)
    reference = HashEncoding(implementation="torch", **kwargs)
    torch.nn.init.uniform_(reference.hash_table, -1.0, 1.0)  # large values: differences would show
    fused = copy.deepcopy(reference)
    assert use_cpu_paths(fused) == 1 and type(fused) is FusedHashEncoding
    return reference, fused


def _positions(n=3000):
    generator = torch.Generator().manual_seed(7)
    positions = torch.rand(n, 3, generator=generator)
    positions[:5] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 0.125],  # on grid nodes
                                  [0.0, 1.0, 0.5], [1e-7, 1 - 1e-7, 0.3]])
    return positions


@pytest.mark.parametrize("kwargs", [dict(num_levels=8, max_res=512, log2_hashmap_size=16),
                                    dict(num_levels=5, max_res=128, log2_hashmap_size=17, features_per_level=2),
                                    dict(num_levels=3, min_res=4, max_res=64, log2_hashmap_size=10,
                                         features_per_level=4)])
def test_fused_hash_grid_matches_nerfstudio_forward_and_gradients(kwargs):
    reference, fused = _pair(**kwargs)
    x_ref = _positions().requires_grad_(True)
    x_fused = x_ref.detach().clone().requires_grad_(True)
    out_ref, out_fused = reference(x_ref), fused(x_fused)
    assert out_fused.shape == out_ref.shape == (3000, reference.get_out_dim())
    torch.testing.assert_close(out_fused, out_ref, rtol=0, atol=1e-6)

    weights = torch.randn(out_ref.shape, generator=torch.Generator().manual_seed(1))
    (out_ref * weights).sum().backward()
    (out_fused * weights).sum().backward()
    scale = reference.hash_table.grad.abs().max()
    assert scale > 0
    torch.testing.assert_close(fused.hash_table.grad, reference.hash_table.grad, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(x_fused.grad, x_ref.grad, rtol=1e-4, atol=1e-4 * x_ref.grad.abs().max())


def test_fused_hash_grid_keeps_batch_shape_and_skips_position_gradient_when_not_asked():
    reference, fused = _pair(num_levels=4, max_res=64, log2_hashmap_size=12)
    positions = _positions(600).reshape(20, 30, 3)
    out = fused(positions)
    assert out.shape == (20, 30, 8)
    torch.testing.assert_close(out, reference(positions), rtol=0, atol=1e-6)
    out.sum().backward()
    assert positions.grad is None and fused.hash_table.grad is not None


def test_state_dict_is_unchanged_so_checkpoints_load_either_way():
    reference, fused = _pair(num_levels=4, max_res=64, log2_hashmap_size=12)
    assert list(fused.state_dict()) == list(reference.state_dict())
    restored = HashEncoding(num_levels=4, max_res=64, log2_hashmap_size=12, implementation="torch")
    restored.load_state_dict(fused.state_dict())
    torch.testing.assert_close(restored(_positions(100)), reference(_positions(100)))


def test_fast_contraction_matches_nerfstudio_linf_and_leaves_other_norms_alone():
    positions = (torch.rand(4000, 3, generator=torch.Generator().manual_seed(2)) * 8 - 4)
    x_ref = positions.clone().requires_grad_(True)
    x_fast = positions.clone().requires_grad_(True)
    module = torch.nn.Sequential(SceneContraction(order=float("inf")), SceneContraction())
    assert use_cpu_paths(module) == 2
    assert type(module[0]) is FastSceneContraction and type(module[1]) is FastSceneContraction
    out_ref, out_fast = SceneContraction(order=float("inf"))(x_ref), module[0](x_fast)
    torch.testing.assert_close(out_fast, out_ref, rtol=0, atol=0)
    out_ref.sum().backward()
    out_fast.sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad)
    torch.testing.assert_close(module[1](positions), SceneContraction()(positions))  # L2: nerfstudio's code


def test_parallax_cpu_preset_turns_the_fast_paths_on_and_nerfacto_keeps_nerfstudio_code():
    from nerf.plugin import preset_config

    assert preset_config("parallax-cpu").pipeline.model.cpu_fast_paths is True
    assert preset_config("nerfacto").pipeline.model.cpu_fast_paths is False
