"""nerfstudio's multi-resolution hash encoding, fused into two numba kernels for CPU training.

nerfstudio's torch fallback (``HashEncoding.pytorch_fwd``) builds the eight corner hashes, gathers and the
trilinear blend as ~60 separate tensor passes over (samples x levels) arrays, and its backward is an
``index_put_`` with accumulation; on 2 CPU cores that is ~90 % of a nerfacto step. The kernels here do the
same arithmetic (same primes, xor, modulo, table offsets, corner weights) in one pass per sample, so a model
keeps its ``hash_table`` parameter, its checkpoints and its outputs; only the speed changes.

Gradients flow to the table and, when asked for (nerfacto marks its sample positions for predicted normals),
to the positions, as torch's autograd of the fallback gives them. Tensors not on the CPU go through
nerfstudio's own code.
"""
from __future__ import annotations

import numba
import numpy as np
import torch
from nerfstudio.field_components.encodings import HashEncoding
from numba import njit, prange

PRIME_Y = 2654435761  # instant-ngp's primes, as nerfstudio's hash_fn (x uses 1)
PRIME_Z = 805459861


@njit(cache=True, nogil=True, inline="always")
def _corner(level_offset, table_size, x, y, z):
    h = np.int64(x) ^ (np.int64(y) * PRIME_Y) ^ (np.int64(z) * PRIME_Z)
    return level_offset + h % table_size


@njit(cache=True, nogil=True, inline="always")
def _cell(position, scale):
    """Floor and ceil corners and the fractional offsets of one position at one level (float32 as torch)."""
    sx = position[0] * scale
    sy = position[1] * scale
    sz = position[2] * scale
    fx, fy, fz = np.floor(sx), np.floor(sy), np.floor(sz)
    return (np.int64(fx), np.int64(fy), np.int64(fz), np.int64(np.ceil(sx)), np.int64(np.ceil(sy)),
            np.int64(np.ceil(sz)), sx - fx, sy - fy, sz - fz)


@njit(cache=True, nogil=True, inline="always")
def _corner_index_weight(corner, level_offset, table_size, cell):
    """Table row and trilinear weight of corner 0..7 (bit 0: x, bit 1: y, bit 2: z; set = ceil side)."""
    fx, fy, fz, cx, cy, cz, ox, oy, oz = cell
    one = np.float32(1.0)
    if corner & 1:
        x, wx = cx, ox
    else:
        x, wx = fx, one - ox
    if corner & 2:
        y, wy = cy, oy
    else:
        y, wy = fy, one - oy
    if corner & 4:
        z, wz = cz, oz
    else:
        z, wz = fz, one - oz
    return _corner(level_offset, table_size, x, y, z), wx * wy * wz


@njit(cache=True, nogil=True, parallel=True)
def hash_grid_forward(positions, table, scales, table_size):
    """positions (N, 3) float32, table (L*T, F) float32, scales (L,) float32 -> (N, L*F) float32."""
    n = positions.shape[0]
    levels = scales.shape[0]
    features = table.shape[1]
    out = np.zeros((n, levels * features), dtype=np.float32)
    for i in prange(n):
        position = positions[i]
        for level in range(levels):
            cell = _cell(position, scales[level])
            base = level * features
            for corner in range(8):
                row, weight = _corner_index_weight(corner, level * table_size, table_size, cell)
                for f in range(features):
                    out[i, base + f] += weight * table[row, f]
    return out


@njit(cache=True, nogil=True, inline="always")
def _weight_derivatives(corner, cell):
    """d weight / d (offset_x, offset_y, offset_z) of corner 0..7 (floor and ceil carry no gradient, as in torch)."""
    ox, oy, oz = cell[6], cell[7], cell[8]
    one = np.float32(1.0)
    wx, sx = (ox, one) if corner & 1 else (one - ox, -one)
    wy, sy = (oy, one) if corner & 2 else (one - oy, -one)
    wz, sz = (oz, one) if corner & 4 else (one - oz, -one)
    return sx * wy * wz, wx * sy * wz, wx * wy * sz


@njit(cache=True, nogil=True, parallel=True)
def hash_grid_backward(positions, grad_out, table, scales, table_size, chunks, position_grad):
    """d loss / d table (L*T, F) from d loss / d output (N, L*F), one accumulator per chunk (no races); with
    ``position_grad`` also d loss / d positions (N, 3), else an empty (0, 3) array."""
    n = positions.shape[0]
    levels = scales.shape[0]
    features = table.shape[1]
    partial = np.zeros((chunks, table.shape[0], features), dtype=np.float32)
    grad_positions = np.zeros((n if position_grad else 0, 3), dtype=np.float32)
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        acc = partial[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            position = positions[i]
            for level in range(levels):
                scale = scales[level]
                cell = _cell(position, scale)
                base = level * features
                for corner in range(8):
                    row, weight = _corner_index_weight(corner, level * table_size, table_size, cell)
                    along = np.float32(0.0)
                    for f in range(features):
                        acc[row, f] += weight * grad_out[i, base + f]
                        along += grad_out[i, base + f] * table[row, f]
                    if position_grad:
                        dx, dy, dz = _weight_derivatives(corner, cell)
                        grad_positions[i, 0] += along * dx * scale
                        grad_positions[i, 1] += along * dy * scale
                        grad_positions[i, 2] += along * dz * scale
    grad = partial[0]
    for c in range(1, chunks):
        grad += partial[c]
    return grad, grad_positions


def _match_torch_threads() -> int:
    """numba's workers for this thread = torch's (the runner may give training fewer threads than cores)."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


class _HashGridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, table, scales, table_size):
        _match_torch_threads()
        ctx.save_for_backward(positions, table)
        ctx.scales = scales
        ctx.table_size = table_size
        return torch.from_numpy(hash_grid_forward(positions.detach().numpy(), table.detach().numpy(), scales,
                                                  table_size))

    @staticmethod
    def backward(ctx, grad_out):
        positions, table = ctx.saved_tensors
        grad = np.ascontiguousarray(grad_out.detach().numpy(), dtype=np.float32)
        chunks = _match_torch_threads()
        position_grad = bool(ctx.needs_input_grad[0])
        grad_table, grad_positions = hash_grid_backward(positions.detach().numpy(), grad, table.detach().numpy(),
                                                        ctx.scales, ctx.table_size, chunks, position_grad)
        return (torch.from_numpy(grad_positions) if position_grad else None), torch.from_numpy(grad_table), \
            None, None


class FusedHashEncoding(HashEncoding):
    """A HashEncoding whose torch path runs the fused kernels (same parameter, same outputs)."""

    def pytorch_fwd(self, in_tensor):
        table = self.hash_table
        if in_tensor.device.type != "cpu" or table.device.type != "cpu" or table.dtype != torch.float32:
            return super().pytorch_fwd(in_tensor)
        shape = in_tensor.shape[:-1]
        positions = in_tensor.reshape(-1, 3).to(torch.float32).contiguous()
        scales = self.scalings.to(torch.float32).numpy()
        out = _HashGridFunction.apply(positions, table, scales, int(self.hash_table_size))
        return out.reshape(*shape, self.get_out_dim())



def warm_up() -> None:
    """Compile both kernels (or load them from numba's cache) now: a first compile takes seconds, which
    must not come out of a training budget that starts after setup."""
    positions = np.zeros((2, 3), np.float32)
    table = np.zeros((8, 2), np.float32)
    scales = np.ones(1, np.float32)
    hash_grid_forward(positions, table, scales, 8)
    hash_grid_backward(positions, np.zeros((2, 2), np.float32), table, scales, 8, 1, True)
