"""PEFT-style LoftQ with PyTorch on the CPU: the exact-SVD reference errors on our own benchmark matrices.

The issue's reference errors were measured on a different LLM-like matrix than the one bench/ generates, so they
can only be compared as ratios. This script redoes the reference algorithm (written from
../../../shared/docs/reference-spec.md sections 1.1-1.3: the PEFT <= 0.18 NFQuantizer path, full SVD) on a matrix
given as a raw float32 file, so that bench/reference-errors.ts can put both errors side by side on the same W:

  for t in 1..T: Q = dequant(nf_quant(W - L.R)); U, S, Vh = svd(W - Q, full_matrices=False);
                 L = U[:, :r].sqrt(S[:r]); R = sqrt(S[:r]).Vh[:r]

quantization: blocks of 64 consecutive values (row-major), s = block / absmax (float32 division), code = argmin over
the NF table (ties to the lower code), as whole-tensor PyTorch ops like upstream (hence its memory).

  python3 peft_loftq_reference.py --weight W.f32 --rows 4096 --cols 4096 --bits 4 --rank 16 --iters 1

Prints one JSON line: seconds (the algorithm only: not loading, not the error norms), the relative errors per
iteration, peak RSS. Its times are not the issue's reference times unless torch runs on the same BLAS: Debian's
python3-torch (OpenBLAS) takes ~1.9x as long as the pip/MKL build the issue measured. Needs python3-torch and
python3-scipy (Debian: apt-get install python3-torch python3-scipy) or the pip equivalents.
"""
import argparse
import json
import resource
import time

import torch
from scipy.stats import norm

NF_OFFSET = 0.9677083
BLOCK = 64


def normal_float_table(bits):
    """create_normal_map(offset, symmetric=False): 2^(b-1) positive quantiles, 0, 2^(b-1) - 1 negative ones."""
    variations = 2 ** bits
    positive = norm.ppf(torch.linspace(NF_OFFSET, 0.5, variations // 2 + 1)[:-1].numpy()).tolist()
    negative = (-norm.ppf(torch.linspace(NF_OFFSET, 0.5, variations // 2)[:-1].numpy())).tolist()
    values = torch.tensor(positive + [0.0] + negative, dtype=torch.float32).sort().values
    return values / values.max()


def quantize_dequantize(weight, table):
    blocks = weight.flatten().reshape(-1, BLOCK)
    absmax = blocks.abs().max(dim=1, keepdim=True).values
    scaled = blocks / absmax
    codes = (scaled.unsqueeze(-1) - table.view(1, 1, -1)).abs().argmin(dim=-1)
    return (table[codes] * absmax).reshape(weight.shape)


def loftq(weight, bits, rank, iterations):
    """Returns (seconds spent in the algorithm, per-iteration errors); the error norms are not timed."""
    table = normal_float_table(bits)
    residual = weight.clone()
    history = []
    seconds = 0.0
    norm_w = torch.linalg.norm(weight.double())
    for _ in range(iterations):
        started = time.perf_counter()
        quantized = quantize_dequantize(residual, table)
        u, s, vh = torch.linalg.svd(weight - quantized, full_matrices=False)
        root = torch.sqrt(s[:rank])
        left = u[:, :rank] * root
        right = root.unsqueeze(1) * vh[:rank]
        product = left @ right
        residual = weight - product
        seconds += time.perf_counter() - started
        # Norms in float64: torch's float32 norm of a 45M-value tensor is off in the fourth digit
        # (0.10105 against 0.10098 for ||W - Q|| / ||W|| of 4096x11008).
        history.append({
            "quantError": float(torch.linalg.norm((weight - quantized).double()) / norm_w),
            "error": float(torch.linalg.norm((weight - quantized - product).double()) / norm_w),
        })
    return seconds, history


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--weight", required=True, help="raw little-endian float32, rows x cols, row-major")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--cols", type=int, required=True)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--iters", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weight = torch.from_file(args.weight, size=args.rows * args.cols, dtype=torch.float32).reshape(args.rows, args.cols)
    seconds, history = loftq(weight, args.bits, args.rank, args.iters)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "history": history, "peakRssBytes": peak, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
