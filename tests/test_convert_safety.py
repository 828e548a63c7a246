"""The converter's bad-input and fault suite (issue #8): output-folder safety, concurrent runs, disk full,
side files, tokenizer files, exit status.

Every failure must be one line naming the file or argument; exit status 2 for bad input (SRC, OUT, side
files, options), 1 for runtime failures (disk full, a concurrent run). A representative subset runs the
real ``gemma4`` console script; the rest goes through Typer's runner in-process (same code path).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlx_gemma4.cli.app import app
from mlx_gemma4.convert.convert import ConvertOptions, convert
from mlx_gemma4.convert.outdir import MARKER_KEY, is_our_output, remove_stale_staging
from mlx_gemma4.convert.synth import synthesize
from typer.testing import CliRunner

from mlx_gemma4.errors import ConversionError, ConversionInputError, ModelLoadError
from mlx_gemma4.jsonfile import read_json, read_json_object

runner = CliRunner()
GEMMA4 = Path(sys.executable).parent / "gemma4"


@pytest.fixture(scope="module")
def synth_src(tmp_path_factory) -> Path:
    """A tiny synthetic checkpoint (1 layer, stand-in tokenizer): the pristine source copied by ``src``."""
    folder = tmp_path_factory.mktemp("synth") / "tiny"
    synthesize(folder, "tiny", layers=1)
    return folder


@pytest.fixture
def src(synth_src, tmp_path) -> Path:
    """A private copy of the source (shards symlinked, everything else copied, so tests may break files)."""
    folder = tmp_path / "src"
    folder.mkdir()
    for f in synth_src.iterdir():
        if f.suffix == ".safetensors":
            (folder / f.name).symlink_to(f)
        else:
            shutil.copy(f, folder / f.name)
    return folder


def run(args: list[str], code: int, env: dict | None = None) -> str:
    """Run ``gemma4 ARGS`` in-process; check the exit status and, for an error, one line; return the output."""
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    if code == 0:
        return result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def run_cli(args: list[str], code: int, env: dict | None = None) -> str:
    """The same through the real console script, as a user runs it."""
    cmd = [str(GEMMA4)] if GEMMA4.exists() else [sys.executable, "-c", "from mlx_gemma4.cli.app import main; main()"]
    p = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "COLUMNS": "250", **(env or {})})
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    if code == 0:
        return p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    return lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links followed) with its bytes: to show nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def no_staging(parent: Path) -> None:
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


# -- 1: OUT equal to / inside / containing SRC, --force only over our own outputs ------------------------


def test_force_into_a_folder_containing_the_source_keeps_everything(synth_src, tmp_path):
    """The issue's repro, as a user types it: ``gemma4 convert a/src a --force`` used to delete a/."""
    a = tmp_path / "a"
    a.mkdir()
    shutil.copytree(synth_src, a / "src")
    (a / "notes.txt").write_text("notes")
    before = tree(a)
    line = run_cli(["convert", a / "src", a, "--force"], 2)
    assert f"{a}: the output folder contains {a / 'src'}" in line
    assert tree(a) == before


@pytest.mark.parametrize("where", ["same", "inside", "contains", "via_symlinked_src", "contains_link_target"])
def test_out_overlapping_the_source_is_refused(src, synth_src, tmp_path, where):
    before = tree(src)
    if where == "same":
        out = src
    elif where == "inside":
        out = src / "mlx"
    elif where == "contains":
        out = tmp_path
    elif where == "via_symlinked_src":  # SRC named through a link: OUT is its real parent
        (tmp_path / "link").symlink_to(src)
        out, src = tmp_path, tmp_path / "link"
    else:  # the shards are links into synth_src's folder: OUT must not swallow their targets
        out = synth_src.parent
    line = run(["convert", src, out, "--force", "--bits", "8"], 2)
    assert line.startswith(f"error: {out}: the output folder ") and "choose another" in line
    assert tree(src) == before
    assert not (src / "mlx").exists()


def test_force_replaces_an_earlier_output_only(src, tmp_path):
    out = tmp_path / "out"
    run(["convert", src, out, "--bits", "8"], 0)
    assert json.loads((out / "config.json").read_text())[MARKER_KEY] == {"written_by": "gemma4 convert"}
    assert is_our_output(out)
    assert "already exists (pass --force" in run(["convert", src, out, "--bits", "8"], 2)
    run(["convert", src, out, "--bits", "4", "--force"], 0)
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    (out / "notes.txt").write_text("mine")
    line = run(["convert", src, out, "--bits", "8", "--force"], 2)
    assert "--force would delete notes.txt" in line and (out / "notes.txt").is_file()
    no_staging(tmp_path)


def test_force_never_replaces_an_arbitrary_folder(src, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"jpeg")
    (out / "config.json").write_text("{}")  # even with a config.json: no marker, not ours
    line = run(["convert", src, out, "--force"], 2)
    assert f"{out} exists and was not written by gemma4 convert/synth" in line
    assert tree(out) == {"cat.jpg": b"jpeg", "config.json": b"{}"}
    run(["synth", out, "--geometry", "tiny", "--layers", "1", "--force"], 2)  # the same rule for synth
    assert tree(out) == {"cat.jpg": b"jpeg", "config.json": b"{}"}


def test_empty_folder_is_replaced_with_force(src, tmp_path):
    (tmp_path / "empty").mkdir()
    run(["convert", src, tmp_path / "empty", "--bits", "8", "--force"], 0)
    assert (tmp_path / "empty" / "config.json").is_file()


@pytest.mark.parametrize("case", ["file", "under_a_file", "symlink"])
def test_out_that_cannot_be_a_folder_is_refused(src, tmp_path, case):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under_a_file": tmp_path / "f" / "sub" / "out", "symlink": tmp_path / "ln"}[case]
    if case == "symlink":
        out.symlink_to(tmp_path / "elsewhere")
    line = run(["convert", src, out, "--force"], 2)
    expected = {"file": "exists and is not a folder", "under_a_file": f"{tmp_path / 'f'} is a file",
                "symlink": "symbolic link"}[case]
    assert expected in line and str(out) in line
    assert (tmp_path / "f").read_text() == "x"


def test_synth_follows_the_same_rules(src, tmp_path):
    out = tmp_path / "syn"
    run(["synth", out, "--geometry", "tiny", "--layers", "1"], 0)
    assert json.loads((out / "config.json").read_text())[MARKER_KEY] == {"written_by": "gemma4 synth"}
    assert "already exists" in run(["synth", out, "--geometry", "tiny", "--layers", "1"], 2)
    run(["synth", out, "--geometry", "tiny", "--layers", "1", "--force"], 0)  # its own output: replaced
    run(["convert", out, tmp_path / "q8", "--bits", "8"], 0)  # a synth output is a source …
    line = run(["convert", tmp_path / "q8", tmp_path / "again"], 2)  # … a converted one is not
    assert "already an MLX converted folder" in line


def test_hub_cache_folders_are_protected(synth_src, tmp_path):
    from tests.convert_helpers import hub_cache

    cache = hub_cache(tmp_path, synth_src, "test-org/tiny")
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    repo = cache / "models--test-org--tiny"
    snap = next((repo / "snapshots").iterdir())
    for out in (cache, repo, snap / "sub"):  # subprocesses: huggingface-hub reads HF_HUB_CACHE at import
        line = run_cli(["convert", "test-org/tiny", out, "--force"], 2, env)
        assert line.startswith(f"error: {out}: the output folder"), line
    assert (snap / "config.json").is_file() and (repo / "refs" / "main").is_file()


# -- 3: concurrent conversions, stale staging ---------------------------------------------------------------


def test_a_running_conversion_holds_the_output(src, tmp_path):
    out = tmp_path / "out"
    with open(tmp_path / ".out.lock", "w") as held:  # as a concurrent run holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        line = run(["convert", src, out, "--bits", "8"], 1)
    assert "another conversion into this folder is running (pid 4242)" in line
    assert not out.exists()
    run(["convert", src, out, "--bits", "8"], 0)  # released: the next run proceeds
    no_staging(tmp_path)


def test_out_appearing_meanwhile_makes_this_run_fail_cleanly(src, tmp_path, monkeypatch):
    import mlx_gemma4.convert.convert as conv

    out = tmp_path / "out"
    original = conv.write_item

    def racing(writer, item, dtype):  # another process creates OUT while this run writes
        if not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
        return original(writer, item, dtype)

    monkeypatch.setattr(conv, "write_item", racing)
    line = run(["convert", src, out, "--bits", "8"], 1)
    assert f"{out} appeared while this run was writing" in line
    assert tree(out) == {"theirs.txt": b"theirs"}
    no_staging(tmp_path)


def test_two_concurrent_conversions_into_one_out(src, tmp_path):
    out = tmp_path / "out"
    cmd = [str(GEMMA4), "convert", str(src), str(out), "--bits", "8"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes[0] == 0 and codes[1] in (1, 2), results  # exactly one wins
    err = next(e for c, e in results if c)
    assert err.strip().count("\n") == 0 and ("already exists" in err or "another conversion" in err
                                              or "appeared while" in err), err
    assert is_our_output(out)
    no_staging(tmp_path)


def test_stale_staging_of_dead_processes_is_removed_and_reported(src, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = [tmp_path / f".other.converting-{pid}", tmp_path / f".out.replaced-{pid}"]
    live = tmp_path / f".x.converting-{os.getppid()}"  # a live process's staging folder is left alone
    for p in (*stale, live):
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"x" * 100)
    out = run(["convert", src, tmp_path / "out", "--bits", "8"], 0)
    for p in stale:
        assert not p.exists()
        assert f"removed {p.name}, the staging folder of an interrupted run" in out
    assert live.exists()
    assert remove_stale_staging(tmp_path / "out") == []


# -- 6: disk full, unwritable output ------------------------------------------------------------------------


def test_not_enough_free_space_is_checked_up_front(src, tmp_path, monkeypatch):
    import mlx_gemma4.convert.outdir as outdir

    monkeypatch.setattr(outdir, "free_bytes", lambda path: 1_000_000)
    line = run(["convert", src, tmp_path / "out", "--bits", "8"], 1)
    assert f"not enough free space for {tmp_path / 'out'}: the output needs" in line and "1.0 MB free" in line
    no_staging(tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "no space left on device"),
                                        (errno.EACCES, "permission denied"),
                                        (errno.EROFS, "read-only file system")])
def test_write_errors_become_one_line(src, tmp_path, monkeypatch, code, text):
    from mlx_gemma4.convert.safetensors_io import ShardWriter

    def failing(self, name, row_start, rows):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ShardWriter, "write_rows", failing)
    line = run(["convert", src, tmp_path / "out", "--bits", "8"], 1)
    assert f"cannot write {tmp_path / 'out'}: {text}" in line and "the output needs" in line
    assert not (tmp_path / "out").exists()
    no_staging(tmp_path)


def test_unwritable_parent_is_bad_input(src, tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def denied(self, *a, **kw):  # tests run as root, which ignores chmod: inject EACCES
        if self.name.startswith(".out.converting-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", denied)
    line = run(["convert", src, tmp_path / "out"], 2)
    assert f"cannot write in {tmp_path} (Permission denied)" in line


# -- lossy conversions: float16 overflow ---------------------------------------------------------------------


@pytest.mark.parametrize("bits", ["16", "4"])
def test_values_float16_cannot_hold_are_refused_not_written_as_inf(src, tmp_path, bits):
    import mlx.core as mx

    shard = next(src.glob("*.safetensors"))
    weights = mx.load(str(shard))
    name = next(k for k in weights if k.endswith("mlp.up_proj.weight"))
    w = weights[name]
    weights[name] = mx.where(mx.arange(w.shape[1])[None] == 0, mx.array(1e5, w.dtype), w)  # one large column
    shard.unlink()  # a symlink to the shared source: write a private file
    mx.save_safetensors(str(shard), weights, metadata={"format": "pt"})
    line = run(["convert", src, tmp_path / "out", "--bits", bits, "--dtype", "float16"], 2)
    assert "mlp.up_proj.weight: values up to 9.984e+04 do not fit float16" in line and "--dtype bfloat16" in line
    assert not (tmp_path / "out").exists()
    no_staging(tmp_path)
    run(["convert", src, tmp_path / "out", "--bits", bits], 0)  # bfloat16 holds them


# -- 8, 13: side files and JSON files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("generation_config.json", "{not json", "not valid JSON (Expecting property name"),
        ("generation_config.json", '{"temperature": "hot"}', "a field has the wrong type"),
        ("tokenizer.json", "[1, 2]", "expected a JSON object {...}, found a list"),
        ("tokenizer_config.json", "", "not valid JSON (Expecting value at line 1 column 1)"),
        ("processor_config.json", '"text"', "found a string"),
        ("special_tokens_map.json", b"\xff\xfe{", "not UTF-8 text"),
        ("chat_template.jinja", b"{{ \xff }}", "not a readable UTF-8 template"),
        # valid JSON / text the output could still not use: found here, not on the first prompt
        ("tokenizer.json", "{}", "not a tokenizer the tokenizers library can load"),
        ("chat_template.jinja", "{% if %}", "the chat template does not compile (line 1"),
        ("chat_template.json", '{"chat_template": "{% for m in messages %}"}', "does not compile"),
        ("tokenizer_config.json", '{"chat_template": [{"name": "tool_use", "template": "{{ x"}]}',
         "(template 'tool_use'): the chat template does not compile"),
        ("preprocessor_config.json", "[" * 100_000, "JSON nested too deeply"),
        ("config.json", "[]", "expected a JSON object {...}, found a list"),
        ("config.json", "{\"model_type\": \"gemma4_unified\", \"text_config\": 5}", "'text_config' is missing or"),
        ("model.safetensors.index.json", '{"weight_map": []}', "not a valid safetensors index"),
        ("model.safetensors.index.json", '{"weight_map": {"a": "../x.safetensors"}}', "is not a file name"),
    ],
)
def test_invalid_side_files_are_refused_before_any_work(src, tmp_path, name, content, expected):
    path = src / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    line = run(["convert", src, tmp_path / "out"], 2)
    assert f"{path}" in line and expected in line, line
    assert not (tmp_path / "out").exists()
    no_staging(tmp_path)


def test_side_file_that_is_a_folder_is_refused(src, tmp_path):
    (src / "generation_config.json").unlink()
    (src / "generation_config.json").mkdir()
    assert "generation_config.json: not a file" in run(["convert", src, tmp_path / "out"], 2)


def test_broken_safetensors_header_is_refused_up_front(src, tmp_path):
    shard = next(src.glob("*.safetensors"))
    data = shard.read_bytes()
    shard.unlink()
    shard.write_bytes(data[: len(data) // 2])  # truncated: offsets point past the end
    line = run(["convert", src, tmp_path / "out"], 2)
    assert str(shard) in line and "outside the file" in line


def test_loading_names_the_broken_json_file(src, tmp_path):
    from mlx_gemma4.generation.sampling import GenerationDefaults
    from mlx_gemma4.loader import load, read_config

    out = tmp_path / "out"
    run(["convert", src, out, "--bits", "8"], 0)
    (out / "generation_config.json").write_text("{oops")
    with pytest.raises(ModelLoadError, match=r"generation_config.json: not valid JSON"):
        GenerationDefaults.from_folder(out)
    with pytest.raises(ModelLoadError, match=r"generation_config.json: not valid JSON"):
        load(out)
    (out / "generation_config.json").write_text('{"top_k": [1]}')
    with pytest.raises(ModelLoadError, match=r"generation_config.json: a field has the wrong type"):
        GenerationDefaults.from_folder(out)
    (out / "config.json").write_text('"a string"')
    with pytest.raises(ModelLoadError, match=r"config.json: expected a JSON object \{...\}, found a string"):
        read_config(out)


def test_processor_names_its_broken_json_file(src, synth_src):
    from mlx_gemma4.processing import Processor

    (src / "tokenizer_config.json").write_text("{broken")
    with pytest.raises(ModelLoadError, match=r"tokenizer_config.json: not valid JSON"):
        Processor.from_pretrained(src)
    shutil.copy(synth_src / "tokenizer_config.json", src / "tokenizer_config.json")
    (src / "processor_config.json").write_text('{"image_processor": [1]}')
    with pytest.raises(ModelLoadError, match="sections of the processor config must be objects"):
        Processor.from_pretrained(src)


def test_json_helper(tmp_path):
    with pytest.raises(ConversionError, match=r"nope.json: cannot read \(No such file"):
        read_json(tmp_path / "nope.json", ConversionError)
    with pytest.raises(ModelLoadError, match="is a folder"):
        read_json(tmp_path, ModelLoadError)
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_json_object(tmp_path / "bom.json", ModelLoadError) == {"a": 1}
    (tmp_path / "n.json").write_text("null")
    with pytest.raises(ModelLoadError, match="found null"):
        read_json_object(tmp_path / "n.json", ModelLoadError)


def test_jsonfile_never_imports_mlx():
    code = "import sys, mlx_gemma4.jsonfile, mlx_gemma4.processing; sys.exit('mlx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- 11: tokenizer files ------------------------------------------------------------------------------------


def test_source_without_tokenizer_needs_no_tokenizer_flag(src, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"):
        (src / name).unlink()
    line = run_cli(["convert", src, tmp_path / "out"], 2)
    assert f"{src}: no tokenizer.json or tokenizer_config.json" in line and "--no-tokenizer" in line
    assert not (tmp_path / "out").exists()
    report = run(["convert", src, tmp_path / "out", "--bits", "8", "--no-tokenizer"], 0)
    assert "NO TOKENIZER" in report
    assert ("not in the source (so not in the output): tokenizer.json, tokenizer_config.json, chat_template.jinja "
            "or chat_template.json, processor_config.json or preprocessor_config.json") in " ".join(report.split())


def test_missing_side_files_are_listed_in_the_result(src, tmp_path):
    (src / "generation_config.json").unlink()
    result = convert(src, tmp_path / "out", ConvertOptions(bits=8))
    assert result.missing_side_files == ["generation_config.json"]
    assert not any("TOKENIZER" in w for w in result.warnings)


# -- arguments and sources ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--bits", "3"], "--bits must be one of"),
        (["--group-size", "48"], "--group-size must be one of"),
        (["--recipe", "fancy"], "--recipe must be one of"),
        (["--dtype", "int8"], "--dtype must be one of"),
        (["--max-shard-size", "lots"], "--max-shard-size: not a size"),
        (["--max-shard-size", "0"], "shard size limit must be positive"),
        (["--upload-repo", "no-slash"], "--upload-repo must look like org/name"),
    ],
)
def test_bad_options_exit_2(src, tmp_path, args, expected):
    assert expected in run(["convert", src, tmp_path / "out", *args], 2)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, expected", [(["--geometry", "huge"], "--geometry must be one of"),
                                            (["--dtype", "int4"], "--dtype must be one of"),
                                            (["--layers", "0"], "--layers must be at least 1")])
def test_bad_synth_options_exit_2(tmp_path, args, expected):
    assert expected in run(["synth", tmp_path / "syn", *args], 2)
    assert not (tmp_path / "syn").exists()


@pytest.mark.parametrize("case", ["missing", "file", "no_config", "hub_id_missing"])
def test_bad_source_exit_2(tmp_path, case):
    src = {"missing": tmp_path / "nope", "file": tmp_path / "f.txt", "no_config": tmp_path,
           "hub_id_missing": "no-org/no-model"}[case]
    (tmp_path / "f.txt").write_text("x")
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    if case == "missing":
        line = run_cli(["convert", src, tmp_path / "out"], 2)
    elif case == "hub_id_missing":  # the hub cannot be reached: a runtime failure, not bad input
        line = run_cli(["convert", src, tmp_path / "out"], 1, env)
    else:
        line = run(["convert", src, tmp_path / "out"], 2)
    assert str(src) in line
    assert not (tmp_path / "out").exists()


def test_errors_are_classified():
    assert issubclass(ConversionInputError, ConversionError) and issubclass(ConversionInputError, ValueError)
