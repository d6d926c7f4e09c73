"""Task families of the digits benchmark that one forward pass can learn: shallow keyed rules.

The arithmetic levels (:mod:`lame_testbed.digits`) chain operations; a model of fixed depth answers
them in one pass only as far as its layers reach. The families here are lookups instead - a digit read
from the image(s), then a table chosen by the instruction - so a single pass can compute them once it
has learnt the tables. The shipped reference VLM was never taught any of them (its pretraining covers
captions and the arithmetic levels only). Each family's rule is drawn uniformly from its variants, so
the instruction decides the answer: the best guess from the image alone is well below the ceiling.

* ``cipher`` (one image): "Encode this digit with the amber key." Four named keys, each a fixed
  permutation of 0-9; for every digit the four keys give four different answers.
* ``keypad`` (one image): "On a phone keypad, move one key up from this digit." Rows 1 2 3 / 4 5 6 /
  7 8 9 and 0 under 8; a move off an edge wraps around its row or column (0 is alone in its row).
* ``pair`` (two images): "Encode the larger of the two digits with the cobalt key." Larger or smaller,
  then one of two keys of ``cipher``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Four permutations of 0-9, one a key; column by column (digit d) the four values differ.
CIPHER_KEYS: dict[str, tuple[int, ...]] = {
    "amber": (7, 3, 0, 8, 5, 9, 1, 4, 2, 6),
    "cobalt": (2, 8, 5, 1, 9, 0, 6, 3, 7, 4),
    "jade": (4, 0, 9, 6, 1, 3, 8, 2, 5, 7),
    "ruby": (9, 6, 3, 4, 7, 2, 0, 5, 8, 1),
}
PAIR_KEYS = ("amber", "cobalt")
PAIR_PICKS = ("larger", "smaller")

# (row, column) of each key on a phone keypad; 0 sits under 8.
_KEYPAD = {1: (0, 0), 2: (0, 1), 3: (0, 2), 4: (1, 0), 5: (1, 1), 6: (1, 2), 7: (2, 0), 8: (2, 1), 9: (2, 2),
           0: (3, 1)}
KEYPAD_MOVES = ("up", "down", "left", "right")
_MOVE_PHRASE = {"up": "move one key up", "down": "move one key down", "left": "move one key left",
                "right": "move one key right"}


def keypad_move(digit: int, move: str) -> int:
    """The key one step ``move`` from ``digit``, wrapping around the row or column it leaves."""
    row, column = _KEYPAD[digit]
    if move in ("left", "right"):
        line = sorted((c, d) for d, (r, c) in _KEYPAD.items() if r == row)
        keys = [d for _, d in line]
        step = 1 if move == "right" else -1
    else:
        line = sorted((r, d) for d, (r, c) in _KEYPAD.items() if c == column)
        keys = [d for _, d in line]
        step = 1 if move == "down" else -1
    return keys[(keys.index(digit) + step) % len(keys)]


@dataclass(frozen=True)
class Family:
    """A task family: how many images a query shows and the variants of its rule."""

    name: str
    images: int
    variants: tuple[tuple[str, ...], ...]  # each a rule, as stored in a record's "rule"

    def answer(self, rule: Sequence[str], digits: Sequence[int]) -> int:
        digits = [int(d) for d in digits]
        if len(digits) != self.images:
            raise ValueError(f"{self.name} queries show {self.images} image(s), got {len(digits)}")
        if self.name == "cipher":
            return CIPHER_KEYS[rule[0]][digits[0]]
        if self.name == "keypad":
            return keypad_move(digits[0], rule[0])
        pick, key = rule
        chosen = max(digits) if pick == "larger" else min(digits)
        return CIPHER_KEYS[key][chosen]

    def phrase(self, rule: Sequence[str]) -> str:
        """The instruction's rule, without what kind of target to find."""
        if self.name == "cipher":
            return f"Encode this digit with the {rule[0]} key."
        if self.name == "keypad":
            return f"On a phone keypad, {_MOVE_PHRASE[rule[0]]} from this digit."
        return f"Encode the {rule[0]} of the two digits with the {rule[1]} key."

    def rationale(self, rule: Sequence[str], digits: Sequence[int]) -> str:
        """The worked steps, ending with "The answer is <word>." as the arithmetic levels' do."""
        from .digits import NUMBER_WORDS

        answer = self.answer(rule, digits)
        if self.name == "cipher":
            steps = [f"The image shows {digits[0]}.", f"The {rule[0]} key maps {digits[0]} to {answer}."]
        elif self.name == "keypad":
            steps = [f"The image shows {digits[0]}.", f"One key {rule[0]} from {digits[0]} is {answer}."]
        else:
            chosen = max(digits) if rule[0] == "larger" else min(digits)
            steps = [f"The first image shows {digits[0]} and the second shows {digits[1]}.",
                     f"The {rule[0]} is {chosen}.", f"The {rule[1]} key maps {chosen} to {answer}."]
        return " ".join(steps + [f"The answer is {NUMBER_WORDS[answer]}."])

    def sample_rule(self, rng: np.random.Generator) -> tuple[str, ...]:
        return self.variants[int(rng.integers(len(self.variants)))]

    def answer_given_digit(self) -> np.ndarray:
        """Exact P(answer | first image's digit) (10x10), rules uniform, a second digit uniform."""
        table = np.zeros((10, 10))
        seconds = range(10) if self.images == 2 else [None]
        for d in range(10):
            for rule in self.variants:
                for b in seconds:
                    digits = [d] if b is None else [d, b]
                    table[d, self.answer(rule, digits)] += 1.0 / len(self.variants) / len(seconds)
        return table

    def image_only_ceiling(self) -> float:
        """Accuracy of the best guess of the answer from the first image's digit alone (digits uniform)."""
        return float(self.answer_given_digit().max(axis=1).mean())


FAMILIES: dict[str, Family] = {
    "cipher": Family("cipher", 1, tuple((key,) for key in CIPHER_KEYS)),
    "keypad": Family("keypad", 1, tuple((move,) for move in KEYPAD_MOVES)),
    "pair": Family("pair", 2, tuple((pick, key) for pick in PAIR_PICKS for key in PAIR_KEYS)),
}
