#!/usr/bin/env python3
"""Builds phi3's tiny model fixtures from the real Phi-3 family configs.

For each real config in shared/reference/configs, a scaled-down random-weight
model is built with the same rope type (none / "su" / "longrope"), GQA ratio,
partial rotary fraction and tied embeddings; its config.json keeps the layout
of the real checkpoints (rope_scaling, rope_theta, torch_dtype). Then
transformers (pinned in requirements.txt) records:

  * full-sequence logits for fixed token sequences: a short one, one longer
    than the sliding window (4k models), one crossing
    original_max_position_embeddings (LongRoPE models);
  * for sequences that cross original_max_position_embeddings, the logits of
    the last token of every prefix, which is what token-by-token decoding
    gives when it follows transformers' generate (short factors up to the
    threshold, then the whole sequence re-prefilled with long factors);
  * greedy generate() of 32 tokens, with the top-1/top-2 margin of each step.

Usage (from the repository root):
  python -m venv .venv-ref && .venv-ref/bin/pip install -r tools/reference/requirements.txt
  .venv-ref/bin/python tools/reference/make_model_fixtures.py [--shared ../shared]

Outputs: testdata/models/<name>/ (Hugging Face folders), testdata/reference/<name>.safetensors
and <name>.json, and testdata/models/phi-3.5-mini-gguf-py.gguf written by the `gguf`
package (llama.cpp's own writer).
"""

import argparse
import json
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

VOCAB = 256
LAYERS = 2
GEN_TOKENS = 32
MIN_MARGIN = 1e-3  # greedy choices must not be decided by float noise


# name, source config, tiny head geometry, extra overrides
MODELS = [
    dict(name="phi-3-mini-4k", src="Phi-3-mini-4k-instruct/config.json", heads=4, kv=4, ffn=128),
    dict(name="phi-3-medium-4k", src="Phi-3-medium-4k-instruct/config.json", heads=8, kv=2, ffn=192, shards=2),
    dict(name="phi-3-mini-128k-su", src="Phi-3-mini-128k-instruct/config.initial-su-2024-04.json", heads=4, kv=4, ffn=128),
    dict(name="phi-3-mini-128k", src="Phi-3-mini-128k-instruct/config.json", heads=4, kv=4, ffn=128),
    dict(name="phi-3-medium-128k", src="Phi-3-medium-128k-instruct/known_fields.json", heads=8, kv=2, ffn=192),
    dict(name="phi-3.5-mini", src="Phi-3.5-mini-instruct/config.json", heads=4, kv=4, ffn=128, gguf_py=True),
    dict(name="phi-4-mini", src="Phi-4-mini-instruct/config.Phi-4-mini-reasoning.json", heads=6, kv=2, ffn=128),
]
HEAD_DIM = 16
# 4k models: window smaller than the sequences; 128k models: a small original length.
SHORT_CTX = dict(max_pos=64, window=11)
LONG_CTX = dict(orig=32, max_pos=1024)


def resample(values, n):
    """Resamples a real factor array to n entries (tiny head dims), keeping its shape."""
    values = np.asarray(values, dtype=np.float64)
    x = np.linspace(0, len(values) - 1, n)
    return [float(np.float32(v)) for v in np.interp(x, np.arange(len(values)), values)]


def tiny_config(spec, shared):
    real = json.loads((shared / "reference/configs" / spec["src"]).read_text(), object_pairs_hook=OrderedDict)
    if real.pop("_NOTE", None):
        # medium-128k: only part of the real file is known; its tail (rope_theta,
        # sliding_window 131072 per PHI3_FAMILY.md §1, ...) is taken from medium-4k.
        base = json.loads((shared / "reference/configs/Phi-3-medium-4k-instruct/config.json").read_text(),
                          object_pairs_hook=OrderedDict)
        for k, v in base.items():
            real.setdefault(k, v)
        real["sliding_window"] = real["max_position_embeddings"]
    cfg = OrderedDict(real)
    heads, kv = spec["heads"], spec["kv"]
    cfg["hidden_size"] = heads * HEAD_DIM
    cfg["intermediate_size"] = spec["ffn"]
    cfg["num_attention_heads"] = heads
    cfg["num_key_value_heads"] = kv
    cfg["num_hidden_layers"] = LAYERS
    cfg["vocab_size"] = VOCAB
    cfg["bos_token_id"], cfg["eos_token_id"] = 1, 2
    if cfg.get("pad_token_id") is not None:
        cfg["pad_token_id"] = 0
    cfg["torch_dtype"] = "float32"
    cfg["_name_or_path"] = spec["name"] + "-tiny"
    rs = cfg.get("rope_scaling")
    if rs:
        rot = int(HEAD_DIM * cfg.get("partial_rotary_factor", 1.0))
        long_f = rs["long_factor"]
        short_f = rs.get("short_factor")
        if not isinstance(short_f, list) or spec["name"] == "phi-4-mini":
            # medium-128k: the real short factors were not found; Phi-4-mini-reasoning has
            # long == short. Borrow Phi-3.5-mini's short factors so the switch is exercised.
            other = json.loads((shared / "reference/configs/Phi-3.5-mini-instruct/config.json").read_text())
            short_f = other["rope_scaling"]["short_factor"]
        rs = OrderedDict(rs)
        rs["long_factor"] = resample(long_f, rot // 2)
        rs["short_factor"] = resample(short_f, rot // 2)
        if "type" not in rs and "rope_type" not in rs:
            rs["type"] = "longrope"  # medium-128k: the type string was not seen (PHI3_FAMILY.md §1)
        cfg["rope_scaling"] = rs
        cfg["original_max_position_embeddings"] = LONG_CTX["orig"]
        # keep the real ratio of sliding_window to max_position_embeddings (no effective window)
        ratio = real["sliding_window"] / real["max_position_embeddings"]
        cfg["max_position_embeddings"] = LONG_CTX["max_pos"]
        cfg["sliding_window"] = int(LONG_CTX["max_pos"] * ratio)
    else:
        cfg["max_position_embeddings"] = SHORT_CTX["max_pos"]
        cfg["original_max_position_embeddings"] = SHORT_CTX["max_pos"]
        cfg["sliding_window"] = SHORT_CTX["window"]
    return cfg


def init_weights(model, seed):
    """Weights scaled so that activations are O(1) and logits well separated."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif "lm_head" in name:
                p.copy_(3.0 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                p.copy_(1.5 * torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def state_dict_for_save(model, tied):
    sd = OrderedDict((k, v.detach().contiguous().clone()) for k, v in model.state_dict().items())
    if tied:
        sd.pop("lm_head.weight", None)
    return sd


def save_folder(out, cfg, sd, shards, gen_eos):
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("*"):
        f.unlink()
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = OrderedDict(_from_model_config=True, bos_token_id=1, eos_token_id=gen_eos,
                      transformers_version=transformers.__version__)
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if shards == 1:
        save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
        return
    names = list(sd)
    per = math.ceil(len(names) / shards)
    weight_map = OrderedDict()
    for i in range(shards):
        part = names[i * per:(i + 1) * per]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(OrderedDict((n, sd[n]) for n in part), out / fname, metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
    total = sum(v.numel() * v.element_size() for v in sd.values())
    index = OrderedDict(metadata={"total_size": total}, weight_map=weight_map)
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def write_gguf_py(path, cfg, sd, qtype=None):
    """The same model written by the gguf package, with llama.cpp's phi3 names and keys;
    with `qtype` (a gguf.GGMLQuantizationType), every matrix quantized by gguf's quantizer."""
    import gguf
    from gguf import quants

    w = gguf.GGUFWriter(str(path), "phi3")
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hidden = cfg["hidden_size"]
    rot = int(cfg.get("partial_rotary_factor", 1.0) * hidden) // heads
    w.add_name("Phi3 tiny")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(rot)
    w.add_rope_freq_base(cfg["rope_theta"])
    file_types = {None: 0, "Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9}
    w.add_file_type(file_types[qtype.name if qtype is not None else None])
    w.add_sliding_window(cfg["sliding_window"])
    rs = cfg["rope_scaling"]
    orig = cfg["original_max_position_embeddings"]
    scale = cfg["max_position_embeddings"] / orig
    w.add_rope_scaling_orig_ctx_len(orig)
    w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)))
    w.add_tensor("rope_factors_long.weight", np.asarray(rs["long_factor"], dtype=np.float32))
    w.add_tensor("rope_factors_short.weight", np.asarray(rs["short_factor"], dtype=np.float32))
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.qkv_proj.weight": "attn_qkv.weight",
        "self_attn.o_proj.weight": "attn_output.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for k, v in sd.items():
        if k in names:
            gname = names[k]
        else:
            parts = k.split(".")
            gname = f"blk.{parts[2]}." + per_layer[".".join(parts[3:])]
        arr = v.float().numpy()
        if qtype is not None and arr.ndim == 2:
            w.add_tensor(gname, quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=None, help="path of the shared folder (default: ../shared)")
    ap.add_argument("--out", default="testdata")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[2]
    shared = Path(args.shared) if args.shared else root.parent / "shared"
    out = root / args.out
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    (out / "reference").mkdir(parents=True, exist_ok=True)

    for idx, spec in enumerate(MODELS):
        cfg = tiny_config(spec, shared)
        long_rope = bool(cfg.get("rope_scaling"))
        for attempt in range(50):
            seed = 1000 * idx + attempt
            result = build_and_record(spec, cfg, seed, long_rope)
            if result["min_margin"] >= MIN_MARGIN:
                break
        else:
            raise SystemExit(f"{spec['name']}: no seed gave greedy margins above {MIN_MARGIN}")
        model, tensors, meta = result["model"], result["tensors"], result["meta"]
        tied = bool(cfg.get("tie_word_embeddings"))
        sd = state_dict_for_save(model, tied)
        save_folder(out / "models" / spec["name"], cfg, sd, spec.get("shards", 1), [2])
        save_file(tensors, out / "reference" / f"{spec['name']}.safetensors")
        (out / "reference" / f"{spec['name']}.json").write_text(json.dumps(meta, indent=2) + "\n")
        if spec.get("gguf_py"):
            write_gguf_py(out / "models" / f"{spec['name']}-gguf-py.gguf", cfg, sd)
        print(f"{spec['name']}: seed {seed}, min greedy margin {result['min_margin']:.4f}")


def build_and_record(spec, cfg, seed, long_rope):
    # from_dict reads the real-checkpoint layout (rope_scaling + rope_theta) as
    # from_pretrained does, including "su" and the top-level original length.
    as_dict = {k: v for k, v in cfg.items() if k != "auto_map"}
    if (as_dict.get("rope_scaling") or {}).get("type") == "su":
        # transformers 5.24 renames "su" to "longrope" only after validating, and its
        # validation then misses original_max_position_embeddings: hand it the
        # renamed (identical) parameters. config.json keeps "su".
        as_dict["rope_scaling"] = dict(as_dict["rope_scaling"], type="longrope")
    config = Phi3Config.from_dict(as_dict)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config).eval()
    init_weights(model, seed)
    if config.tie_word_embeddings:
        model.tie_weights()
    rng = np.random.default_rng(seed)
    tokens = lambda n: torch.from_numpy(rng.integers(3, VOCAB, size=(1, n)).astype(np.int64))

    seqs = OrderedDict()
    seqs["short"] = tokens(7)
    if long_rope:
        seqs["cross"] = tokens(LONG_CTX["orig"] + 13)
    else:
        seqs["window"] = tokens(40)
    tensors, meta_seqs = OrderedDict(), []
    with torch.no_grad():
        for key, ids in seqs.items():
            logits = model(ids).logits[0].float()
            tensors[f"{key}.ids"] = ids[0].clone()
            tensors[f"{key}.logits"] = logits.contiguous()
            entry = dict(key=key, len=ids.shape[1], incremental=False)
            if long_rope and ids.shape[1] > config.original_max_position_embeddings:
                inc = torch.stack([model(ids[:, : t + 1]).logits[0, -1].float() for t in range(ids.shape[1])])
                tensors[f"{key}.incremental"] = inc.contiguous()
                entry["incremental"] = True
            meta_seqs.append(entry)

        prompt = tokens(20 if long_rope else 10)
        model.generation_config.eos_token_id = None
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=GEN_TOKENS, min_new_tokens=0,
                                   eos_token_id=None, pad_token_id=0, bos_token_id=1)
        out = model.generate(prompt, generation_config=gen_cfg, output_logits=True,
                             return_dict_in_generate=True)
        new = out.sequences[0, prompt.shape[1]:]
        assert new.shape[0] == GEN_TOKENS, new.shape
        margins = []
        for step in out.logits:
            top = torch.topk(step[0].float(), 2).values
            margins.append(float(top[0] - top[1]))
    tensors["gen.prompt"] = prompt[0].clone()
    tensors["gen.output"] = new.clone()
    tensors["gen.margins"] = torch.tensor(margins, dtype=torch.float32)
    meta = OrderedDict(
        model=spec["name"],
        source_config=spec["src"],
        seed=seed,
        transformers=transformers.__version__,
        torch=torch.__version__,
        attn_implementation="eager",
        sequences=meta_seqs,
        generation=dict(prompt_len=prompt.shape[1], new_tokens=GEN_TOKENS, min_margin=min(margins)),
    )
    return dict(model=model, tensors=tensors, meta=meta, min_margin=min(margins))


if __name__ == "__main__":
    main()
