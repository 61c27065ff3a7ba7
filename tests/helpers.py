"""Helpers the tests share: the real CLI in-process, fixture writers, crafted bad inputs."""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from PIL import Image
from pyarrow import fs

from safeset.cli import cli
from safeset.demo import Sample, jpeg, write_img2dataset_shard


def run_cli(*args: str, home: Path | None = None):
    """Invoke the real CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    argv = (["--home", str(home)] if home else []) + [str(a) for a in args]
    return CliRunner().invoke(cli, argv, catch_exceptions=False)


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def samples_from(tiles, domain: str = "img.example.org") -> list[Sample]:
    return [
        Sample(f"https://{domain}/{name}.jpg", f"caption {name}", jpeg(image), size=image.size) for name, image in tiles
    ]


def listed_tile_shards(root: Path, tiles, count: int, shards: int, every: int) -> tuple[Path, Path]:
    """`shards` img2dataset shards of the first `count` tiles (dealt round-robin) under root/shards,
    and root/pdq.txt listing every `every`-th of them: (shards folder, PDQ list)."""
    import safeset

    write_lines(root / "pdq.txt", [f"pdq {safeset.pdq(image)}" for _, image in tiles[:count:every]])
    samples = samples_from(tiles[:count])
    return make_shards(root / "shards", [samples[i::shards] for i in range(shards)]), root / "pdq.txt"


def make_shards(directory: Path, shards: list[list[Sample]]) -> Path:
    for i, samples in enumerate(shards):
        write_img2dataset_shard(directory, i, samples)
    return directory


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid, small PNG that decodes to width x height 1-bit pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def snapshot(out: Path) -> dict[str, object]:
    """Every output file, minus what legitimately differs between runs (times, durations)."""
    files: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_dir() or rel in ("_state/lock", "report.html"):
            continue
        if rel == "report.json":
            report = json.loads(path.read_text())
            report.pop("created"), report.pop("timings")
            for entry in report.get("rounds", []):
                entry.pop("time")
            files[rel] = report
        elif rel.endswith(".done.json"):
            files[rel] = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("seconds", "worker")}
        elif rel == "evidence.jsonl":
            files[rel] = [
                {k: v for k, v in json.loads(line).items() if k != "time"} for line in path.read_text().splitlines()
            ]
        else:
            files[rel] = path.read_bytes()
    return files


def tree(filesystem, base: str) -> dict[str, bytes]:
    """Every object under `base`, by relative path."""
    found = {}
    for info in filesystem.get_file_info(fs.FileSelector(base, recursive=True)):
        if info.type == fs.FileType.File:
            with filesystem.open_input_stream(info.path) as stream:
                found[info.path[len(base) + 1 :]] = stream.read()
    return found


def same_release(remote: dict[str, bytes], local: Path) -> None:
    """The results, the clean release and the removal manifest are byte for byte the local scan's."""
    wanted = [p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()]
    wanted = sorted(rel for rel in wanted if rel.startswith(("results/", "clean/")) or rel == "removed.parquet")
    assert sorted(rel for rel in remote if rel in wanted or rel.startswith(("results/", "clean/"))) == wanted
    for rel in wanted:
        assert remote[rel] == (local / rel).read_bytes(), rel


def shard_tasks(home: Path, inputs: list[Path], out: Path, **read) -> list:
    """The shard tasks a scan of INPUTS into OUT would hand its engine (every enabled bank, the
    default policy, `read` the read options): for driving an engine or a worker directly."""
    from safeset import BankStore, CheckSettings, Policy
    from safeset.pipeline.task import RunSpec, ShardTask
    from safeset.sinks import OutLayout
    from safeset.sources import ReadOptions, plan_shards

    banks = tuple((b.name, b.sha256) for b in BankStore(home).resolve(None))
    spec = RunSpec(str(home), banks, Policy.preset("default"), CheckSettings())
    layout = OutLayout(out)
    layout.create()
    shards = plan_shards(inputs, ReadOptions(**read)).shards
    return [ShardTask(i, shard, str(layout.root), spec) for i, shard in enumerate(shards)]


def processes(name: str, where: Callable[[bytes], bool]) -> list[int]:
    """The pids of the processes whose /proc/PID/NAME (`stat`, `cmdline`, `environ`) satisfies
    `where`; a process that ends while it is read is left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                content = (entry / name).read_bytes()
            except OSError:
                continue
            if where(content):
                found.append(int(entry.name))
    return found
