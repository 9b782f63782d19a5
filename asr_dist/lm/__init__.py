"""The language-model half of recognition: n-gram LMs built offline with KenLM, and CTC beam search with them.

* `asr_dist.lm.build`   text (files, training shards' transcripts) -> normalized sentences -> KenLM ARPA/binary.
* `asr_dist.lm.store`   the LM folder (lm.json + model files): load and check it before any decoding.
* `asr_dist.lm.decode`  pyctcdecode beam search over CTC logits, on every core.
* `asr_dist.lm.tune`    alpha/beta grid search on a dev set, written back into lm.json.
* `asr_dist.lm.cli`     `asr-dist lm build|tune`.
"""
