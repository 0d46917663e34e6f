#!/usr/bin/env python3
"""mkseeds.py - writes the seed corpora in tests/fuzz/corpus/ (checked in).

Run from the repository root: python3 tests/fuzz/mkseeds.py. The files are
small on purpose (a few KB per target): libFuzzer grows its own corpus from
them in build/fuzz/corpus-TARGET. GGUF and safetensors seeds are written
here byte by byte, so they need nothing but Python.
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

# ---- GGUF ------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
T_F32, T_F16, T_Q8_0 = 0, 1, 8


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def gval(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        return out + b"".join(gval(et, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors=(), version=3, align=32):
    """kvs: [(key, type, value)]; tensors: [(name, type, ne, data bytes)]."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for k, t, v in kvs:
        out += gstr(k) + struct.pack("<I", t) + gval(t, v)
    offset, blobs = 0, b""
    for name, t, ne, data in tensors:
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", t, offset)
        pad = (-len(data)) % align
        blobs += data + b"\0" * pad
        offset += len(data) + pad
    out += b"\0" * ((-len(out)) % align)
    return out + blobs


def f32s(vals):
    return b"".join(struct.pack("<f", v) for v in vals)


def f16s(vals):
    return b"".join(struct.pack("<e", v) for v in vals)


def llama_vocab():
    toks = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in (0x0A, 0x20, 0xC3, 0xA9)]
    toks += ["\u2581", "\u2581In", "\u2581the", "\u2581beginning", "e", "h", "t", "n", "i",
             "\u2581b", "\u2581t", "in", "th", "<|im_start|>", "<|im_end|>"]
    types = [2, 3, 3] + [6] * 4 + [1] * (len(toks) - 9) + [4, 3]
    scores = [0.0] * 7 + [-float(i) for i in range(len(toks) - 7)]
    return [("general.architecture", STR, "llama"),
            ("tokenizer.ggml.model", STR, "llama"),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.scores", ARR, (F32, scores)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.bos_token_id", U32, 1),
            ("tokenizer.ggml.eos_token_id", U32, 2),
            ("tokenizer.ggml.unknown_token_id", U32, 0),
            ("tokenizer.ggml.add_bos_token", BOOL, True),
            ("tokenizer.chat_template", STR, "{% for m in messages %}<|im_start|>"
             "{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")]


def gpt2_vocab():
    # Byte-level: every byte as its printable mark, then a few merges.
    marks = [chr(c) for c in range(0x21, 0x7F)] + ["\u0120", "\u010A"]
    toks = marks + ["\u0120t", "he", "\u0120the", "in", "<|endoftext|>"]
    merges = ["\u0120 t", "h e", "\u0120t he", "i n"]
    types = [1] * (len(toks) - 1) + [3]
    return [("tokenizer.ggml.model", STR, "gpt2"),
            ("tokenizer.ggml.pre", STR, "gpt-2"),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.merges", ARR, (STR, merges)),
            ("tokenizer.ggml.bos_token_id", U32, len(toks) - 1),
            ("tokenizer.ggml.eos_token_id", U32, len(toks) - 1)]


def bert_vocab():
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2581the", "\u2581in",
            "\u2581begin", "ning", "\u2581god", ".", ","]
    types = [3, 2, 3, 3, 3] + [1] * (len(toks) - 5)
    return [("general.architecture", STR, "bert"),
            ("tokenizer.ggml.model", STR, "bert"),
            ("tokenizer.ggml.tokens", ARR, (STR, toks)),
            ("tokenizer.ggml.token_type", ARR, (I32, types)),
            ("tokenizer.ggml.bos_token_id", U32, 2),
            ("tokenizer.ggml.seperator_token_id", U32, 3),
            ("tokenizer.ggml.unknown_token_id", U32, 1),
            ("tokenizer.ggml.padding_token_id", U32, 0)]


def gguf_seeds():
    every_type = [("a.u8", U8, 7), ("a.i8", I8, -7), ("a.u16", U16, 700), ("a.i16", I16, -700),
                  ("a.u32", U32, 70000), ("a.i32", I32, -70000), ("a.f32", F32, 0.5),
                  ("a.bool", BOOL, True), ("a.str", STR, "caf\u00e9"),
                  ("a.u64", U64, 1 << 40), ("a.i64", I64, -(1 << 40)), ("a.f64", F64, 1e-5),
                  ("a.arr", ARR, (I16, [1, -2, 3])), ("a.strs", ARR, (STR, ["x", "", "yz"])),
                  ("general.alignment", U32, 32)]
    tensors = [("t.f32", T_F32, [4, 2], f32s(range(8))),
               ("t.f16", T_F16, [8], f16s([0.5] * 8)),
               ("t.q8_0", T_Q8_0, [32], f16s([0.1]) + bytes(range(32)))]
    lora = [("general.architecture", STR, "llama"), ("general.type", STR, "adapter"),
            ("adapter.type", STR, "lora"), ("adapter.lora.alpha", F32, 2.0)]
    lora_t = [("blk.0.attn_q.weight.lora_a", T_F16, [256, 1], f16s([0.01] * 256)),
              ("blk.0.attn_q.weight.lora_b", T_F16, [1, 256], f16s([0.02] * 256))]
    return {"keys-and-tensors.gguf": gguf(every_type, tensors),
            "v2-empty.gguf": gguf([], version=2),
            "llama-vocab.gguf": gguf(llama_vocab()),
            "gpt2-vocab.gguf": gguf(gpt2_vocab()),
            "bert-vocab.gguf": gguf(bert_vocab()),
            "lora-adapter.gguf": gguf(lora, lora_t)}

# ---- safetensors -----------------------------------------------------------


def safetensors(tensors, metadata=None):
    """tensors: [(name, dtype, shape, data bytes)], laid out in order."""
    header, at = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(data)]}
        at += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors)


def bf16s(vals):
    return b"".join(struct.pack("<f", v)[2:] for v in vals)


def st_seeds():
    return {"f32.safetensors": safetensors([("a", "F32", [2, 3], f32s(range(6))),
                                            ("b", "F32", [3], f32s([1, 2, 3]))]),
            "f16-bf16.safetensors": safetensors([("x.weight", "F16", [4], f16s([1, 2, 3, 4])),
                                                 ("y.weight", "BF16", [2, 2],
                                                  bf16s([1, -1, 0.5, 2]))],
                                                {"format": "pt"}),
            "empty-dims.safetensors": safetensors([("s", "F32", [], f32s([1])),
                                                   ("z", "F16", [0, 4], b"")])}

# ---- PEFT ------------------------------------------------------------------

PEFT_CONFIG = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 2,
               "target_modules": ["q_proj", "v_proj"], "bias": "none",
               "fan_in_fan_out": False, "use_dora": False, "use_rslora": False,
               "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None}


def peft(config, pairs):
    """pairs: [(module key, n_in, n_out)] with r = 1, in F16."""
    ts = []
    for key, k, n in pairs:
        pre = "base_model.model." + key
        ts.append((pre + ".lora_A.weight", "F16", [1, k], f16s([0.01] * k)))
        ts.append((pre + ".lora_B.weight", "F16", [n, 1], f16s([0.02] * n)))
    ts.sort(key=lambda t: t[0])
    return json.dumps(config, indent=1).encode() + b"\0" + safetensors(ts, {"format": "pt"})


def peft_seeds():
    q0 = ("model.layers.0.self_attn.q_proj", 256, 256)
    v1 = ("model.layers.1.self_attn.v_proj", 256, 128)
    regex = dict(PEFT_CONFIG, target_modules=r".*\.(q_proj|v_proj)",
                 rank_pattern={"layers\\.1\\..*": 1}, alpha_pattern={"v_proj": 4},
                 use_rslora=True)
    return {"q-proj.peft": peft(PEFT_CONFIG, [q0]),
            "regex-patterns.peft": peft(regex, [q0, v1]),
            "all-linear-config-only.peft":
                json.dumps(dict(PEFT_CONFIG, target_modules="all-linear")).encode()}

# ---- Request bodies --------------------------------------------------------


def js(o):
    return json.dumps(o, ensure_ascii=False).encode()


def request_seeds():
    return {
        "completion.json": js({"model": "kjv-tiny-q8_0", "prompt": "In the beginning",
                               "max_tokens": 16, "temperature": 0.7, "top_p": 0.9,
                               "top_k": 40, "min_p": 0.05, "seed": 42, "stop": ["\n", "God"],
                               "n": 2, "stream": True, "stream_options": {"include_usage": True},
                               "logprobs": 2, "presence_penalty": 0.5,
                               "frequency_penalty": -0.5, "logit_bias": {"50": -100, "7": 2},
                               "user": "u1"}),
        "completion-ids.json": js({"prompt": [[1, 450, 2], "and", [3]], "max_tokens": 4,
                                   "adapters": ["devil", {"name": "jargon", "scale": 0.5}],
                                   "echo": False, "ignore_eos": True}),
        "chat.json": js({"model": "devil", "lora_scale": 0.5, "messages": [
            {"role": "system", "content": "Thou art a scribe."},
            {"role": "user", "content": [{"type": "text", "text": "Who begat"},
                                         {"type": "text", "text": "Enos?"}]},
            {"role": "assistant", "content": None},
            {"role": "tool", "content": "caf\u00e9 <|im_end|>"}],
            "logprobs": True, "top_logprobs": 3, "max_completion_tokens": 8,
            "stop": "Amen", "repetition_penalty": 1.1}),
        "chat-retrieval.json": js({"messages": [{"role": "user", "content": "light"}],
                                   "retrieval": {"vector_store_ids": ["vs_1"], "top_k": 3,
                                                 "mode": "keyword", "echo": True}}),
    }


def api_seeds():
    def req(line, body):
        return line.encode() + b"\n" + (js(body) if not isinstance(body, bytes) else body)
    return {
        "adapter-load": req("POST /v1/adapters", {"name": "fortunes", "path":
                                                  "kjv-tiny-lora-fortunes.gguf", "pin": True}),
        "adapter-delete": req("DELETE /v1/adapters/devil tenant", b""),
        "vllm-load": req("POST /v1/load_lora_adapter", {"lora_name": "devil", "lora_path":
                                                        "x.gguf", "load_inplace": True}),
        "vllm-unload": req("POST /v1/unload_lora_adapter tenant", {"lora_name": "jargon"}),
        "embeddings": req("POST /v1/embeddings", {"model": "hash", "input": ["In the beginning",
                                                  "caf\u00e9"], "encoding_format": "base64",
                                                  "dimensions": 64}),
        "embeddings-ids": req("POST /v1/embeddings", {"model": "bert-tiny-random-f16",
                                                      "input": [[2, 100, 3], [2, 3]]}),
        "vs-create": req("POST /v1/vector_stores", {
            "name": "kjv", "metadata": {"a": "b"}, "embedder": "hash",
            "context_template": "Context:\n{chunks}\n",
            "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 64,
                                                               "chunk_overlap_tokens": 8}}}),
        "vs-documents": req("POST /v1/vector_stores/vs_1/documents", {"documents": [
            {"id": "d9", "text": "And the evening and the morning were the first day.",
             "metadata": {"book": "genesis", "verse": 5, "tags": ["day"]}},
            {"text": "caf\u00e9 \u4f60\u597d"}]}),
        "vs-search": req("POST /v1/vector_stores/vs_1/search", {
            "query": "light of God", "max_num_results": 3, "mode": "hybrid",
            "ranking_options": {"score_threshold": 0.0},
            "filters": {"type": "and", "filters": [
                {"type": "eq", "key": "book", "value": "genesis"},
                {"type": "in", "key": "verse", "value": [1, 3]}]}}),
        "vs-search-vector": req("POST /v1/vector_stores/vs_1/search tenant",
                                {"query": [0.5, -0.25, 1], "mode": "vector"}),
        "vs-delete-doc": req("DELETE /v1/vector_stores/vs_1/documents/d1", b""),
        "tenant-create": req("POST /v1/tenants", {"name": "acme", "limits": {
            "max_concurrent": 2, "requests_per_minute": 60, "tokens_per_minute": 10000}}),
        "tenant-patch": req("PATCH /v1/tenants/ten_0123456789abcdef",
                            {"limits": {"max_concurrent": None}}),
        "tenant-key-delete": req("DELETE /v1/tenants/ten_1/keys/key_2", b""),
        "experiment-create": req("POST /v1/experiments tenant", {
            "name": "ab2", "sticky": "user",
            "variants": [{"model": "kjv-tiny-q8_0", "weight": 1}, {"model": "jargon",
                                                                   "weight": 0.5}]}),
        "experiment-patch": req("PATCH /v1/experiments/ab-shared", {"variants": [
            {"model": "devil", "weight": 2}]}),
        "feedback": req("POST /v1/feedback", {"id": "chatcmpl-123", "score": 0.75}),
        "chat": req("POST /v1/chat/completions tenant", {"model": "ab-own", "messages": [
            {"role": "user", "content": "hi"}]}),
    }

# ---- Text ------------------------------------------------------------------


def tokenizer_seeds():
    return {"english.txt": b"In the beginning God created the heaven and the earth.\n",
            "special.txt": "<s>[INST] caf\u00e9 [/INST]</s><|endoftext|>[CLS] x [SEP]"
                           "<|im_start|>user".encode(),
            "unicode.txt": "  \t\u00c9t\u00e9 \u4f60\u597d\u4e16\u754c \U0001F600 "
                           "\u0301e \u00a0 123,456.78 don't".encode(),
            "bytes.bin": bytes([0, 1, 0xff, 0x7f, 0x80, 0xc3, 0xa9, 0xe4, 0xbd])}


def textout_seed(kind, stops, cuts, text):
    out = bytes([(len(stops) % 5) | (0x80 if kind == "chat" else 0)])
    for s in stops:
        b = s.encode()
        out += bytes([len(b)]) + b
    return out + bytes([len(cuts)]) + bytes(cuts) + text.encode()


def textout_seeds():
    return {"stops.bin": textout_seed("text", ["\n\n", "Amen", "<|im_end|>"], [1, 2, 3, 5],
                                      "And God said,\nLet there be Ame light. Amen, and more"),
            "utf8.bin": textout_seed("chat", ["\u00e9t\u00e9"], [1, 1, 2],
                                     "caf\u00e9 \u00e9t\u00e9 \u4f60\u597d \U0001F600 "
                                     "\u00e9t\u00e9"),
            "overlap.bin": textout_seed("chat", ["abcd", "bc"], [3, 1], "xxabcdyy"),
            "none.bin": textout_seed("text", [], [7], "no stop \U0001F600 at all")}


def main():
    sets = {"fuzz_gguf": gguf_seeds(), "fuzz_safetensors": st_seeds(),
            "fuzz_peft": peft_seeds(), "fuzz_request": request_seeds(),
            "fuzz_api": api_seeds(), "fuzz_tokenizer": tokenizer_seeds(),
            "fuzz_textout": textout_seeds()}
    for target, files in sets.items():
        d = os.path.join(ROOT, target)
        os.makedirs(d, exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        total = sum(len(v) for v in files.values())
        print("%-18s %2d files %6d bytes" % (target, len(files), total))


if __name__ == "__main__":
    main()
