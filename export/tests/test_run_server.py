"""`tadsr-edge run --server URL` against a real Triton Inference Server (the nvidia-pytriton wheel's
tritonserver, Python backend, models/tiny), started and stopped by the tests on 127.0.0.1.

The binary is the one `make test` builds (export/tests/binary.py). Checked: a server run gives the
local run's image (untiled and tiled; the tiles of one image in flight together), a batch with bad files
ends as locally, a server killed mid-batch gives one clear error, exit 2 and no partial file, 8 clients at
once all finish right, a --prompt encoded on the client reaches the server's UNet, and a missing model, a
server holding another bundle's graphs or a server that is down is a one-line error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.tests.binary import BIN, needs_binary

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "models" / "tiny"

pytestmark = needs_binary


def tadsr(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_same_image(a: Path, b: Path) -> None:
    """The server runs the same graphs with the onnxruntime Python package inside Triton: float results
    may differ by an ulp from the runtime's library, which can flip a rounding to 8 bits. At most one
    level anywhere, and almost every value identical."""
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape, (a, b)
    diff = np.abs(pa - pb)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (a, int(diff.max()), float((diff > 0).mean()))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee.png", "chelsea.png"):
        shutil.copy(REPO / "examples" / name, folder / name)
    return folder


def leftovers(folder: Path):
    """Files in an output folder that are not finished outputs (temporaries, partial files)."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or not p.name.endswith(".png")]


@pytest.mark.parametrize("tiling", [["--tile", "0"], ["--tile", "256", "--tile-shape", "balanced"]],
                         ids=["untiled", "tiled"])
def test_server_run_gives_the_local_image(tiny_triton, photos, tmp_path, tiling):
    local = tadsr("run", photos, "-o", tmp_path / "local", "--model", TINY, "-q", *tiling)
    assert local.returncode == 0, local.stderr
    remote = tadsr("run", photos, "-o", tmp_path / "remote", "--model", TINY, "-q", *tiling,
                   "--server", tiny_triton.url, "--inflight", "2")
    assert remote.returncode == 0, remote.stderr
    for name in ("coffee.png", "chelsea.png"):
        assert_same_image(tmp_path / "local" / name, tmp_path / "remote" / name)


def test_tiles_of_one_image_are_in_flight_together_and_give_the_local_image(tiny_triton, tmp_path):
    """One 1024^2 output in 256 px tiles (25 per stage): with --inflight 4 its tiles go 4 at a time
    (the JSON line counts the requests that were in flight together), and the image is the local one."""
    source = tmp_path / "big.png"
    with Image.open(REPO / "examples" / "coffee.png") as image:
        image.convert("RGB").resize((256, 256), Image.BICUBIC).save(source)
    tiling = ["--tile", "256", "--tile-shape", "balanced", "--process-size", "0"]
    local = tadsr("run", source, "-o", tmp_path / "local.png", "--model", TINY, "-q", *tiling)
    assert local.returncode == 0, local.stderr
    remote = tadsr("run", source, "-o", tmp_path / "remote.png", "--model", TINY, "--json", *tiling,
                   "--server", tiny_triton.url, "--inflight", "4")
    assert remote.returncode == 0, remote.stderr
    report = json.loads(remote.stdout.splitlines()[0])
    assert report["output_size"] == [1024, 1024]
    assert report["tile"]["tile_px"] == 256
    assert report["server"]["inflight"] == 4
    assert report["server"]["requests_in_flight_peak"] == 4, report["server"]
    assert_same_image(tmp_path / "local.png", tmp_path / "remote.png")


def test_json_line_says_the_stages_ran_on_the_server(tiny_triton, photos, tmp_path):
    ran = tadsr("run", photos / "coffee.png", "-o", tmp_path / "out.png", "--model", TINY, "--json",
                "--server", tiny_triton.url)
    assert ran.returncode == 0, ran.stderr
    assert '"unet":"triton"' in ran.stdout.replace(" ", "")


def test_bad_files_in_a_batch_end_as_locally(tiny_triton, photos, tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    shutil.copy(photos / "coffee.png", batch / "good.png")
    (batch / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (batch / "empty.png").write_bytes(b"")
    runs = {}
    for where, extra in (("local", []), ("remote", ["--server", tiny_triton.url])):
        runs[where] = tadsr("run", batch, "-o", tmp_path / where, "--model", TINY, "-q", *extra)
    assert runs["local"].returncode == runs["remote"].returncode == 1
    errors = {where: sorted(line for line in ran.stderr.splitlines() if line.startswith("error:"))
              for where, ran in runs.items()}
    assert errors["local"] == errors["remote"] and len(errors["local"]) == 2, errors
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["good.png"]
    assert_same_image(tmp_path / "local" / "good.png", tmp_path / "remote" / "good.png")


def test_server_killed_mid_batch_is_a_clear_error_and_nothing_partial(start_triton, tiny_triton_repo, photos,
                                                                        tmp_path):
    server = start_triton(tiny_triton_repo)
    batch = tmp_path / "batch"
    batch.mkdir()
    for index in range(24):
        shutil.copy(photos / "coffee.png", batch / f"c{index:02d}.png")
    reference = tmp_path / "reference.png"
    assert tadsr("run", photos / "coffee.png", "-o", reference, "--model", TINY, "-q").returncode == 0
    out = tmp_path / "out"
    client = subprocess.Popen([str(BIN), "run", str(batch), "-o", str(out), "--model", str(TINY), "-q",
                               "--server", server.url, "--inflight", "2", "--retries", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out.is_dir() and any(out.glob("c*.png"))):
            time.sleep(0.05)
        server.kill()
        _, stderr = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    assert "unreachable" in lines[0] and "not processed" in lines[0] and "--server" in lines[0], lines[0]
    written = sorted(out.glob("*.png"))
    assert 0 < len(written) < 24
    assert leftovers(out) == []
    for path in written:  # complete, and the right picture
        assert_same_image(reference, path)


def test_eight_clients_at_once_all_finish_right(tiny_triton, photos, tmp_path):
    reference = tmp_path / "reference.png"
    assert tadsr("run", photos / "chelsea.png", "-o", reference, "--model", TINY, "-q").returncode == 0
    clients = [subprocess.Popen([str(BIN), "run", str(photos / "chelsea.png"), "-o", str(tmp_path / f"c{i}.png"),
                                 "--model", str(TINY), "-q", "--server", tiny_triton.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    for client in clients:
        _, stderr = client.communicate(timeout=300)
        assert client.returncode == 0, stderr
    for i in range(8):
        assert_same_image(reference, tmp_path / f"c{i}.png")


def test_a_server_holding_another_bundles_graphs_is_refused(tiny_triton, photos, tmp_path):
    """The repository records each graph's sha256; a client whose bundle differs stops before any work."""
    ran = tadsr("run", photos / "coffee.png", "-o", tmp_path / "out.png", "--model", REPO / "models" / "nano",
                "-q", "--server", tiny_triton.url, timeout=60)
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "serves another vae_encoder graph than the bundle's" in lines[0], ran.stderr
    assert not (tmp_path / "out.png").exists()


def test_missing_model_down_server_and_bad_url_are_one_line_errors(start_triton, tiny_triton_repo, photos,
                                                                   tmp_path):
    from export.triton_server import free_port

    partial = tmp_path / "repo"
    shutil.copytree(tiny_triton_repo, partial)
    shutil.rmtree(partial / "unet")
    server = start_triton(partial)
    for extra, expected in (
        (["--server", server.url], 'has no model "unet"'),
        (["--server", f"http://127.0.0.1:{free_port()}", "--retries", "1"], "unreachable"),
        (["--server", "https://example.invalid"], "http://HOST:PORT"),
        (["--inflight", "4"], "needs --server"),
        (["--server", server.url, "--tile-batch", "2"], "--tile-batch 2 is for local runs"),
    ):
        ran = tadsr("run", photos / "coffee.png", "-o", tmp_path / "out.png", "--model", TINY, "-q", *extra,
                    timeout=60)
        assert ran.returncode == 2, (extra, ran.stderr)
        lines = ran.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (extra, ran.stderr)
        assert not (tmp_path / "out.png").exists()


def test_a_prompt_is_encoded_here_and_the_server_run_gives_the_local_image(start_triton, text_bundle, photos,
                                                                           tmp_path_factory, tmp_path):
    """--prompt with --server: the text encoder runs on the client (the repository holds the three image
    networks), once for all the images in flight, and the server's images are the local ones."""
    from export.triton import write_repository

    repo = tmp_path_factory.mktemp("text_triton") / "repo"
    write_repository(text_bundle, repo, variant="python")
    assert not (repo / "text_encoder").exists()
    text = "a dog on a sofa, sharp, detailed"
    local = tadsr("run", photos, "-o", tmp_path / "local", "--model", text_bundle, "-q", "--tile", "0",
                  "--prompt", text)
    assert local.returncode == 0, local.stderr
    default = tadsr("run", photos / "coffee.png", "-o", tmp_path / "default.png", "--model", text_bundle, "-q",
                    "--tile", "0")
    assert default.returncode == 0, default.stderr
    with start_triton(repo) as server:
        remote = tadsr("run", photos, "-o", tmp_path / "remote", "--model", text_bundle, "-q", "--tile", "0",
                       "--prompt", text, "--server", server.url, "--inflight", "2")
    assert remote.returncode == 0, remote.stderr
    for name in ("coffee.png", "chelsea.png"):
        assert_same_image(tmp_path / "local" / name, tmp_path / "remote" / name)
    # the prompt reached the server's UNet: the default prompt's image is another one
    assert np.abs(pixels(tmp_path / "remote" / "coffee.png") - pixels(tmp_path / "default.png")).mean() > 2
