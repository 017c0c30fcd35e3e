"""`tadsr-edge prompt` and `run --prompt`: the Rust tokenizer against Hugging Face `tokenizers` (the real CLIP
vocabulary and the tiny one), the Rust-run text encoder against PyTorch, and a run conditioned on a text against
the same run given PyTorch's embedding of that text."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.tests.binary import BIN, needs_binary
from export.tests.clip_vocab import CLIP_VOCAB_SIZE, vocab_file, write_clip_tokenizer_json
from export.tests.conftest import TEXT_PROMPT

pytestmark = needs_binary

# What people type, and what trips tokenizers: case, runs of white space, punctuation runs, digits (one token
# each), contractions, accents (composed and not), other scripts, emoji, the pad token "!" and the special tokens
# inside the text, an empty text, and texts longer than 75 tokens.
TEXTS = [
    "",
    "a photo of a cat",
    TEXT_PROMPT,
    "clean, high-resolution, 8k, ultra-detailed",
    "  Leading and trailing spaces\t\tand\ttabs \n and new\nlines  ",
    "It's the dog's bone; they'll say we'd've done it, I'm sure!!",
    "don't DON'T Don'T o'clock 's 't",
    "Price: $1,299.99 (was 1999) -- 50% off!!! #deal @shop",
    "Crème brûlée, naïve café, Ångström, Straße, ΟΔΟΣ, İstanbul",
    "e\u0301cole vs \u00e9cole",
    "東京の夜景、高精細 写真",
    "Москва зимой, 4K",
    "emoji 🐱🐶 and 👩‍👩‍👧 family",
    "<|startoftext|>inside<|endoftext|> text",
    "a!b!!c",
    "...!?,;:()[]{}<>/\\|~`^&*_+=-",
    "x" * 300,
    "the cat " * 60,
    "Ⅻ ½ ² ٣ 𝟙 numbers",
    "\u200bzero\u00a0width\u3000spaces",
]


def prompt_ids(bundle, text):
    proc = subprocess.run([str(BIN), "prompt", "--model", str(bundle), "--json", "--", text],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def real_clip_bundle(text_bundle, tmp_path_factory):
    """The text bundle with SD-2.1's tokenizer (real CLIP vocabulary) in place of the tiny one: for tokenizing only
    (its tiny text encoder knows 524 ids)."""
    if not vocab_file().is_file():
        pytest.fail(f"{vocab_file()} is missing: run scripts/setup.sh (make test runs it)")
    work = tmp_path_factory.mktemp("real_clip")
    bundle = work / "bundle"
    shutil.copytree(text_bundle, bundle)
    tokenizer = write_clip_tokenizer_json(bundle / "tokenizer" / "tokenizer.json", work / "tokenizer_src")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["components"]["text_encoder"]["tokenizer"]["sha256"] = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_the_real_clip_tokenizer_gives_the_ids_of_hugging_face_tokenizers(real_clip_bundle):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(real_clip_bundle / "tokenizer" / "tokenizer.json"))
    assert reference.get_vocab_size() == CLIP_VOCAB_SIZE
    # known ids of SD-2.1's tokenizer: start, "a</w>", "photo</w>", "of</w>", end, then "!" (0) as padding
    assert reference.encode("a photo of").ids[:5] == [49406, 320, 1125, 539, 49407]
    got, _ = prompt_ids(real_clip_bundle, "A photo of a CAT, it's 42!")
    assert got["tokens"] == ["a", "photo", "of", "a", "cat", ",", "it", "'s", "4", "2", "!"]
    for text in TEXTS:
        got, stderr = prompt_ids(real_clip_bundle, text)
        want = reference.encode(text).ids
        assert got["ids"] == want, text
        kept = got["text_tokens"]
        assert len(got["ids"]) == 77 and want[kept + 1] == 49407
        if got["dropped_tokens"]:
            assert "were dropped" in stderr
            assert kept == 75
        else:
            assert stderr == ""


def test_the_tiny_tokenizer_gives_the_ids_of_hugging_face_tokenizers(text_bundle, text_models):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(text_bundle / "tokenizer" / "tokenizer.json"))
    for text in TEXTS:
        got, _ = prompt_ids(text_bundle, text)
        assert got["ids"] == reference.encode(text).ids, text
    # and the tokenizer the export used for prompt_embeds.npy agrees
    want = text_models.tokenizer(TEXT_PROMPT, max_length=77, padding="max_length", truncation=True).input_ids
    assert prompt_ids(text_bundle, TEXT_PROMPT)[0]["ids"] == want


def test_the_embedding_written_is_pytorchs(text_bundle, text_models, tmp_path):
    for index, text in enumerate([TEXT_PROMPT, "a dog", "the cat " * 60, ""]):
        out = tmp_path / f"e{index}.npy"
        proc = subprocess.run([str(BIN), "prompt", "--model", str(text_bundle), "-o", str(out), "--", text],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "wrote" in proc.stdout
        ids = text_models.tokenizer(text, max_length=77, padding="max_length", truncation=True,
                                    return_tensors="pt").input_ids
        with torch.no_grad():
            want = text_models.text_encoder(ids)[0].numpy()
        got = np.load(out)
        assert got.shape == want.shape == (1, 77, 32)
        # fp32, the same 2-layer encoder: round-off only (observed ~1e-6)
        assert np.abs(got - want).max() <= 1e-4, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0.npy", "e1.npy", "e2.npy", "e3.npy"]


def test_run_with_a_prompt_is_the_run_with_pytorchs_embedding_of_it(text_bundle, text_models, repo, tmp_path):
    text = "a dog on a sofa, sharp, detailed"
    ids = text_models.tokenizer(text, max_length=77, padding="max_length", truncation=True,
                                return_tensors="pt").input_ids
    with torch.no_grad():
        np.save(tmp_path / "dog.npy", text_models.text_encoder(ids)[0].numpy().astype(np.float32))
    image = repo / "examples" / "coffee.png"

    def run(name, *extra):
        out = tmp_path / name
        proc = subprocess.run([str(BIN), "run", str(image), "-o", str(out), "--model", str(text_bundle),
                               "--provider", "cpu", "-q", "--json", *extra], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return np.asarray(Image.open(out).convert("RGB"), dtype=np.int16), json.loads(proc.stdout)["prompt"]

    by_text, said = run("text.png", "--prompt", text)
    tokens = len(text_models.tokenizer(text).input_ids) - 2  # without the start and end tokens
    assert said == {"source": "text", "text": text, "tokens": tokens, "dropped_tokens": 0}
    by_torch, said = run("torch.png", "--prompt-embeds", str(tmp_path / "dog.npy"))
    assert said == {"source": "file", "file": str(tmp_path / "dog.npy")}
    default, said = run("default.png")
    assert said == {"source": "bundle", "text": TEXT_PROMPT}
    # the same conditioning up to fp32 round-off: at most one 8-bit level apart
    assert np.abs(by_text - by_torch).max() <= 1
    # and the conditioning matters (the test could fail): the default prompt gives another image
    assert np.abs(by_text - default).mean() > 2


def test_prompt_errors_are_one_line_and_exit_2(text_bundle, repo, tmp_path):
    def run(*argv):
        return subprocess.run([str(BIN), *argv], capture_output=True, text=True, timeout=60)

    no_encoder = run("run", str(repo / "examples" / "coffee.png"), "-o", str(tmp_path / "x.png"),
                     "--model", str(repo / "models" / "tiny"), "--prompt", "a cat")
    assert no_encoder.returncode == 2
    assert no_encoder.stderr.count("\n") == 1 and "has no text encoder" in no_encoder.stderr
    assert not (tmp_path / "x.png").exists()
    both = run("run", str(repo / "examples" / "coffee.png"), "-o", str(tmp_path / "x.png"), "--model",
               str(text_bundle), "--prompt", "a", "--prompt-embeds", str(tmp_path / "e.npy"))
    assert both.returncode == 2 and "cannot be used with" in both.stderr
    folder = run("prompt", "--model", str(text_bundle), "a", "-o", str(tmp_path))
    assert folder.returncode == 2 and ".npy" in folder.stderr
    # a damaged tokenizer.json: the bundle's fault, named, and nothing written
    damaged = tmp_path / "damaged"
    shutil.copytree(text_bundle, damaged)
    tokenizer = damaged / "tokenizer" / "tokenizer.json"
    data = json.loads(tokenizer.read_text())
    data["model"]["type"] = "WordPiece"
    tokenizer.write_text(json.dumps(data))
    # the files are hash-checked, with -o or without: the edited tokenizer.json is caught by its sha256
    for extra in ([], ["-o", str(tmp_path / "e.npy")]):
        bad = run("prompt", "--model", str(damaged), "a", *extra)
        assert bad.returncode == 2 and "sha256" in bad.stderr and bad.stderr.count("\n") == 1, extra
    # its hash updated (a bundle exported so): refused by what it is, not run
    manifest = json.loads((damaged / "manifest.json").read_text())
    manifest["components"]["text_encoder"]["tokenizer"]["sha256"] = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    bad = run("prompt", "--model", str(damaged), "a")
    assert bad.returncode == 2 and "not BPE" in bad.stderr and bad.stderr.count("\n") == 1
    # another graph in the text encoder's place (hash updated): its ports are checked when it opens
    swapped = tmp_path / "swapped"
    shutil.copytree(text_bundle, swapped)
    manifest = json.loads((swapped / "manifest.json").read_text())
    components = manifest["components"]
    graph = swapped / components["text_encoder"]["file"]
    shutil.copyfile(swapped / components["vae_decoder"]["file"], graph)
    components["text_encoder"]["sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    bad = run("run", str(repo / "examples" / "coffee.png"), "-o", str(tmp_path / "s.png"), "--model", str(swapped),
              "--prompt", "a cat")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "text_encoder graph has no input" in bad.stderr, bad.stderr
    assert not (tmp_path / "s.png").exists()
    assert not (tmp_path / "e.npy").exists()


def test_an_fp16_bundles_text_encoder_runs_here_close_to_pytorch(text_models, tmp_path):
    """fp16 bundles carry an fp16 text encoder; `prompt` runs it on the CPU (float16 in, widened out)."""
    from export.bundle import export_bundle

    bundle = tmp_path / "fp16"
    export_bundle(text_models, bundle, precision="fp16", text_encoder=True, verify=False, quiet=True,
                  measure_memory=False)
    out = tmp_path / "e.npy"
    proc = subprocess.run([str(BIN), "prompt", "--model", str(bundle), "-o", str(out), "--", TEXT_PROMPT],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    assert got.dtype == np.float32
    want = text_models.prompt_embeds.numpy()
    # float16 keeps 11 bits: ~5e-4 relative per rounding, values up to ~3, a few dozen roundings deep
    # (observed 2.5e-3)
    assert np.abs(got - want).max() <= 2e-2
    assert np.abs(got - want).max() > 0, "an fp16 graph that matches fp32 exactly did not run in fp16"


def test_info_says_whether_a_bundle_takes_text_prompts(text_bundle, repo):
    for bundle, expected in [(text_bundle, True), (repo / "models" / "tiny", False)]:
        proc = subprocess.run([str(BIN), "info", "--model", str(bundle), "--json"], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["model"]["text_prompts"] is expected


def test_prompt_dir_conditions_each_image_on_its_own_file(text_bundle, repo, tmp_path):
    """--prompt-dir reads DIR/<subfolder>/<name up to the first dot>.txt per input (the authors' txt/ layout):
    each output is the output of a run with --prompt and that file's text; an input without its file fails alone."""
    inputs, prompts = tmp_path / "in", tmp_path / "prompts"
    (inputs / "sub").mkdir(parents=True)
    (prompts / "sub").mkdir(parents=True)
    shutil.copy(repo / "examples" / "coffee.png", inputs / "a.b.png")
    shutil.copy(repo / "examples" / "chelsea.png", inputs / "sub" / "c.png")
    shutil.copy(repo / "examples" / "astronaut.png", inputs / "d.png")
    texts = {"a.b.png": "a dog on a sofa, sharp, detailed", "sub/c.png": TEXT_PROMPT}
    (prompts / "a.txt").write_text(texts["a.b.png"])
    # an editor's byte-order mark and newline change nothing
    (prompts / "sub" / "c.txt").write_text("\ufeff" + texts["sub/c.png"] + "\r\n", encoding="utf-8")

    def run(*argv):
        return subprocess.run([str(BIN), "run", *map(str, argv), "--model", str(text_bundle), "--provider", "cpu",
                               "--tile", "0", "-q"], capture_output=True, text=True, timeout=300)

    out = tmp_path / "out"
    batch = run(inputs, "-o", out, "--recursive", "--prompt-dir", prompts, "--json")
    assert batch.returncode == 1, batch.stderr
    errors = [line for line in batch.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "d.png" in errors[0] and "d.txt" in errors[0], batch.stderr
    assert not (out / "d.png").exists()
    said = {Path(line["input"]).relative_to(inputs).as_posix(): line["prompt"]
            for line in map(json.loads, batch.stdout.splitlines())}
    assert said["a.b.png"]["file"] == str(prompts / "a.txt") and said["a.b.png"]["text"] == texts["a.b.png"]
    assert said["sub/c.png"]["source"] == "prompt_dir" and said["sub/c.png"]["text"] == texts["sub/c.png"] + "\r\n"
    # CPU stages: the text encoder beside them on the CPU too
    assert {prompt["text_encoder_on"] for prompt in said.values()} == {"cpu"}
    for name, text in texts.items():
        single = tmp_path / f"single-{Path(name).stem}.png"
        alone = run(inputs / name, "-o", single, "--prompt", text)
        assert alone.returncode == 0, alone.stderr
        got = np.asarray(Image.open(out / name).convert("RGB"), dtype=np.int16)
        want = np.asarray(Image.open(single).convert("RGB"), dtype=np.int16)
        assert np.abs(got - want).max() <= 1, name
    # the two prompts gave two conditionings: a.b.png with c's text is another image
    other = tmp_path / "other.png"
    assert run(inputs / "a.b.png", "-o", other, "--prompt", TEXT_PROMPT).returncode == 0
    a = np.asarray(Image.open(out / "a.b.png").convert("RGB"), dtype=np.int16)
    assert np.abs(a - np.asarray(Image.open(other).convert("RGB"), dtype=np.int16)).mean() > 2
    # --dry-run finds the missing file too, and computes nothing
    dry = run(inputs, "-o", tmp_path / "dry", "--recursive", "--prompt-dir", prompts, "--dry-run")
    assert dry.returncode == 1 and "d.txt" in dry.stderr and ", prompt " in dry.stdout
    assert not (tmp_path / "dry").exists()
