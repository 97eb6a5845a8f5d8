"""The model catalog: the bundled model and the public llama2.c models, by name; and fetching them.

Everywhere a task takes --model (and --tokenizer), a catalog name or a path will do.
"""

import dataclasses
import difflib
import os
import urllib.error
import urllib.request
from pathlib import Path

from deploy.atomic import partial_name
from deploy.checkpoint import Config, Header, expected_size
from deploy.errors import DeployError
from deploy.profile import ROOT
from deploy.synth import SHAPES

MODELS_DIR = ROOT / "models"
SHARED_MODELS = ROOT.parent / "shared" / "models"
TINYLLAMAS = "https://huggingface.co/karpathy/tinyllamas/resolve/main"
LLAMA2_TOKENIZER = "llama2-tokenizer.bin"


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    name: str
    shape: object  # Config
    file: str  # file name under models/
    tokenizer: str  # tokenizer file name under models/ (or ../shared/models/)
    source: str
    url: str = ""
    tokenizer_url: str = ""
    version: int = 0
    note: str = ""

    @property
    def size(self):
        return expected_size(Header(self.version, "little", self.shape))


LLAMA2_7B = Config(4096, 11008, 32, 32, 32, 32000, 4096, shared_classifier=False)
CATALOG = {entry.name: entry for entry in [
    CatalogEntry("tiny260k", SHAPES["stories260K"], "tiny260k.bin", "tiny260k-tok.bin",
                 "trained by this project (training/train.py) on its own story grammar; bundled"),
    CatalogEntry("tiny260k-ternary", SHAPES["stories260K"], "tiny260k-ternary.bin", "tiny260k-tok.bin",
                 "tiny260k with ternary (BitNet b1.58) layer matrices, quantization-aware training "
                 "(training/train_ternary.py); bundled", version=3),
    CatalogEntry("stories260K", SHAPES["stories260K"], "stories260K.bin", "tok512.bin",
                 "Andrej Karpathy, tinyllamas (TinyStories)", f"{TINYLLAMAS}/stories260K/stories260K.bin",
                 f"{TINYLLAMAS}/stories260K/tok512.bin"),
    CatalogEntry("stories15M", SHAPES["stories15M"], "stories15M.bin", LLAMA2_TOKENIZER,
                 "Andrej Karpathy, tinyllamas (TinyStories)", f"{TINYLLAMAS}/stories15M.bin"),
    CatalogEntry("stories42M", SHAPES["stories42M"], "stories42M.bin", LLAMA2_TOKENIZER,
                 "Andrej Karpathy, tinyllamas (TinyStories)", f"{TINYLLAMAS}/stories42M.bin"),
    CatalogEntry("stories110M", SHAPES["stories110M"], "stories110M.bin", LLAMA2_TOKENIZER,
                 "Andrej Karpathy, tinyllamas (TinyStories)", f"{TINYLLAMAS}/stories110M.bin"),
    CatalogEntry("llama2-7b", LLAMA2_7B, "llama2_7b.bin", LLAMA2_TOKENIZER,
                 "Meta Llama 2 7B, exported with llama2.c's export.py (needs Meta's licence; no public file)",
                 note="export it yourself: python export.py llama2_7b.bin --meta-llama path/to/llama/model/7B"),
]}


def find_file(file_name):
    """The file in models/ or in ../shared/models/, or None."""
    for folder in (MODELS_DIR, SHARED_MODELS):
        if (folder / file_name).exists():
            return folder / file_name
    return None


def model_path(model):
    """The checkpoint for a catalog name or a path (no tokenizer needed)."""
    entry = CATALOG.get(str(model))
    return _downloaded(entry) if entry is not None else _existing(model, "model")


def resolve(model, tokenizer=None):
    """(model path, tokenizer path), each a catalog name or a path; a catalog model brings its own tokenizer."""
    path = model_path(model)
    if tokenizer is not None:
        entry = CATALOG.get(str(tokenizer))
        return path, _catalog_tokenizer(entry) if entry is not None else _existing(tokenizer, "tokenizer")
    entry = CATALOG.get(str(model))
    if entry is None:
        raise DeployError(model, "--tokenizer is needed with a model given as a path")
    return path, _catalog_tokenizer(entry)


def _downloaded(entry):
    path = find_file(entry.file)
    if path is None:
        hint = f"invoke models.fetch {entry.name}" if entry.url else entry.note
        raise DeployError(entry.name, f"not downloaded yet ({entry.size / 1e6:,.1f} MB): {hint}")
    return path


def _catalog_tokenizer(entry):
    path = find_file(entry.tokenizer)
    if path is None:
        raise DeployError(entry.name, f"tokenizer {entry.tokenizer} not found; invoke models.fetch {entry.name}")
    return path


def _existing(name, what):
    """`name` as a path that exists, or one line naming the catalog entry it was probably meant to be."""
    path = Path(name)
    if path.exists():
        return path
    near = [entry for entry in CATALOG if entry.lower() == str(name).lower()]
    near = near or difflib.get_close_matches(str(name), list(CATALOG), n=1, cutoff=0.8)
    if near:
        raise DeployError(f"unknown {what} '{name}'; did you mean {near[0]}?")
    raise DeployError(name, f"No such file or directory, and not a catalog name (known: {', '.join(CATALOG)})")


def fetch(name, progress=None, folder=None, opener=urllib.request.urlopen):
    """Download a catalog model (and its tokenizer) with resume and a size check; returns the model's path."""
    entry = CATALOG.get(name)
    if entry is None:
        raise DeployError(f"unknown model '{name}' (known: {', '.join(CATALOG)})")
    if not entry.url:
        raise DeployError(name, f"has no public download: {entry.note or entry.source}")
    folder = Path(folder or MODELS_DIR)
    path = download(entry.url, folder / entry.file, entry.size, progress, opener)
    if entry.tokenizer_url and not (folder / entry.tokenizer).exists():
        download(entry.tokenizer_url, folder / entry.tokenizer, None, progress, opener)
    return path


def download(url, dest, size=None, progress=None, opener=urllib.request.urlopen, chunk=1 << 20):
    """Fetch `url` into `dest` through a .part file, resuming it with a Range request; checks the final size."""
    dest = Path(dest)
    if dest.exists() and (size is None or dest.stat().st_size == size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_name(dest)
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = opener(request, timeout=30)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DeployError(url, f"cannot download ({reason}); fetch it on a machine with network access and put it "
                               f"at {dest}") from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        total = size or (have + int(response.headers.get("Content-Length") or 0)) or None
        with open(part, "ab" if have else "wb") as out:
            done = have
            while block := response.read(chunk):
                out.write(block)
                done += len(block)
                if progress:
                    progress(dest.name, done, total)
    actual = part.stat().st_size
    if size is not None and actual != size:
        raise DeployError(dest, f"download ended at {actual:,} bytes, expected {size:,}; run the fetch again to "
                                f"resume")
    os.replace(part, dest)
    return dest

