"""A checkpoint larger than the target's largest file (FAT32: 4 GiB less a byte) as numbered parts with 8.3 names
(MODEL.BIN -> MODEL.000, MODEL.001, ...) that the streaming build reads as one file (docs/streaming.md)."""

from pathlib import Path

from deploy.atomic import atomic_writer
from deploy.errors import DeployError

MAX_PARTS = 100  # .000 to .099: ports/loaders/stream.c.j2's MAX_PARTS
COPY_CHUNK = 8 << 20
# A 32-bit program's file offsets are a C long (fseek): its parts stay below 2 GiB.
LONG_OFFSET_LIMIT = (1 << 31) - 1


def part_name(name, index):
    """MODEL.BIN, 0 -> MODEL.000 (the extension replaced, as the program does)."""
    return f"{Path(name).stem}.{index:03d}"


def largest_part(profile):
    """The largest part the target reads: its file system's file-size limit, within a 32-bit program's offsets;
    None when neither limits it."""
    limits = [(profile.get("disk") or {}).get("max_file_bytes")]
    if profile["cpu"].get("word_bits", 64) == 32 or profile["os"] == "windows98":
        limits.append(LONG_OFFSET_LIMIT)
    limits = [limit for limit in limits if limit]
    return min(limits) if limits else None


def part_sizes(size, part_bytes):
    """Sizes of the parts of a `size`-byte file; one part when it fits."""
    if size <= part_bytes:
        return [size]
    sizes = [part_bytes] * (size // part_bytes) + ([size % part_bytes] if size % part_bytes else [])
    if len(sizes) > MAX_PARTS:
        raise DeployError(f"{size} bytes", f"make {len(sizes)} parts of {part_bytes} bytes, more than the "
                                           f"program reads ({MAX_PARTS})")
    return sizes


def split_into_parts(source, out_dir, name, part_bytes):
    """Write `source` as parts of `name` under `out_dir`; returns {part name: path}, in order."""
    source, out_dir = Path(source), Path(out_dir)
    sizes = part_sizes(source.stat().st_size, part_bytes)
    written = {}
    with open(source, "rb") as whole:
        for index, size in enumerate(sizes):
            path = out_dir / part_name(name, index)
            with atomic_writer(path) as out:
                left = size
                while left:
                    block = whole.read(min(COPY_CHUNK, left))
                    if not block:
                        raise DeployError(source, "changed while it was split into parts")
                    out.write(block)
                    left -= len(block)
            written[path.name] = path
    return written


def model_files(profile, name, path):
    """{name on the target: path} of a model: itself, or its parts (made beside it, reused while unchanged) when it
    is larger than the target's largest file."""
    path, largest = Path(path), largest_part(profile)
    if largest is None or path.stat().st_size <= largest:
        return {name: path}
    folder = path.parent / f"{path.name}.parts"
    stamp, wanted = folder / ".source", f"{path.stat().st_size} {path.stat().st_mtime_ns} {largest}"
    if stamp.exists() and stamp.read_text() == wanted:
        return {part_name(name, i): folder / part_name(name, i)
                for i in range(len(part_sizes(path.stat().st_size, largest)))}
    made = split_into_parts(path, folder, name, largest)
    stamp.write_text(wanted)
    return made
