# Usage: python benchmarks/lm_synthetic_channel.py [P_CONFUSION]   (paths: the demo-like corpus in /tmp/lm13, see docs/lm.md)
"""Synthetic acoustic model: CTC logits for the dev transcripts with random near-tie confusions (greedy CER ~0.25),
33 frames/s; then greedy vs LM decoding. Measures the LM's correction and decoding speed, not a real model."""
import json, sys, time
import numpy as np, jiwer
from asr_dist.lm.build import shard_transcripts
from asr_dist.lm.decode import LMDecoder, DecodeStats
from transformers import Wav2Vec2Processor
proc = Wav2Vec2Processor.from_pretrained("/tmp/lm13/shards/train/processor")
vocab = proc.tokenizer.get_vocab(); V = len(vocab)
letters = [t for t in vocab if len(t) == 1 and t.isalpha()]
refs = shard_transcripts("/tmp/lm13/shards/dev")
rng = np.random.default_rng(0)
p_conf = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
logits = []
for r in refs:
    rows = []
    for c in r:
        x = rng.normal(0, 1, V).astype(np.float32)
        tok = vocab["|"] if c == " " else vocab[c]
        x[tok] = 6.0
        if c != " " and rng.random() < 0.6:
            other = vocab[rng.choice(letters)]
            x[other] = 6.0 + (rng.uniform(0.1, 1.5) if rng.random() < p_conf / 0.6 else -rng.uniform(0.1, 1.5))
        rows.append(x)
        b = rng.normal(0, 1, V).astype(np.float32); b[0] = 6.0; rows.append(b)
    logits.append(np.stack(rows))
greedy = proc.tokenizer.batch_decode([l.argmax(-1).tolist() for l in logits])
print(json.dumps({"greedy_wer": jiwer.wer(refs, greedy), "greedy_cer": jiwer.cer(refs, greedy)}))
audio = sum(len(l) for l in logits) / 33.0
for backend, beam in [("pyctcdecode", 100), ("pyctcdecode", 32), ("torchaudio", 100), ("torchaudio", 32)]:
    for a, b in [(0.5, 1.0), (1.0, 2.0)]:
        with LMDecoder("/tmp/lm13/lm", vocab, a, b, beam, backend, processes=2) as d:
            st = DecodeStats(); hyps = d.decode(logits, 1 / 33.0, st)
        print(json.dumps({"backend": backend, "beam": beam, "alpha": a, "beta": b, "wer": round(jiwer.wer(refs, hyps), 3),
                          "cer": round(jiwer.cer(refs, hyps), 3), "audio_s": round(audio, 1),
                          "decode_s": round(st.wall_seconds, 2), "x_real_time": round(audio / st.wall_seconds, 1)}), flush=True)
