"""Start a real NVIDIA Triton Inference Server here, on the CPU, from the ``nvidia-pytriton`` wheel's files.

    python -m export.triton --bundle models/tiny --out /tmp/tiny-repo --variant python
    python -m export.triton_server --repo /tmp/tiny-repo [--http-port 8000]
    tadsr-edge run examples/ -o out/ --model models/tiny --server http://127.0.0.1:8000

``make setup`` (``scripts/setup.sh``) installs the files of the wheel pinned in
``export/triton-requirements.txt`` (tritonserver 2.51.0, its shared libraries, the Python backend and one
backend stub per Python version; no GPU, no Docker) once per machine into
``${XDG_CACHE_HOME:-~/.cache}/tadsr-edge/triton-<first 16 hex digits of that file's sha256>``. Set
``TADSR_TRITON_DIR`` to use other copies of the same files (a ``--target`` folder or a venv's
``site-packages`` holding ``pytriton/`` and ``nvidia_pytriton.libs/``).

That Triton has only the Python backend, so serve the ``--variant python`` repository (each model's
``model.py`` runs the ONNX graph with onnxruntime inside the server). Its stub embeds the Python found first
on ``PATH`` (it reads that interpreter's ``pyvenv.cfg`` and ignores ``PYTHONPATH``), and mis-reads numpy 2
arrays (every input element comes out as the first one, outputs arrive with 0 bytes). So
:class:`TritonServer` puts first on ``PATH`` a small venv of its own, made at each start for the Python in
``python_bin_dir`` (by default the running interpreter's folder, the export venv's): its ``site-packages``
holds a ``.pth`` file listing the numpy 1.26 that ``make setup`` installs beside the server, then that
Python's own ``site-packages`` (onnxruntime and the rest). It uses the stub of that Python's version, and
refuses to start, saying why, when numpy 1.x is not what the models would import.

From Python (tests)::

    from export.triton_server import TritonServer
    with TritonServer(repo) as server:      # ready when the block starts
        urllib.request.urlopen(server.url + "/v2/models/vae_decoder")

The server listens on loopback only (HTTP; gRPC and metrics are off unless asked for), writes its log to
``server.log_path``, and runs in its own process group with its stub processes: ``stop()`` (on leaving the
``with`` block) asks it to shut down and kills what is left after 10 s; ``kill()`` kills it at once, for
tests of a server that dies. The CLI runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

REQUIREMENTS = Path(__file__).resolve().with_name("triton-requirements.txt")
ENV_DIR = "TADSR_TRITON_DIR"
STOP_TIMEOUT_S = 10.0
SHM_PREFIX = "triton_python_backend_shm_region"


class TritonUnavailable(RuntimeError):
    """No Triton server can run here (files absent, or the server does not start)."""


class TritonNotInstalled(TritonUnavailable):
    """The server's files are not installed (``make setup`` installs them)."""


class TritonStartError(TritonUnavailable):
    """The server could not be started, exited, or was not ready in time. ``log_tail`` holds its log's
    lines about models that failed to load and its last lines; ``model_failed`` is true when the server
    itself ran but a model of the repository failed to load (a fault of the repository, not of this
    machine)."""

    def __init__(self, message: str, log_tail: str = "", model_failed: bool = False):
        super().__init__(message + (f"\n--- tritonserver log (failed models, end) ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail
        self.model_failed = model_failed


def default_cache() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/tadsr-edge``, the set-up's cache folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tadsr-edge"


def install_dir(cache: Optional[os.PathLike] = None) -> Path:
    """Where ``scripts/setup.sh`` installs the wheel's files: ``<cache>/triton-<16 hex of sha256>``."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    return Path(cache if cache is not None else default_cache()) / f"triton-{digest}"


@dataclass(frozen=True)
class ServerFiles:
    """The installed files of the wheel (``root`` holds ``pytriton/`` and ``nvidia_pytriton.libs/``)."""

    root: Path

    @property
    def tritonserver(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def libs(self) -> Path:
        return self.root / "nvidia_pytriton.libs"

    @property
    def python_backend(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "backends" / "python"

    @property
    def stubs(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "python_backend_stubs"

    def stub(self, version: str) -> Path:
        """The Python-backend stub for Python ``version`` ("3.11")."""
        path = self.stubs / version / "triton_python_backend_stub"
        if not path.is_file():
            have = sorted(p.name for p in self.stubs.iterdir()) if self.stubs.is_dir() else []
            raise TritonUnavailable(f"no Python-backend stub for Python {version} in {self.stubs} "
                                    f"(it has {', '.join(have) or 'none'})")
        return path

    def missing(self) -> List[str]:
        """What a usable installation lacks (empty: all there)."""
        out = []
        if not os.access(self.tritonserver, os.X_OK):
            out.append(str(self.tritonserver))
        if not self.libs.is_dir():
            out.append(str(self.libs))
        if not (self.python_backend / "libtriton_python.so").is_file():
            out.append(str(self.python_backend / "libtriton_python.so"))
        if not self.stubs.is_dir():
            out.append(str(self.stubs))
        return out


def find_server(cache: Optional[os.PathLike] = None) -> ServerFiles:
    """The installed server files: ``$TADSR_TRITON_DIR`` when set, else the set-up's folder under
    ``cache`` (default ``${XDG_CACHE_HOME:-~/.cache}/tadsr-edge``). Given ``cache``, only that folder is
    looked at. Raises :class:`TritonNotInstalled` saying what to run when they are absent."""
    env = os.environ.get(ENV_DIR)
    if cache is None and env:
        files = ServerFiles(Path(env))
        missing = files.missing()
        if missing:
            raise TritonNotInstalled(f"{ENV_DIR}={env} is not a Triton installation (missing "
                                     f"{', '.join(missing)}); point it at the folder holding pytriton/ and "
                                     "nvidia_pytriton.libs/, or unset it and run `make setup`")
        return files
    root = install_dir(cache)
    files = ServerFiles(root)
    if not (root / ".complete").is_file() or files.missing():
        raise TritonNotInstalled(f"Triton Inference Server is not installed in {root}: run `make setup` "
                                 f"(it installs {REQUIREMENTS.name}'s wheel there; needs the network once), "
                                 f"or set {ENV_DIR}")
    return files


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether the server could listen on 127.0.0.1:``port`` now (it sets SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


_PROBE_TARGET = ("import json, platform, site, sys; print(json.dumps({"
                 "'version': '%d.%d' % sys.version_info[:2], 'full_version': platform.python_version(), "
                 "'base_executable': getattr(sys, '_base_executable', sys.executable), "
                 "'site_packages': site.getsitepackages()}))")
_PROBE_NUMPY = "import numpy; print(numpy.__version__); print(numpy.__file__)"


def _clean_env(env: dict) -> dict:
    """``env`` without what would steer a Python elsewhere (the stub ignores these anyway)."""
    return {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "VIRTUAL_ENV")}


def _run_python(exe: Path, code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "-c", code], capture_output=True, text=True, env=env, timeout=60)


def make_stub_python(python_bin_dir: Path, numpy_dir: Path, out: Path, env: dict) -> str:
    """A venv at ``out`` for the backend stub: the interpreter of ``python_bin_dir``, whose
    ``site-packages`` lists ``numpy_dir`` (numpy 1.x) and then that Python's own ``site-packages``.
    Returns its major.minor version. Raises :class:`TritonStartError` saying why it cannot serve."""
    exe = next((python_bin_dir / n for n in ("python3", "python") if os.access(python_bin_dir / n, os.X_OK)), None)
    if exe is None:
        raise TritonStartError(f"no python3 in {python_bin_dir} (python_bin_dir: the Python that runs model.py)")
    probe = _run_python(exe, _PROBE_TARGET, _clean_env(env))
    if probe.returncode != 0:
        raise TritonStartError(f"{exe} failed: {probe.stderr.strip()[-500:]}")
    info = json.loads(probe.stdout)
    version, base = info["version"], Path(info["base_executable"])
    (out / "bin").mkdir(parents=True)
    site_packages = out / "lib" / f"python{version}" / "site-packages"
    site_packages.mkdir(parents=True)
    for name in ("python3", "python", f"python{version}"):
        (out / "bin" / name).symlink_to(base)
    (out / "pyvenv.cfg").write_text(f"home = {base.parent}\ninclude-system-site-packages = false\n"
                                    f"version = {info['full_version']}\n", encoding="utf-8")
    paths = [str(numpy_dir)] + [p for p in info["site_packages"] if Path(p).is_dir()]
    (site_packages / "00-tadsr-triton.pth").write_text("\n".join(paths) + "\n", encoding="utf-8")
    check = _run_python(out / "bin" / "python3", _PROBE_NUMPY, _clean_env(env))
    if check.returncode != 0:
        raise TritonStartError(f"the models' Python ({exe}) cannot import numpy, which the Python backend "
                               f"needs: {check.stderr.strip()[-500:]}")
    numpy_version, numpy_file = check.stdout.split("\n")[:2]
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritonStartError(
            f"the models' Python ({exe}) imports numpy {numpy_version} ({numpy_file}), which tritonserver 2.51's "
            "Python-backend stub reads wrongly (inputs come out as their first element repeated, outputs with "
            f"0 bytes); it needs numpy 1.x, which `make setup` installs beside the server in {numpy_dir} "
            f"({REQUIREMENTS.name}; no numpy 1.x wheel exists for Python {version} if that is 3.13 or later)")
    return version


def _unresolved_libraries(binary: Path, env: dict) -> List[str]:
    """Shared libraries ``ldd`` cannot find for ``binary`` (empty where ldd is absent)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    try:
        out = subprocess.run([ldd, str(binary)], capture_output=True, text=True, env=env, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split("=>")[0].strip() for line in out.stdout.splitlines() if "not found" in line]


def _log_summary(path: Path, lines: int = 15, width: int = 600) -> str:
    """The log's lines about models that failed to load and its last ``lines`` lines (each cut to
    ``width`` characters: Triton's status tables are wide)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    failures = [line for line in text[:-lines] if _MODEL_FAILED in line]
    return "\n".join(line[:width] for line in failures + text[-lines:])


_MODEL_FAILED = "failed to load '"


def _model_failed(log: str) -> bool:
    """Whether the log says a model of the repository failed to load."""
    return _MODEL_FAILED in log


def _group_members(pgid: int) -> List[int]:
    """Ids of the live (not zombie) processes in process group ``pgid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _shm_regions(pids: Sequence[int]) -> List[str]:
    """The shared-memory regions named on the stubs' command lines (left in /dev/shm when killed)."""
    names = []
    for pid in pids:
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        names += [a.decode() for a in args if a.startswith(SHM_PREFIX.encode()) and b"/" not in a]
    return names


class TritonServer:
    """A tritonserver serving ``repo`` on 127.0.0.1, started on construction (ready when it returns)
    and stopped by :meth:`stop` / on leaving a ``with`` block.

    ``python_bin_dir``: the folder of the Python whose packages each ``model.py`` uses (onnxruntime; numpy
    1.x comes from the server's installation); default the running interpreter's folder. ``http_port``:
    default a free port. ``models``: load only these (``--model-control-mode explicit``); default all of the repository.
    ``grpc`` / ``metrics``: also open those endpoints (free loopback ports). ``log_path``: default
    ``tritonserver.log`` in the server's temporary folder (removed by :meth:`stop`). ``threads``: ONNX
    Runtime intra-op threads per model (``TADSR_TRITON_THREADS``, read by the repository's ``model.py``).
    Raises :class:`TritonNotInstalled` or :class:`TritonStartError` (both :class:`TritonUnavailable`).
    A server dropped without :meth:`stop` is killed when collected or when the interpreter exits.
    """

    def __init__(self, repo: os.PathLike, python_bin_dir: Optional[os.PathLike] = None,
                 startup_timeout: float = 60.0, http_port: Optional[int] = None,
                 models: Optional[Sequence[str]] = None, grpc: bool = False, metrics: bool = False,
                 log_path: Optional[os.PathLike] = None, threads: int = 1,
                 files: Optional[ServerFiles] = None, verbose: bool = False):
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise FileNotFoundError(f"model repository {self.repo} is not a folder")
        self.files = files or find_server()
        self.python_bin_dir = Path(python_bin_dir or Path(sys.executable).parent).absolute()
        self.startup_timeout = startup_timeout
        self.process: Optional[subprocess.Popen] = None
        self.http_port = 0
        self.grpc_port: Optional[int] = None
        self.metrics_port: Optional[int] = None
        self.url = ""
        self._finalizer: Optional[weakref.finalize] = None
        self.startup_s = 0.0
        self._workdir = Path(tempfile.mkdtemp(prefix="tadsr-triton-"))
        self.log_path = Path(log_path) if log_path else self._workdir / "tritonserver.log"
        self._shm: List[str] = []
        # Answers on the port are ours only when GET /v2 gives this name: another server may hold the port
        # while ours loads its models (Triton binds its HTTP port last, and exits when it cannot).
        self.server_id = f"tadsr-edge-{uuid.uuid4().hex[:12]}"
        try:
            env = self._environment(threads)
            version = make_stub_python(self.python_bin_dir, self.files.root, self._workdir / "python", env)
            backends = self._make_backends(version)
            self._preflight(env)
            if http_port and not port_is_free(http_port):
                raise TritonStartError(f"port {http_port} on 127.0.0.1 is in use")
            # A free port can be taken between the probe and the server's bind: try again then.
            for attempt in range(3):
                port = http_port or free_port()
                try:
                    self._start(backends, env, port, models, grpc, metrics, verbose)
                    break
                except TritonStartError as error:
                    if http_port or attempt == 2 or "already in use" not in error.log_tail:
                        raise
                    if log_path is None:  # the next try logs afresh in the temporary folder
                        self.log_path.unlink(missing_ok=True)
                        self.log_path = self._workdir / "tritonserver.log"
        except BaseException:
            self.stop()
            raise

    # -- setting up ---------------------------------------------------------------------------------
    def _make_backends(self, python_version: str) -> Path:
        """``<workdir>/backends/python/``: the Python backend's files plus the stub for that Python."""
        stub = self.files.stub(python_version)
        python = self._workdir / "backends" / "python"
        python.mkdir(parents=True)
        for item in self.files.python_backend.iterdir():
            if item.is_file():  # not __pycache__
                shutil.copy2(item, python / item.name)
        shutil.copy2(stub, python / stub.name)
        return python.parent

    def _environment(self, threads: int) -> dict:
        env = _clean_env(os.environ)
        # The stub's Python: the venv made by make_stub_python (numpy 1.x, then python_bin_dir's packages).
        env["PATH"] = os.pathsep.join([str(self._workdir / "python" / "bin"), env.get("PATH", "/usr/bin:/bin")])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [str(self.files.libs), env.get("LD_LIBRARY_PATH")] if p)
        env["TADSR_TRITON_THREADS"] = str(threads)
        return env

    def _preflight(self, env: dict) -> None:
        """Fail early, saying why, when the server or the stub cannot load their shared libraries."""
        for binary in (self.files.tritonserver, self._workdir / "backends" / "python" / "triton_python_backend_stub"):
            missing = _unresolved_libraries(binary, env)
            if missing:
                raise TritonStartError(f"{binary.name} cannot run here: shared libraries not found: "
                                       f"{', '.join(missing)}")

    def _start(self, backends: Path, env: dict, port: int, models: Optional[Sequence[str]], grpc: bool,
               metrics: bool, verbose: bool) -> None:
        args = [str(self.files.tritonserver), "--model-repository", str(self.repo),
                "--backend-directory", str(backends),
                "--http-address", "127.0.0.1", "--http-port", str(port),
                "--allow-grpc", "true" if grpc else "false",
                "--allow-metrics", "true" if metrics else "false", "--allow-gpu-metrics", "false",
                "--allow-cpu-metrics", "true" if metrics else "false",
                "--exit-timeout-secs", "5", "--log-verbose", "1" if verbose else "0", "--id", self.server_id]
        if grpc:
            self.grpc_port = free_port()
            args += ["--grpc-address", "127.0.0.1", "--grpc-port", str(self.grpc_port)]
        if metrics:
            self.metrics_port = free_port()
            args += ["--metrics-address", "127.0.0.1", "--metrics-port", str(self.metrics_port)]
        if models is not None:
            args += ["--model-control-mode", "explicit"] + [f"--load-model={m}" for m in models]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True, cwd=self._workdir)
        self._finalizer = weakref.finalize(self, _kill_group, self.process)
        self.http_port = port
        self.url = f"http://127.0.0.1:{port}"
        self._wait_ready(started)
        self.startup_s = time.monotonic() - started
        self._shm = _shm_regions(_group_members(self.process.pid))

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                tail = _log_summary(self.log_path)
                self.process = None
                raise self._failed(f"tritonserver exited with status {code} while starting", tail)
            try:
                with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=2) as reply:
                    ready = reply.status == 200
                if ready:
                    with urllib.request.urlopen(self.url + "/v2", timeout=2) as reply:
                        if json.loads(reply.read()).get("name") == self.server_id:
                            return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                tail = _log_summary(self.log_path)
                self._terminate()
                raise self._failed(f"tritonserver was not ready after {self.startup_timeout:.0f} s", tail)
            time.sleep(0.1)

    def _failed(self, message: str, tail: str) -> TritonStartError:
        """The error for a failed start; keeps a log that ``stop()`` would remove (in the temporary folder)."""
        if self.log_path.is_file() and self.log_path.parent == self._workdir:
            handle, kept = tempfile.mkstemp(prefix="tadsr-triton-", suffix=".log")
            os.close(handle)
            shutil.move(self.log_path, kept)
            self.log_path = Path(kept)
        return TritonStartError(f"{message} (log: {self.log_path})", tail, model_failed=_model_failed(tail))

    # -- stopping -----------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the server and its stubs at once (the port then refuses connections)."""
        if self.process is None:
            return
        pids = _group_members(self.process.pid)
        self._shm = sorted(set(self._shm) | set(_shm_regions(pids)))
        if pids:  # none: the server has exited and its stubs with it
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        deadline = time.monotonic() + 5  # the stubs die a moment after the server
        while _group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._remove_shm()

    def _terminate(self) -> None:
        """SIGTERM the server (it unloads its models and stops its stubs), SIGKILL what is left after 10 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # stubs it left behind, or the server itself after the timeout
        self.process = None
        if self._finalizer is not None:
            self._finalizer.detach()

    def stop(self) -> None:
        """Stop the server (idempotent) and remove its temporary folder (and the log, when it is there)."""
        self._terminate()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def _remove_shm(self) -> None:
        for name in self._shm:
            try:
                os.unlink(f"/dev/shm/{name}")
            except OSError:
                pass
        self._shm = []

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TritonServer({self.url or 'not started'}, repo={self.repo})"


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a server's process group if the server still runs (a TritonServer that was dropped unstopped,
    or the interpreter exiting)."""
    if process.poll() is None:
        regions = _shm_regions(_group_members(process.pid))
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        time.sleep(0.2)  # the stubs die a moment after
        for name in regions:
            Path("/dev/shm", name).unlink(missing_ok=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.triton_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", required=True, type=Path, help="model repository (export.triton --variant python)")
    parser.add_argument("--http-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--model", action="append", dest="models",
                        help="load only this model (repeatable; default: all)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per model")
    parser.add_argument("--log", type=Path, default=None, help="server log file (default: a temporary file)")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--verbose", action="store_true", help="tritonserver --log-verbose 1")
    args = parser.parse_args(argv)
    try:
        server = TritonServer(args.repo, startup_timeout=args.startup_timeout, http_port=args.http_port,
                              models=args.models, log_path=args.log, threads=args.threads, verbose=args.verbose)
    except (TritonUnavailable, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with server:
        print(server.url, flush=True)
        print(f"tritonserver ready in {server.startup_s:.1f} s (log: {server.log_path}); Ctrl-C stops it",
              file=sys.stderr, flush=True)
        # Ctrl-C and `kill PID` stop the server (SIGINT set explicitly: a shell's `cmd &` ignores it).
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while server.running:
                time.sleep(0.5)
            print(f"tritonserver exited (status {server.process.returncode}); log:\n{_log_summary(server.log_path)}",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("stopping tritonserver", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
