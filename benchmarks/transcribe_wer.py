"""Word error rate of ``transcribe`` on the example speech — a pipeline check, not a quality figure.

    python -m benchmarks.transcribe_wer CHECKPOINT [--audio examples/speech.ogg]

Runs the same code as ``gemma4 transcribe`` (blocks, one request each, stitched text) and scores the
text against what espeak-ng was told to say. A random checkpoint cannot transcribe (its WER is ~1 or
more); the figure only shows the pipeline runs end to end and the scoring works.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from mlx_gemma4 import GenerationRequest, load
from mlx_gemma4.jobs.transcribe import TranscribeJob

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REFERENCE = "The red bar for March is the highest. Sales doubled between January and March."


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(len(ref), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--audio", default=str(EXAMPLES / "speech.ogg"))
    ap.add_argument("--max-tokens", type=int, default=40)
    args = ap.parse_args()
    model, processor = load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        job = TranscribeJob([args.audio], Path(tmp) / "t.txt", "txt")
        summary = job.run(model, processor, GenerationRequest(max_tokens=args.max_tokens, temperature=0.0))
        job.finish(summary)
        text = (Path(tmp) / "t.txt").read_text()
    print(f"reference:  {REFERENCE}\nhypothesis: {text.strip()}\nWER: {wer(REFERENCE, text):.2f}")


if __name__ == "__main__":
    main()
