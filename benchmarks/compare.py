"""This project vs mlx-vlm and (text only) mlx-lm on the same synthetic checkpoints, alternating A/B/A/B.

    python -m benchmarks.compare [--vlm-python /work/venv-vlm/bin/python] [--rounds 2] [--cases tiny-bf16,…]

mlx-vlm is never a dependency of this project: it runs from its own virtual environment
(``python3 -m venv /work/venv-vlm && /work/venv-vlm/bin/pip install mlx-vlm 'mlx[cpu]'``), through
``benchmarks/compare_worker.py``. Checkpoints: ``gemma4 synth`` writes random bfloat16 weights of the
real geometry; mlx-vlm's converter turns them into the dense and 4-bit MLX folders that both this
project and mlx-vlm load (the same bytes); mlx-lm reads the same weights as its ``gemma4`` text model.
Each case runs every runtime once per round, in turn, in fresh processes, so a load change on the
shared machine hits all sides alike; ratios compare medians over rounds.
Writes ``benchmarks/results/compare.{json,md}`` and ``*.png``; ``benchmarks/performance.py`` turns
them into the README's "Performance" section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.compare_report import write_report

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORKER = HERE / "compare_worker.py"


@dataclass(frozen=True)
class Case:
    """One checkpoint and what runs on it."""

    name: str
    geometry: str
    layers: int | None
    bits: int  # 16 = bfloat16, not quantized
    kinds: tuple[str, ...]
    impls: tuple[str, ...]  # "ours", "ours-bf16" (this project forced to bfloat16), "vlm", "lm"
    prompt_words: int | None = None  # instead of --prompt-words (long-prompt memory cases)


# Sized for a shared 2-core CPU (each 12B-size run loads ≥ 3 GB); a quieter or faster machine can add kinds.
CASES = (
    Case("tiny-bf16", "tiny", None, 16, ("text", "image", "audio"), ("ours", "vlm", "lm")),
    Case("tiny-4bit", "tiny", None, 4, ("text",), ("ours", "ours-bf16", "vlm", "lm")),
    Case("12b-L2-bf16", "12b", 2, 16, ("text",), ("ours", "vlm")),
    # The same checkpoint with media: a 280-token image prefill costs minutes per run here.
    Case("12b-L2-bf16-media", "12b", 2, 16, ("image", "audio"), ("ours", "vlm")),
    Case("12b-L2-4bit", "12b", 2, 4, ("text",), ("ours", "vlm")),
    Case("12b-L3-bf16", "12b", 3, 16, ("text",), ("ours", "vlm")),
    Case("12b-L3-4bit", "12b", 3, 4, ("text",), ("ours", "vlm")),
    # Long prompts: peak memory of the prefill (run alone: --cases tiny-4k,tiny-16k --out …/long_prompt)
    Case("tiny-4k", "tiny", None, 16, ("text",), ("ours", "vlm"), prompt_words=4000),
    Case("tiny-16k", "tiny", None, 16, ("text",), ("ours", "vlm"), prompt_words=16000),
)


def sh(cmd: list[str], log: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command (recorded in ``log``); fail loudly with its stderr."""
    log.append(shlex.join(cmd))
    run = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if run.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{run.stderr[-3000:]}")
    return run


def checkpoints(case: Case, work: Path, vlm_python: str, image_tokens: int, log: list[str]) -> dict[str, Path]:
    """The HF-layout random checkpoint and its mlx-vlm (shared) and mlx-lm conversions, built once."""
    hf = work / f"{case.geometry}-{case.layers or 'all'}-hf"
    if not (hf / "config.json").is_file():
        layers = ["--layers", str(case.layers)] if case.layers else []
        sh([str(Path(sys.executable).parent / "gemma4"), "synth", str(hf), "--geometry", case.geometry, *layers,
            "--force"], log)
    patch_for_peers(hf, image_tokens)
    shared = work / f"{hf.name.removesuffix('-hf')}-{case.bits}"
    if not (shared / "config.json").is_file():
        q = ["--quantize", "--q-bits", str(case.bits), "--q-group-size", "64"] if case.bits < 16 else []
        sh([vlm_python, "-m", "mlx_vlm.convert", "--hf-path", str(hf), "--mlx-path", str(shared),
            "--dtype", "bfloat16", *q], log, cwd=work)
        for f in ("processor_config.json", "chat_template.jinja", "generation_config.json"):
            if (hf / f).is_file() and not (shared / f).is_file():
                shutil.copy(hf / f, shared / f)
    patch_for_peers(shared, image_tokens)
    out = {"shared": shared}
    if "lm" in case.impls:
        out["lm"] = lm_checkpoint(hf, case.bits, work, log)
    return out


def patch_for_peers(folder: Path, image_tokens: int) -> None:
    """Config keys mlx-vlm reads (same model): the full layers' geometry as transformers 4.x wrote it (5.23
    writes ``per_layer_config``), and one image budget in every place a processor may read it."""
    config = json.loads((folder / "config.json").read_text())
    text = config["text_config"]
    if text.get("per_layer_config"):
        full = next(iter(text["per_layer_config"].values()))
        text.update(global_head_dim=full["head_dim"], num_global_key_value_heads=full["num_key_value_heads"])
    config["vision_config"]["num_soft_tokens"] = image_tokens
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    proc = json.loads((folder / "processor_config.json").read_text())
    proc.setdefault("image_processor", {})["max_soft_tokens"] = image_tokens
    proc["image_seq_length"] = image_tokens
    (folder / "processor_config.json").write_text(json.dumps(proc, indent=2))


def lm_checkpoint(hf: Path, bits: int, work: Path, log: list[str]) -> Path:
    """The same weights as mlx-lm's ``gemma4`` text model (its sanitize drops the vision/audio parts)."""
    src = work / f"{hf.name}-lm"
    if not (src / "config.json").is_file():
        src.mkdir(parents=True, exist_ok=True)
        for f in hf.iterdir():
            if f.name != "config.json" and not (src / f.name).exists():
                (src / f.name).symlink_to(f)
        c = json.loads((hf / "config.json").read_text())
        text = {**c["text_config"], "model_type": "gemma4_text", "hidden_size_per_layer_input": 0}
        (src / "config.json").write_text(json.dumps({"model_type": "gemma4", "text_config": text,
                                                     "vocab_size": text["vocab_size"],
                                                     "eos_token_id": c["eos_token_id"]}, indent=2))
    if bits == 16:
        return src
    out = work / f"{hf.name}-lm-{bits}"
    if not (out / "config.json").is_file():
        sh([sys.executable, "-m", "mlx_lm", "convert", "--hf-path", str(src), "--mlx-path", str(out), "-q",
            "--q-bits", str(bits), "--q-group-size", "64"], log, cwd=work)
    return out


def worker_cmd(impl: str, case: Case, paths: dict[str, Path], media: dict[str, Path], vlm_python: str,
               args: argparse.Namespace) -> list[str]:
    """The worker command line for one runtime on one case."""
    python = vlm_python if impl == "vlm" else sys.executable
    model = paths["lm"] if impl == "lm" else paths["shared"]
    kinds = ("text",) if impl == "lm" else case.kinds
    cmd = [python, str(WORKER), "--impl", impl.removesuffix("-bf16"), "--model", str(model), "--kinds",
           ",".join(kinds), "--image", str(media["image"]), "--audio", str(media["audio"]),
           "--prompt-words", str(case.prompt_words or args.prompt_words), "--gen-tokens", str(args.gen_tokens),
           "--trials", "1"]
    return cmd + (["--dtype", "bfloat16"] if impl.endswith("-bf16") else [])


def run_case(case: Case, paths, media, vlm_python: str, args, log: list[str], records: list[dict]) -> None:
    """``rounds`` rounds; in each, every runtime once, in turn (A/B/A/B), or all at once (``--concurrent``)."""
    for r in range(args.rounds):
        if args.concurrent:
            cmds = {impl: ["nice", "-n", "5", *worker_cmd(impl, case, paths, media, vlm_python, args)]
                    for impl in case.impls}
            log.extend(shlex.join(c) for c in cmds.values())
            procs = {impl: subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for impl, c in cmds.items()}
            for impl, proc in procs.items():
                out, _ = proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"{shlex.join(cmds[impl])} failed (exit {proc.returncode})")
                records.extend({**json.loads(line), "impl": impl, "case": case.name, "round": r}
                               for line in out.splitlines())
            continue
        for impl in case.impls:
            cmd = worker_cmd(impl, case, paths, media, vlm_python, args)
            t0 = time.perf_counter()
            out = sh(["nice", "-n", "5", *cmd], log).stdout
            for line in out.splitlines():
                rec = json.loads(line)
                records.append({**rec, "impl": impl, "case": case.name, "round": r})
            print(f"  {case.name} round {r} {impl}: {time.perf_counter() - t0:.0f} s", flush=True)


def write_media(work: Path, image_tokens: int, audio_s: float) -> dict[str, Path]:
    """A noise image that fills the image budget and a noise WAV (16 kHz)."""
    import math

    import numpy as np
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    side = int(math.sqrt(image_tokens)) * 48
    paths = {"image": work / "image.png", "audio": work / "audio.wav"}
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(paths["image"])
    sf.write(paths["audio"], (0.1 * rng.standard_normal(int(audio_s * 16000))).astype(np.float32), 16000)
    return paths


def machine(vlm_python: str) -> dict:
    """Where and with what the figures were taken."""
    from importlib.metadata import version

    vlm_version = subprocess.run([vlm_python, "-c", "import mlx_vlm, mlx.core as mx; print(mlx_vlm.__version__, "
                                  "mx.__version__)"], capture_output=True, text=True).stdout.split()
    return {
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "backend": "MLX CPU backend (no GPU machine was lent for this run)",
        "mlx": version("mlx"), "mlx_lm": version("mlx-lm"), "mlx_gemma4": version("mlx-gemma4"),
        "mlx_vlm": vlm_version[0] if vlm_version else None, "mlx_in_vlm_env": vlm_version[1] if vlm_version else None,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    """Build checkpoints, run the cases, write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vlm-python", default="/work/venv-vlm/bin/python")
    p.add_argument("--work", type=Path, default=Path("~/.cache/mlx-gemma4/compare").expanduser())
    p.add_argument("--cases", default=",".join(c.name for c in CASES if c.prompt_words is None))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prompt-words", type=int, default=16)
    p.add_argument("--gen-tokens", type=int, default=6)
    # 280: the checkpoint's own budget, the one mlx-vlm honours (it ignored a 70-token one).
    p.add_argument("--image-tokens", type=int, default=280)
    p.add_argument("--audio-s", type=float, default=2.0)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--concurrent", action="store_true",
                   help="run a round's runtimes at the same time (same load for all; for slow, busy machines)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log: list[str] = [shlex.join([sys.executable, "-m", "benchmarks.compare", *sys.argv[1:]])]
    media = write_media(args.work, args.image_tokens, args.audio_s)
    records: list[dict] = []
    info = machine(args.vlm_python)
    wanted = args.cases.split(",")
    settings = {k: v for k, v in vars(args).items() if k not in ("work", "out")}
    for case in [c for c in CASES if c.name in wanted]:
        print(f"{case.name}: checkpoints", flush=True)
        paths = checkpoints(case, args.work, args.vlm_python, args.image_tokens, log)
        run_case(case, paths, media, args.vlm_python, args, log, records)
        info["load_average_end"] = os.getloadavg()
        write_report(args.out, info, settings, log, records)  # after every case: a long run keeps what it has


if __name__ == "__main__":
    main()
