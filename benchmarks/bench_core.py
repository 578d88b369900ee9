"""Benchmark of PEPO's perception prior and entropy kernels against the naive forms.

    python benchmarks/bench_core.py                 # default shapes, prints a table
    python benchmarks/bench_core.py --shapes tiny   # quick check
    python benchmarks/bench_core.py --side-by-side  # this code against --baseline only, interleaved

``--side-by-side`` times ``pepo.perception_scores`` (every shape and measure) and ``token_entropy``
against the same functions at ``--baseline``, in one process, calls alternating, as the process's CPU
seconds (best of ``--repeats`` each): on a shared machine that is the comparison load cannot skew.
It writes benchmarks/results/bench_core_side_by_side.json.

It also prints a scaling table (the cosine prior as T, S, image tokens and layers each double) and
the entropy kernel against the plain full-batch form.

For every measure (cosine, dot, l2, l1) and shape it times, each variant in a fresh subprocess
(so the peak-memory reading is that variant's alone):

* ``pepo``: :func:`pepo.perception_scores` (mean-vector identity for cosine/dot, chunked l1/l2);
* ``ref_bf16`` (a): the reference release's form, per-row similarity matrices in a Python loop,
  in the model dtype (bf16);
* ``ref_fp32`` (b): the same form on float32 copies (one BLAS matrix product per row and layer);
* ``floor`` (c): one read of every hidden-state tensor (a float32-accumulated sum);
* ``before``: ``pepo.perception_scores`` as it was at ``--baseline`` (default 77436cb, loaded from git
  into the child process), so a change is timed side by side with the code it replaces.

Peak extra memory: the child runs with glibc's mmap threshold lowered so that freed tensors go back
to the OS; after a warm-up call its peak resident set (VmHWM) is reset through /proc/self/clear_refs
and the peak of one more call is read against the resident set before it (Linux only). Timings are
the best of ``--repeats`` calls (the least disturbed by other processes on a shared machine), with
``--threads`` torch threads (default 1: on a 2-core machine shared with other work, a second thread
mostly measures the scheduler). Compare ratios within one run only. Results are printed as a table and written to benchmarks/results/bench_core.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import provenance

SHAPES = {
    # name: (B, S, T, image tokens, D, hidden-state tensors)
    "tiny": (4, 64, 16, 4, 128, 3),  # the embedded demo's model
    "cpu": (4, 768, 256, 256, 512, 9),  # a CPU-sized model (8 layers, hidden 512)
    "3b-scaled": (2, 1536, 512, 768, 1024, 6),  # a 3B VLM's sequence shapes, hidden and depth scaled down
}
# scaling table: a base shape, then each of T, S, image tokens and layers doubled alone
SCALING_BASE = dict(B=1, S=1024, T=256, V=256, D=512, n_hidden=4)
SCALING_STEPS = (("base", {}), ("T x2", {"T": 512}), ("S x2", {"S": 2048}), ("V x2", {"V": 512}),
                 ("L x2", {"n_hidden": 8}))
MEASURES = ("cosine", "dot", "l2", "l1")
# allocations above 64 KiB are mmap'ed and unmapped on free, so the resident set follows live memory
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
VARIANTS = ("pepo", "before", "ref_bf16", "ref_fp32", "floor")
BASELINE = "77436cb"  # the commit before chunking by bytes (issue 15)


def baseline_module(name: str, commit: str):
    """``pepo.core.<name>`` as it was at ``commit`` (read with git; these modules import only torch)."""
    import importlib.util
    import types

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{commit}:src/pepo/core/{name}.py"], cwd=root, capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType(f"pepo_core_{name}_{commit}")
    exec(compile(source, f"{commit}:src/pepo/core/{name}.py", "exec"), module.__dict__)
    return module


def make_inputs(B, S, T, V, D, n_hidden, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(B, S, D, generator=g).to(dtype) for _ in range(n_hidden)]
    vision = torch.zeros(B, S, dtype=torch.bool)
    vision[:, 8 : 8 + V] = True  # image tokens early in the prompt, as in a chat template
    return hidden, vision


def reference_form(hidden, vision, T, measure, compute_dtype):
    """The release's loop: for each layer and row, a (T, |V|) similarity matrix, then its mean."""
    B = hidden[0].shape[0]
    scores = torch.zeros(B, T, dtype=compute_dtype, device=hidden[0].device)
    for layer in hidden:
        for b in range(B):
            idx = vision[b].nonzero().flatten()
            img = layer[b].index_select(0, idx).to(compute_dtype)
            gen = layer[b, -T:].to(compute_dtype)
            if measure == "cosine":
                sim = torch.nn.functional.normalize(gen, dim=-1) @ torch.nn.functional.normalize(img, dim=-1).T
            elif measure == "dot":
                sim = gen @ img.T
            elif measure == "l2":
                sq = (gen * gen).sum(1, keepdim=True) + (img * img).sum(1, keepdim=True).T - 2.0 * (gen @ img.T)
                sim = -torch.sqrt(sq.clamp_min(0) + 1e-6)
            else:  # cdist has no bf16 kernel; the release upcasts here too (it does so on CUDA)
                sim = -torch.cdist(gen.float(), img.float(), p=1).to(compute_dtype)
            scores[b] += sim.mean(1)
    return scores / len(hidden)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def run_one(variant, measure, shape, repeats, threads, baseline=BASELINE):
    """Runs in a subprocess: returns (best seconds, peak extra MiB)."""
    torch.set_num_threads(threads)
    B, S, T, V, D, n_hidden = SHAPES[shape]
    hidden, vision = make_inputs(B, S, T, V, D, n_hidden)
    if variant == "pepo":
        import pepo

        fn = lambda: pepo.perception_scores(hidden, vision, T, measure=measure)
    elif variant == "before":
        before = baseline_module("perception", baseline)
        fn = lambda: before.perception_scores(hidden, vision, T, measure=measure)
    elif variant == "ref_bf16":
        fn = lambda: reference_form(hidden, vision, T, measure, torch.bfloat16)
    elif variant == "ref_fp32":
        fn = lambda: reference_form(hidden, vision, T, measure, torch.float32)
    else:
        fn = lambda: sum(torch.sum(h, dtype=torch.float32) for h in hidden)
    fn()  # warm-up: one-time allocations (thread pools, caches) are not the kernel's memory
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set (VmHWM)
    base_kib = _status_kib("VmRSS")
    fn()
    extra_mib = (_status_kib("VmHWM") - base_kib) / 1024
    return best_time(fn, repeats), extra_mib


def best_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def scaling_rows(repeats, baseline=BASELINE):
    """Time of the cosine prior (ours and the reference fp32 form) as T, S, V and L double alone."""
    import pepo

    before = baseline_module("perception", baseline)
    rows = []
    for label, change in SCALING_STEPS:
        shape = {**SCALING_BASE, **change}
        hidden, vision = make_inputs(shape["B"], shape["S"], shape["T"], shape["V"], shape["D"], shape["n_hidden"])
        T = shape["T"]
        rows.append({
            "step": label, **shape,
            "pepo": best_time(lambda: pepo.perception_scores(hidden, vision, T), repeats),
            "before": best_time(lambda: before.perception_scores(hidden, vision, T), repeats),
            "ref_fp32": best_time(lambda: reference_form(hidden, vision, T, "cosine", torch.float32), repeats),
        })
    return rows


def entropy_rows(repeats, baseline=BASELINE):
    """token_entropy (chunked) vs the same at ``baseline`` and the plain full-batch log_softmax form."""
    import pepo

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 256, 32000, generator=g).to(torch.bfloat16)
    before = baseline_module("entropy", baseline)
    plain = lambda: -(torch.softmax(logits.float(), -1) * torch.log_softmax(logits.float(), -1)).sum(-1)
    variants = (("pepo", lambda: pepo.token_entropy(logits)), ("before", lambda: before.token_entropy(logits)),
                ("plain", plain))
    rows = []
    for r in range(repeats):  # interleaved: a load change touches every variant alike
        for name, fn in variants if r % 2 == 0 else reversed(variants):
            fn()
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
            rows.append((name, seconds))
    return [{"variant": name, "seconds": min(s for n, s in rows if n == name)} for name, _ in variants]


def cpu_time(fn) -> float:
    fn()  # not timed: first-call work
    start = time.process_time()
    fn()
    return time.process_time() - start


def side_by_side(shapes, measures, repeats, baseline) -> dict:
    """Process CPU seconds of this code and of ``baseline``, calls alternating (best of ``repeats``)."""
    import pepo

    before = baseline_module("perception", baseline)
    perception = []
    for shape in shapes:
        B, S, T, V, D, n = SHAPES[shape]
        hidden, vision = make_inputs(B, S, T, V, D, n)
        for measure in measures:
            ours = lambda: pepo.perception_scores(hidden, vision, T, measure=measure)
            theirs = lambda: before.perception_scores(hidden, vision, T, measure=measure)
            times = [(cpu_time(ours), cpu_time(theirs)) for _ in range(repeats)]
            row = {"shape": shape, "measure": measure, "pepo": min(t[0] for t in times),
                   "before": min(t[1] for t in times)}
            perception.append(row)
            print(f"{shape} {measure}: pepo {1e3 * row['pepo']:.2f} ms, before {1e3 * row['before']:.2f} ms "
                  f"(cpu), ratio {row['pepo'] / row['before']:.2f}", flush=True)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 256, 32000, generator=g).to(torch.bfloat16)
    old_entropy = baseline_module("entropy", baseline)
    times = [(cpu_time(lambda: pepo.token_entropy(logits)), cpu_time(lambda: old_entropy.token_entropy(logits)))
             for _ in range(repeats)]
    entropy = {"shape": list(logits.shape), "pepo": min(t[0] for t in times), "before": min(t[1] for t in times)}
    print(f"token_entropy {entropy['shape']}: pepo {1e3 * entropy['pepo']:.1f} ms, before "
          f"{1e3 * entropy['before']:.1f} ms (cpu)", flush=True)
    return {"perception": perception, "entropy": entropy}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=list(MEASURES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", default=BASELINE, help="commit whose pepo.core the 'before' columns time")
    parser.add_argument("--side-by-side", action="store_true",
                        help="only this code against --baseline, interleaved in one process (CPU seconds)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_core.json"))
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "MEASURE", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        seconds, extra = run_one(*args.child, repeats=args.repeats, threads=args.threads, baseline=args.baseline)
        print(json.dumps({"seconds": seconds, "extra_mib": extra}))
        return 0

    if args.side_by_side:
        torch.set_num_threads(args.threads)
        result = side_by_side(args.shapes, args.measures, args.repeats, args.baseline)
        out = Path(args.out).with_name("bench_core_side_by_side.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "machine": f"{cpu_name()}, {os.cpu_count()} CPU cores, {args.threads} torch thread(s), no GPU",
            "torch": torch.__version__, "baseline": args.baseline, "clock": "process CPU seconds, best of repeats",
            "repeats": args.repeats, "command": " ".join(["python", *sys.argv]), "commit": provenance.commit(),
            "load_average_at_end": os.getloadavg(), "shapes": {k: SHAPES[k] for k in args.shapes}, **result,
        }, indent=2))
        print(f"wrote {out}")
        return 0

    from rich.console import Console
    from rich.table import Table

    results = []
    for shape in args.shapes:
        for measure in args.measures:
            row = {"shape": shape, "measure": measure}
            for variant in VARIANTS:
                if variant == "floor" and measure != args.measures[0]:
                    row["floor"] = results[-1]["floor"]  # same for every measure
                    continue
                out = subprocess.run(
                    [sys.executable, __file__, "--child", variant, measure, shape, "--baseline", args.baseline,
                     "--repeats", str(args.repeats), "--threads", str(args.threads)],
                    capture_output=True, text=True, check=True, env=CHILD_ENV,
                )
                row[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(row)

    table = Table(title=f"perception_scores, bf16 hidden states, {args.threads} torch thread(s), best of {args.repeats}")
    for col in ("shape", "measure", "pepo ms", "pepo MiB", f"before ({args.baseline}) ms", "before MiB",
                "pepo/before", "(a) ref bf16 ms", "(a) MiB", "(b) ref fp32 ms", "(b) MiB", "(c) floor ms", "a/pepo",
                "b/pepo", "pepo/c"):
        table.add_column(col, justify="right")
    for r in results:
        p, old, a, b, c = (r[v] for v in VARIANTS)
        table.add_row(
            r["shape"], r["measure"], f"{1e3 * p['seconds']:.2f}", f"{p['extra_mib']:.2f}",
            f"{1e3 * old['seconds']:.2f}", f"{old['extra_mib']:.2f}", f"{p['seconds'] / old['seconds']:.2f}x",
            f"{1e3 * a['seconds']:.1f}", f"{a['extra_mib']:.2f}", f"{1e3 * b['seconds']:.1f}", f"{b['extra_mib']:.2f}",
            f"{1e3 * c['seconds']:.2f}", f"{a['seconds'] / p['seconds']:.1f}x", f"{b['seconds'] / p['seconds']:.1f}x",
            f"{p['seconds'] / c['seconds']:.2f}x",
        )
    console = Console(width=200)
    console.print(table)
    for shape in args.shapes:
        B, S, T, V, D, n = SHAPES[shape]
        console.print(f"{shape}: B={B} S={S} T={T} image tokens={V} D={D} hidden tensors={n}; "
                      f"one (B, S) float32 tensor = {B * S * 4 / 2**20:.3f} MiB, "
                      f"one hidden tensor = {B * S * D * 2 / 2**20:.1f} MiB (bf16)")

    torch.set_num_threads(args.threads)
    entropy = entropy_rows(args.repeats, args.baseline)
    et = Table(title="token_entropy, bf16 logits (8, 256, 32000)")
    et.add_column("variant")
    et.add_column("ms", justify="right")
    for r in entropy:
        et.add_row(r["variant"], f"{1e3 * r['seconds']:.1f}")
    console.print(et)

    scaling = scaling_rows(args.repeats, args.baseline)
    st = Table(title="scaling of the cosine prior: each dimension doubled alone (time / base time)")
    for col in ("step", "B", "S", "T", "image tokens", "hidden tensors", "pepo ms", "pepo x base", "before ms",
                "ref fp32 ms", "ref x base"):
        st.add_column(col, justify="right")
    for r in scaling:
        st.add_row(r["step"], str(r["B"]), str(r["S"]), str(r["T"]), str(r["V"]), str(r["n_hidden"]),
                   f"{1e3 * r['pepo']:.2f}", f"{r['pepo'] / scaling[0]['pepo']:.2f}", f"{1e3 * r['before']:.2f}",
                   f"{1e3 * r['ref_fp32']:.1f}", f"{r['ref_fp32'] / scaling[0]['ref_fp32']:.2f}")
    console.print(st)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": f"{cpu_name()}, {os.cpu_count()} CPU cores, {args.threads} torch thread(s), no GPU",
        "torch": torch.__version__, "baseline": args.baseline, "load_average_at_end": os.getloadavg(),
        "command": " ".join(["python", *sys.argv]), "commit": provenance.commit(), "shapes": {k: SHAPES[k] for k in args.shapes},
        "perception": results, "entropy": entropy, "scaling": scaling,
    }, indent=2))
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
