#!/usr/bin/env python3
"""Tokenizer and chat-template fixtures from the Hugging Face reference.

The reference tokenizer is built by transformers from the Phi-3 vocabulary
file shared/testdata/tokenizer/ggml-vocab-phi-3.gguf (nothing is downloaded)
and saved as a Hugging Face tokenizer folder, which phi3 also loads.

Writes:
  testdata/tokenizer/phi-3-hf/          tokenizer.json, tokenizer_config.json (+ added_tokens.json)
  testdata/tokenizer/hf_cases.json      encode/decode of hard strings
  testdata/tokenizer/chat_cases.json    apply_chat_template() of the real templates

Usage: .venv-ref/bin/python tools/reference/make_tokenizer_fixtures.py [--shared ../shared]
"""

import argparse
import json
import shutil
from pathlib import Path

import transformers
from transformers import AutoTokenizer

HARD_STRINGS = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n\n",
    " \n \t ",
    "Hello world",
    " Hello world",
    "Hello world ",
    "   leading and trailing   ",
    "tabs\tand\ttabs\t\t",
    "line one\nline two\r\nline three",
    "😀🎉👩‍👩‍👧‍👦 emoji and ZWJ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 and 𠜎𠜱 (4-byte characters)",
    "日本語のテキストと中文文本",
    "مرحبا بالعالم",
    "e\u0301 cafe\u0301 n\u0303 combining marks",
    "3.14159 1000000 2024-05-01 0x1F",
    "def f(x):\n    return x ** 2  # square\n",
    "fn main() { println!(\"{}\", 1 + 2); }",
    "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n",
    "<|system|>You are helpful.<|end|><|user|>Hi<|end|>",
    "text<|end|>more text",
    "a <|endoftext|> b </s> c <s> d",
    "<|user|> spaces after special  <|end|>  ",
    "<|notatoken|> <|end",
    "Cửa Việt ក្រុង ภาษาไทย",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "&amp; &lt;tag&gt; \\n \\\\ \"quotes\" 'single'",
]

CONVERSATIONS = {
    "with_system": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ],
    "user_only": [{"role": "user", "content": "Hello!"}],
    "empty_system": [
        {"role": "system", "content": ""},
        {"role": "user", "content": " leading space and\nnewline "},
    ],
}

TEMPLATES = {
    "phi-3-mini-4k-early": "Phi-3-mini-4k-instruct/chat_template.from-ggml-vocab-phi-3.jinja",
    "phi-3.5-mini": "Phi-3.5-mini-instruct/chat_template.jinja",
    "phi-4-mini": "Phi-4-mini-instruct/chat_template.jinja",
    "phi-3-small": "Phi-3-small-8k-instruct/tokenizer_config.json",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[2]
    shared = Path(args.shared) if args.shared else root.parent / "shared"
    out = root / "testdata/tokenizer"
    out.mkdir(parents=True, exist_ok=True)

    vocab_dir = shared / "testdata/tokenizer"
    tok = AutoTokenizer.from_pretrained(str(vocab_dir), gguf_file="ggml-vocab-phi-3.gguf")
    hf_dir = out / "phi-3-hf"
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    tok.save_pretrained(str(hf_dir))
    shutil.copy(shared / "reference/configs/Phi-3.5-mini-instruct/added_tokens.json", hf_dir / "added_tokens.json")

    cases = []
    for text in HARD_STRINGS:
        special = tok.encode(text, add_special_tokens=False)
        plain = tok.encode(text, add_special_tokens=False, split_special_tokens=True)
        with_bos = tok.encode(text, add_special_tokens=True)
        cases.append(dict(
            text=text,
            ids_parse_special=special,
            ids_no_parse_special=plain,
            ids_with_bos=with_bos,
            decode_keep_special=tok.decode(special, skip_special_tokens=False),
            decode_skip_special=tok.decode(special, skip_special_tokens=True),
        ))
    meta = dict(transformers=transformers.__version__, source="ggml-vocab-phi-3.gguf via AutoTokenizer(gguf_file=...)")
    (out / "hf_cases.json").write_text(json.dumps(dict(meta=meta, cases=cases), ensure_ascii=False, indent=1) + "\n")

    chats = []
    for tname, rel in TEMPLATES.items():
        path = shared / "reference/configs" / rel
        template = json.loads(path.read_text())["chat_template"] if path.suffix == ".json" else path.read_text()
        for cname, msgs in CONVERSATIONS.items():
            for gen in (True, False):
                text = tok.apply_chat_template(msgs, chat_template=template, tokenize=False, add_generation_prompt=gen)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                chats.append(dict(template=tname, template_file=rel, conversation=cname, messages=msgs,
                                  add_generation_prompt=gen, bos_token=tok.bos_token, eos_token=tok.eos_token,
                                  text=text, ids=ids))
    (out / "chat_cases.json").write_text(json.dumps(dict(meta=meta, cases=chats), ensure_ascii=False, indent=1) + "\n")
    print(f"{len(cases)} tokenizer cases, {len(chats)} chat cases")


if __name__ == "__main__":
    main()
