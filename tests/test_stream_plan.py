"""The planner offers streaming where the weights do not fit, with tok/s against the disk's physical limit; a model
past the target's largest file is staged as numbered 8.3 parts that the manifest covers; `invoke deploy` chooses
the streaming build by itself when the weights do not fit."""

import json
import shutil

import pytest
import yaml

from deploy.checkpoint import Config, Header, read_header
from deploy.errors import DeployError
from deploy.fit import NAME_83
from deploy.parts import LONG_OFFSET_LIMIT, largest_part, model_files, part_name, part_sizes, split_into_parts
from deploy.planner import plan_model
from deploy.profile import ROOT, load_profile
from deploy.stage import stage_files
from deploy.stream import predict_streaming, stream_plan
from tests.test_deploy import Quiet

ROOT_MODEL = ROOT / "models" / "tiny260k.bin"

LLAMA32_1B = Config(2048, 8192, 16, 32, 8, 128256, 256)  # Llama 3.2 1B's shape (tied embeddings), a short context


def test_plan_offers_streaming_with_the_disk_limit():
    profile, _, header, fit, _, options, _ = plan_model("win98-p2", "stories42M")
    assert not fit.ok
    streamed = [o for o in options if o.what.startswith("stream from disk")]
    assert len(streamed) == 1 and streamed[0].fits
    plan = stream_plan(header, 96 << 20, readahead=False)
    limit = profile["disk"]["read_mb_s"] * 1e6 / plan.bytes_per_token
    assert f"physical limit {limit:.3g} tok/s" in streamed[0].note
    # fp32 stories42M under 96 MB, a KV cache of 256 positions (-n's default): the 65 MB classifier is read once and
    # kept; every layer and the token's embedding row are read each token
    c = header.config
    assert plan.classifier_resident
    assert plan.bytes_per_token == pytest.approx(4 * (c.parameter_count() - c.vocab_size * c.dim), rel=0.01)
    assert not stream_plan(header, 96 << 20, readahead=False, steps=1024).classifier_resident


def test_exo_projection_for_llama32_1b_on_the_128mb_pentium2():
    """EXO estimated 0.0093 tok/s from a shard and a disk benchmark; ours from the profile's IDE disk."""
    profile = load_profile("win98-p2")
    int8 = predict_streaming(profile, Header(2, "little", LLAMA32_1B, 64))
    fp32 = predict_streaming(profile, Header(0, "little", LLAMA32_1B))
    assert int8.plan.fits and int8.tok_s == int8.limit_tok_s  # no counts: the disk alone
    assert 0.0093 / 2 < int8.tok_s < 0.0093 * 2
    assert fp32.tok_s < int8.tok_s / 3


def test_a_roomy_budget_keeps_the_classifier():
    header = Header(2, "little", LLAMA32_1B, 64)
    small, roomy = stream_plan(header, 96 << 20, False), stream_plan(header, 1 << 30, True)
    assert not small.classifier_resident and roomy.classifier_resident
    assert small.bytes_per_token - roomy.bytes_per_token == LLAMA32_1B.vocab_size * (2048 + 4 * 32)


def test_part_names_and_sizes():
    assert part_name("MODEL.BIN", 0) == "MODEL.000" and part_name("model.bin", 12) == "model.012"
    assert all(NAME_83.match(part_name("MODEL.BIN", i)) for i in range(100))
    assert part_sizes(10, 4) == [4, 4, 2] and part_sizes(8, 4) == [4, 4] and part_sizes(3, 4) == [3]
    assert largest_part(load_profile("win98-p2")) == LONG_OFFSET_LIMIT  # msvcrt's fseek takes a 32-bit long
    assert largest_part(load_profile("host")) is None


def _profile_with_small_files(tmp_path, size):
    data = load_profile("win98-p2").data
    data["name"] = "small-files"
    data["disk"]["max_file_bytes"] = size
    (tmp_path / "small-files.yaml").write_text(yaml.safe_dump(data))
    return load_profile("small-files", targets_dir=tmp_path)


def test_a_model_past_the_largest_file_is_staged_in_parts_the_manifest_covers(tmp_path):
    model = shutil.copy(ROOT_MODEL, tmp_path / "model.bin")
    profile = _profile_with_small_files(tmp_path, 300_000)
    files = model_files(profile, "MODEL.BIN", model)
    assert list(files) == ["MODEL.000", "MODEL.001", "MODEL.002", "MODEL.003"]
    assert b"".join(p.read_bytes() for p in files.values()) == ROOT_MODEL.read_bytes()
    assert model_files(profile, "MODEL.BIN", model) == files  # reused
    stage = stage_files("w", {**files, "TOK.BIN": ROOT_MODEL.with_name("tiny260k-tok.bin")}, tmp_path / "stage")
    manifest = json.loads((stage.directory / "manifest.json").read_text())["files"]
    assert set(manifest) == {"MODEL.000", "MODEL.001", "MODEL.002", "MODEL.003", "TOK.BIN"}
    assert sum(manifest[name]["size"] for name in files) == ROOT_MODEL.stat().st_size
    assert model_files(load_profile("win98-p2"), "MODEL.BIN", model) == {"MODEL.BIN": model}


def test_split_refuses_a_file_that_shrinks(tmp_path):
    from deploy.errors import DeployError

    source = tmp_path / "m.bin"
    source.write_bytes(b"x" * 10)
    with pytest.raises(DeployError):
        part_sizes(10 ** 6, 1)
    assert list(split_into_parts(source, tmp_path / "out", "M.BIN", 4)) == ["M.000", "M.001", "M.002"]


def test_deploy_streams_a_model_that_does_not_fit(tmp_path):
    """A 103 MB model on the p2-linux host (84 MB): deploy chooses the streaming build, which runs it under qemu and
    prints what the host's in-memory exact build prints."""
    from deploy.inventory import load_inventory
    from deploy.pipeline import Options, deploy_hosts
    from deploy.synth import write_large_model

    if not (shutil.which("qemu-i386") and shutil.which("i686-linux-gnu-gcc")):
        pytest.skip("qemu-i386 or i686-linux-gnu-gcc not installed")
    model, tokenizer = tmp_path / "wide.bin", ROOT_MODEL.with_name("tiny260k-tok.bin")
    write_large_model(model, Config(1024, 2816, 2, 8, 8, 512, 32), version=0)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("all:\n  hosts:\n    p2: {target: p2-linux, connection: emulator}\n"
                         "    here: {target: host, connection: emulator}\n")
    options = Options(str(model), str(tokenizer), exact=True, run=True, stage_root=tmp_path / "stage",
                      build_dir=tmp_path / "build", run_args=("-n", "3", "-t", "0", "-i", "the"))
    p2, here = deploy_hosts(load_inventory(inventory).select(), options, Quiet())
    assert p2.error is None, p2.error
    assert any(step == "build" and "p2-linux-exact-stream" in what for step, what in p2.steps)
    assert any(step == "plan" and "streaming" in what for step, what in p2.steps)
    assert here.error is None and any(step == "build" and "host-exact " in what for step, what in here.steps)
    assert p2.text == here.text and p2.text.startswith("the")
    assert read_header(model).config.dim == 1024


@pytest.mark.parametrize("version", [0, 1, 2])
def test_large_synthetic_models_hold_sane_weights(tmp_path, version):
    """The benchmarks' fast writer: a valid file whose fp32 weights are finite and about 1/sqrt(dim) (they were once
    float64 bytes read as float32: NaN)."""
    import numpy as np

    from deploy.checkpoint import read_model
    from deploy.synth import SHAPES, write_large_model

    write_large_model(tmp_path / "m.bin", SHAPES["stories260K"], version=version, tile_bytes=1 << 16)
    weights = read_model(tmp_path / "m.bin").weights
    assert all(np.isfinite(w).all() for w in weights.values())
    assert 0.5 / 8 < float(np.std(weights["wq"])) < 2 / 8  # dim 64


def test_the_whole_machines_default_budget_leaves_its_kernel_a_reserve():
    """p2-vm's guest has 92 MB free after boot; a program using all of it starves the kernel's page cache for the
    FAT32 reads (stories110M streamed under -b 92 was killed by the OOM killer): the cap, and so the streaming
    build's default -b, is the free memory less machine.kernel_reserve_mb."""
    from deploy.plan import make_plan

    profile = load_profile("p2-linux")
    machine = profile["machine"]
    assert machine["kernel_reserve_mb"] > 0
    assert profile.memory_cap_mb == machine["free_mb"] - machine["kernel_reserve_mb"] == 84
    assert make_plan(profile, exact=True, stream=True).port["stream_budget_mb"] == 84
    # stories110M-shaped fp32 still streams within it (its classifier in chunks)
    _, _, header, fit, _, options, _ = plan_model("p2-linux", "stories110M")
    assert not fit.ok and stream_plan(header, 84 << 20, readahead=False).fits
    assert [o for o in options if o.what.startswith("stream from disk") and o.fits]


def test_a_kernel_reserve_as_large_as_the_free_memory_is_refused(tmp_path):
    data = yaml.safe_load((ROOT / "targets" / "p2-linux.yaml").read_text())
    data["machine"]["kernel_reserve_mb"] = data["machine"]["free_mb"]
    (tmp_path / "win98-p2.yaml").write_text((ROOT / "targets" / "win98-p2.yaml").read_text())
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DeployError) as caught:
        load_profile("t", targets_dir=tmp_path)
    assert str(caught.value) == (f"{tmp_path / 't.yaml'}: 'machine.kernel_reserve_mb' (92) leaves nothing of "
                                 "machine.free_mb (92) to a program; it must be less")


def test_plan_shows_a_7b_ternary_streamed_against_the_pentium2_disk():
    """Issue 12's 7B-shaped ternary checkpoint on the 128 MB Pentium II: `invoke plan --json` gives its streaming row
    with the file's size, the disk it does not fit (2.67 GB against 1.6 GB, fp32 embeddings and classifier), the
    positions whose KV cache fits the 96 MB budget, and the disk's limit from the bytes read per token."""
    import os
    import subprocess
    import sys

    from deploy.checkpoint import expected_size
    from deploy.models import LLAMA2_7B
    from deploy.stream import layer_bytes, row_bytes

    done = subprocess.run([sys.executable, "-m", "invoke", "plan", "--target", "win98-p2", "--model", "llama2-7b",
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 1, done.stderr  # the model does not fit as it is
    rows = [row for row in json.loads(done.stdout) if row.get("streaming")]
    assert [row["version"] for row in rows] == [0, 3]
    row, header = rows[1], Header(3, "little", LLAMA2_7B)
    assert row["model_bytes"] == expected_size(header) and 2.6e9 < row["model_bytes"] < 2.7e9
    assert row["disk_mb"] == 1600 and not row["fits"]
    assert row["problems"] == [f"disk: needs {(row['model_bytes'] + 150_000 + 433_869) / 2**20:,.1f} MB, the limit "
                               "is 1600 MB"]
    # memory fits at the most positions whose KV cache (1 MB each) the budget holds beside one 51 MB layer buffer
    budget = row["budget_mb"] << 20
    assert row["budget_mb"] == 96 and row["least_memory_mb"] <= 96
    assert stream_plan(header, budget, False, 433_869, row["steps"]).fits
    assert not stream_plan(header, budget, False, 433_869, row["steps"] + 1).fits and 30 < row["steps"] < 60
    # every layer, the token's embedding row and the 524 MB fp32 classifier (in chunks) each token
    c = LLAMA2_7B
    assert row["bytes_per_token"] == c.n_layers * layer_bytes(header) + (c.vocab_size + 1) * row_bytes(header)
    assert row["predicted_tok_s"] == row["disk_limit_tok_s"] == pytest.approx(10e6 / row["bytes_per_token"])
    assert 0.004 < row["predicted_tok_s"] < 0.005


def test_deploy_sizes_the_streamed_kv_cache_to_the_run(tmp_path):
    """A 1.5 GB model (sparse file) of 64 thin layers on p2-linux (84 MB): streamed, its KV cache for -n 128 does not
    fit but for -n 118 it does; deploy checks the run it was asked for and names the longest run that fits."""
    import struct

    from deploy.checkpoint import expected_size
    from deploy.inventory import load_inventory
    from deploy.pipeline import Options, deploy_hosts

    config = Config(1024, 512, 64, 8, 8, 512, 1024)
    model, tokenizer = tmp_path / "thin.bin", ROOT_MODEL.with_name("tiny260k-tok.bin")
    with open(model, "wb") as out:
        out.write(struct.pack("<7i", 1024, 512, 64, 8, 8, 512, 1024))
        out.truncate(expected_size(Header(0, "little", config)))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("all:\n  hosts:\n    p2: {target: p2-linux, connection: emulator}\n")
    hosts = load_inventory(inventory).select()

    def deploy(steps):
        options = Options(str(model), str(tokenizer), exact=True, dry=True, stage_root=tmp_path / "stage",
                          build_dir=tmp_path / "build", run_args=("-n", str(steps), "-i", "the"))
        return deploy_hosts(hosts, options, Quiet())[0]

    refused = deploy(128)
    assert refused.error and "does not fit" in refused.error and "a run of --steps 118 or fewer fits" in refused.error
    shorter = deploy(118)
    assert shorter.error is None, shorter.error
    assert any(step == "plan" and "streaming" in what for step, what in shorter.steps)


def test_an_emulated_run_of_a_big_model_gets_time_to_finish():
    """The run's time limit grows with the model and the steps (stories110M streamed on the whole emulated Pentium II
    took 33 s a token: 128 steps would have been cut at the old fixed hour)."""
    from pathlib import Path

    from deploy.deliver import run_time_limit
    from deploy.stage import Stage, StagedFile

    profile = load_profile("p2-linux")
    files = profile["files"]

    def limit(model_bytes, args):
        staged = [StagedFile(files["program"], Path("p"), 10 ** 6, ""),
                  StagedFile(files["tokenizer"], Path("t"), 10 ** 6, ""),
                  StagedFile(files["model"], Path("m"), model_bytes, "")]
        return run_time_limit(profile, Stage("p2", Path("."), staged, False), args)

    assert limit(1_056_540, ("-n", "128")) == 3600
    assert limit(438_000_000, ("-n", "128")) == 438 * 128
    assert limit(438_000_000, ("-n", "4")) == 3600
    assert limit(438_000_000, ("-i", "the")) == 438 * 256  # the program's default -n
