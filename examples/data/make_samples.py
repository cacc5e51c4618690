"""Writes the sample data sets of examples/data (deterministic: fixed seeds).

reverse/: words of a-e (1 to 5 letters) and their reversal, for a RepeatVector decoder:
  train.tsv (input<TAB>target, 600 lines) and valid.csv (input,target, 100 rows).
vowels/: lower-case words and a tag per letter (v = vowel, c = consonant), for a tagger:
  train.jsonl (400 lines) and valid.jsonl (80 lines).

Run from the repository root: python3 examples/data/make_samples.py
"""

import json
import random


def reverse(path_train, path_valid):
    rng = random.Random(1)
    words = lambda n: ["".join(rng.choice("abcde") for _ in range(rng.randint(1, 5))) for _ in range(n)]
    with open(path_train, "w") as f:
        for w in words(600):
            f.write(f"{w}\t{w[::-1]}\n")
    with open(path_valid, "w") as f:
        f.write("input,target\n")
        for w in words(100):
            f.write(f"{w},{w[::-1]}\n")


def vowels(path_train, path_valid):
    rng = random.Random(2)
    letters = "abcdefghijklmnopqrstuvwxyz"

    def rows(n):
        for _ in range(n):
            w = "".join(rng.choice(letters) for _ in range(rng.randint(2, 9)))
            yield {"input": w, "target": "".join("v" if c in "aeiou" else "c" for c in w)}

    for path, n in [(path_train, 400), (path_valid, 80)]:
        with open(path, "w") as f:
            for row in rows(n):
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    import os

    os.makedirs("examples/data/reverse", exist_ok=True)
    os.makedirs("examples/data/vowels", exist_ok=True)
    reverse("examples/data/reverse/train.tsv", "examples/data/reverse/valid.csv")
    vowels("examples/data/vowels/train.jsonl", "examples/data/vowels/valid.jsonl")
