"""The arithmetic and the table of `python -m bench peers`, framework-free: medians over the
alternations, the ratios (each the median of the per-alternation ratios: the two sides of
an alternation ran seconds apart and saw the same noise), the fractions of the matmul peak,
the check that both sides train the same network, and the goals' verdicts."""
import statistics

from bench import flops
from legacy_eager.config import Config

GOALS = {
    "bf16_step_over_torch": 1.0,       # the port's bf16 step / PyTorch's, at least
    "bf16_step_fraction_of_peak": 0.75,  # of the bf16 matmul peak, at least
    "fp32_step_over_torch": 1.0,       # the port's fp32 step / PyTorch's, at least
    "batch1_ort_over_openvino": 1.25,  # ONNX Runtime's batch-1 p50 / OpenVINO's, at most
}
PARAMETERS = 6_573_120  # width-64 DavidNet's trainable parameters
WIDTH = 64


def median(values):
    return statistics.median(values)


def paired_ratio(numerators, denominators):
    """The median of the per-alternation ratios a_i / b_i."""
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"{len(numerators)} and {len(denominators)} measurements: expected "
                         "one of each side per alternation")
    return median([a / b for a, b in zip(numerators, denominators)])


def torch_layout(shape):
    """A TensorFlow variable's shape in PyTorch's layout: a convolution kernel [h, w, in,
    out] as [out, in, h, w], a dense kernel [in, out] as [out, in]; vectors unchanged."""
    if len(shape) == 4:
        h, w, c_in, c_out = shape
        return [c_out, c_in, h, w]
    if len(shape) == 2:
        return list(reversed(shape))
    return list(shape)


def same_network(port_shapes, torch_shapes):
    """(same?, parameters of each): the two lists hold the same layer shapes (as multisets:
    the frameworks list them in different orders) and PARAMETERS parameters each."""
    def count(shapes):
        total = 0
        for s in shapes:
            n = 1
            for d in s:
                n *= d
            total += n
        return total
    port = sorted(torch_layout(s) for s in port_shapes)
    theirs = sorted(list(s) for s in torch_shapes)
    counts = (count(port_shapes), count(torch_shapes))
    return port == theirs and counts == (PARAMETERS, PARAMETERS), counts


def summarize_train(train, flop_per_image=None):
    """For each precision and batch size: the median images/s of each side, the paired
    ratio port / torch, each side's GFLOP/s as a fraction of the precision's matmul peak
    (the median of the port processes' measurements)."""
    flop_per_image = flop_per_image or flops.train_flops(WIDTH)
    out = {}
    for precision, sides in train.items():
        port, theirs = sides["port"], sides["torch"]
        peak = median([r["matmul_gflops"] for r in port])
        same, counts = same_network(port[0]["parameter_shapes"], theirs[0]["parameter_shapes"])
        rows = {}
        for batch in port[0]["images_per_s"]:
            a = [r["images_per_s"][batch] for r in port]
            b = [r["images_per_s"][batch] for r in theirs]
            rows[batch] = {
                "port": median(a), "torch": median(b), "port_over_torch": paired_ratio(a, b),
                "port_fraction_of_peak": median(a) * flop_per_image / 1e9 / peak,
                "torch_fraction_of_peak": median(b) * flop_per_image / 1e9 / peak,
                "alternations": len(a)}
        out[precision] = {"matmul_gflops": peak, "same_network": same,
                          "parameters": {"port": counts[0], "torch": counts[1]},
                          "batches": rows}
    return out


def summarize_inference(inference):
    """For each model (fp32, int8) and engine: the median batch-256 images/s and batch-1
    p50 ms; the paired ratios ONNX Runtime / OpenVINO (throughput, and latency: above 1 is
    ONNX Runtime slower) and the largest probability difference seen."""
    out = {}
    for model, engines in inference.items():
        ort = engines["onnxruntime"]
        rows = {name: {"batch256_images_per_s": median([r["batch256_images_per_s"] for r in runs]),
                       "batch1_p50_ms": median([r["batch1_p50_ms"] for r in runs])}
                for name, runs in engines.items() if name != "max_abs_diff"}
        ratios = {}
        for name, runs in engines.items():
            if name in ("onnxruntime", "max_abs_diff"):
                continue
            ratios[name] = {
                "batch256_ort_over": paired_ratio([r["batch256_images_per_s"] for r in ort],
                                                  [r["batch256_images_per_s"] for r in runs]),
                "batch1_ort_over": paired_ratio([r["batch1_p50_ms"] for r in ort],
                                                [r["batch1_p50_ms"] for r in runs])}
        out[model] = {"engines": rows, "ratios": ratios,
                      "max_abs_diff": engines.get("max_abs_diff", {})}
    return out


def summarize_serving(serving):
    """For each client count: each server's median images/s, p50 and p99, and the paired
    ratios ours / MLServer's (images/s; p99, where below 1 is ours faster)."""
    ours, theirs = serving["server"], serving["mlserver"]
    out = {}
    for clients in ours[0]:
        a, b = [r[clients] for r in ours], [r[clients] for r in theirs]
        out[clients] = {
            "server": {k: median([r[k] for r in a]) for k in ("images_per_s", "p50_ms", "p99_ms")},
            "mlserver": {k: median([r[k] for r in b]) for k in ("images_per_s", "p50_ms", "p99_ms")},
            "images_per_s_ratio": paired_ratio([r["images_per_s"] for r in a],
                                               [r["images_per_s"] for r in b]),
            "p99_ratio": paired_ratio([r["p99_ms"] for r in a], [r["p99_ms"] for r in b])}
    return out


def judge(summary):
    """Each goal's verdict (True: met), over every batch size measured; a goal whose part
    was not measured (--only) is left out."""
    goals = {}
    train, inference = summary.get("train"), summary.get("inference")
    if train:
        bf16, fp32 = train["bf16"]["batches"].values(), train["fp32"]["batches"].values()
        goals["bf16_step_over_torch"] = all(
            r["port_over_torch"] >= GOALS["bf16_step_over_torch"] for r in bf16)
        goals["bf16_step_fraction_of_peak"] = all(
            r["port_fraction_of_peak"] >= GOALS["bf16_step_fraction_of_peak"] for r in bf16)
        goals["fp32_step_over_torch"] = all(
            r["port_over_torch"] >= GOALS["fp32_step_over_torch"] for r in fp32)
        goals["same_network"] = all(train[p]["same_network"] for p in train)
    if inference:
        goals["batch1_ort_over_openvino"] = all(
            inference[m]["ratios"]["openvino"]["batch1_ort_over"] <= GOALS["batch1_ort_over_openvino"]
            for m in inference)
    return goals


def summarize(raw):
    """The summary of whichever parts `raw` holds, and the goals' verdicts."""
    parts = {"train": summarize_train, "inference": summarize_inference,
             "serving": summarize_serving}
    summary = {name: f(raw[name]) for name, f in parts.items() if name in raw}
    summary["goals"] = judge(summary)
    return summary


NOTABLE_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_bf16", "amx_tile",
                 "amx_int8", "avx_vnni")


def machine(cpuinfo, cpus):
    """The CPU's model name and family, and which of NOTABLE_FLAGS it has, from the text of
    /proc/cpuinfo."""
    fields = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", "unknown"), "cpu_family": fields.get("cpu family", "?"),
            "cpus": cpus, "flags": [f for f in NOTABLE_FLAGS if f in flags]}


def _met(ok):
    return "met" if ok else "NOT met"


def _train_rows(raw, t, same, dropout):
    rows = [f"train step, width {WIDTH}, dropout {dropout:g} (port: function mode; "
            "PyTorch: channels_last"
            f"{', torch.compile' if raw.get('torch_compile') else ''}; bf16: Keras "
            "mixed_bfloat16 / torch.autocast); matmul peak "
            f"fp32 {t['fp32']['matmul_gflops']:.0f}, bf16 {t['bf16']['matmul_gflops']:.0f} GFLOP/s",
            "  precision  batch   port img/s  PyTorch img/s  port/PyTorch  port % peak  PyTorch % peak"]
    for precision in ("fp32", "bf16"):
        for batch, r in t[precision]["batches"].items():
            rows.append(f"  {precision:<9}  {batch:>5}  {r['port']:>11.1f}  {r['torch']:>13.1f}  "
                        f"{r['port_over_torch']:>11.2f}x  {100 * r['port_fraction_of_peak']:>10.1f}%  "
                        f"{100 * r['torch_fraction_of_peak']:>13.1f}%")
    p = t["fp32"]["parameters"]
    rows.append(f"  same network: {'yes' if same else 'NO'} "
                f"({p['port']:,} and {p['torch']:,} parameters; layer shapes "
                f"{'the same' if same else 'differ'})")
    return rows


def _inference_rows(inference):
    rows = ["inference, width-64 export       batch 256 img/s  batch 1 p50 ms  max |dprob| vs ORT"]
    for model, r in inference.items():
        for engine, e in r["engines"].items():
            diff = r["max_abs_diff"].get(engine)
            rows.append(f"  {model:<5} {engine:<22} {e['batch256_images_per_s']:>13.1f}  "
                        f"{e['batch1_p50_ms']:>14.2f}  {'' if diff is None else f'{diff:.1e}':>18}")
        for engine, q in r["ratios"].items():
            rows.append(f"  {model:<5} ONNX Runtime / {engine}: {q['batch256_ort_over']:.2f}x "
                        f"the images/s at batch 256, {q['batch1_ort_over']:.2f}x the p50 at batch 1")
    return rows


def _serving_rows(serving):
    rows = ["serving, v2 REST, one image a request: images/s (p50 / p99 ms)",
            "  clients   this server               MLServer (ONNX Runtime runtime)   ours / MLServer"]
    for clients, r in serving.items():
        a, b = r["server"], r["mlserver"]
        ours = f"{a['images_per_s']:.1f} ({a['p50_ms']:.1f} / {a['p99_ms']:.1f})"
        theirs = f"{b['images_per_s']:.1f} ({b['p50_ms']:.1f} / {b['p99_ms']:.1f})"
        rows.append(f"  {clients:>7}   {ours:<24}  {theirs:<32}  {r['images_per_s_ratio']:.2f}x images/s, "
                    f"{r['p99_ratio']:.2f}x p99")
    return rows


def _goal_rows(g, dropout):
    step = f"step (dropout {dropout:g})"  # the verdicts judge the step that was timed
    lines = {
        "bf16_step_over_torch": f"bf16 {step} >= {GOALS['bf16_step_over_torch']:.1f}x PyTorch's bf16 "
                                "(batch 256 and 512)",
        "bf16_step_fraction_of_peak": f"bf16 {step} >= {100 * GOALS['bf16_step_fraction_of_peak']:.0f}% "
                                      "of the bf16 matmul peak",
        "fp32_step_over_torch": f"fp32 {step} >= {GOALS['fp32_step_over_torch']:.1f}x PyTorch's fp32",
        "batch1_ort_over_openvino": f"ONNX Runtime's batch-1 p50 <= "
                                    f"{GOALS['batch1_ort_over_openvino']:.2f}x OpenVINO's (fp32 and INT8)",
    }
    return ["goals:"] + [f"  {text}: {_met(g[name])}" for name, text in lines.items() if name in g]


def table(raw, summary):
    """The printed table: machine, versions, each row, ratios, fractions, verdicts."""
    m, v = raw["machine"], raw["versions"]
    dropout = raw.get("dropout", Config.dropout)  # a run that did not record it timed the default's
    rows = [f"peers, one run on {m['cpu_model']} (cpu family {m['cpu_family']}, {m['cpus']} CPUs, "
            f"flags: {' '.join(m['flags']) or 'none of note'}); {raw['threads']} threads a side; "
            f"medians of {raw['rounds']} alternations (A B A B){'; --quick' if raw['quick'] else ''}",
            "  " + ", ".join(f"{k} {val}" for k, val in v.items())]
    if "train" in summary:
        rows += _train_rows(raw, summary["train"], summary["goals"]["same_network"], dropout)
    if "inference" in summary:
        rows += _inference_rows(summary["inference"])
    if "serving" in summary:
        rows += _serving_rows(summary["serving"])
    return "\n".join(rows + _goal_rows(summary["goals"], dropout))
