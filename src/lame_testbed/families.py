"""Task families of the digits benchmark that one forward pass can learn: shallow rules over digit images.

The arithmetic levels (:mod:`lame_testbed.digits`) chain operations; a model of fixed depth answers
them in one pass only as far as its layers reach. The families here need one read of the image(s) and
one choice the instruction makes, so a single pass can compute them once fine-tuning has taught the
rule. The shipped reference VLM was never taught any of them (its pretraining covers captions and the
arithmetic levels only). Each family's rule is drawn uniformly from its variants, so neither the images
alone nor the instruction alone gives the answer:

* ``parity`` (one image): "If this digit is even, the answer is 3; otherwise it is 7." Two different
  digits named by the instruction, the image decides which.
* ``pick`` (two images): "Find the second digit plus 1." The first or the second digit, with or
  without adding 1 (mod 10).
* ``position`` (four images of four different digits): "Find the third of the four digits."

``image_only_ceiling`` is the accuracy of the best guess of the answer from all the query's digits
without the instruction, ``text_only_ceiling`` the same from the instruction without the images (both
exact, digits and rules uniform).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # the answers' words
ORDINALS = ("first", "second", "third", "fourth")


@dataclass(frozen=True)
class Family:
    """A task family: how many images a query shows, the variants of its rule (each stored as a
    record's ``rule``) and, in subclasses, the answer, the instruction and the worked steps."""

    name: str
    images: int
    variants: tuple[tuple, ...]
    example: str  # an instruction, for the benchmark's README
    distinct_digits: bool = False  # a query's images show different digits

    def answer(self, rule: Sequence, digits: Sequence[int]) -> int:
        digits = [int(d) for d in digits]
        if len(digits) != self.images:
            raise ValueError(f"{self.name} queries show {self.images} image(s), got {len(digits)}")
        return self._answer(tuple(rule), digits)

    def _answer(self, rule: tuple, digits: list[int]) -> int:
        raise NotImplementedError

    def phrase(self, rule: Sequence) -> str:
        """The instruction's rule, without what kind of target to find."""
        raise NotImplementedError

    def steps(self, rule: Sequence, digits: Sequence[int]) -> list[str]:
        raise NotImplementedError

    def rationale(self, rule: Sequence, digits: Sequence[int]) -> str:
        """The worked steps, ending with "The answer is <word>." as the arithmetic levels' do."""
        shown = (f"The image shows {digits[0]}." if self.images == 1
                 else f"The images show {', '.join(str(d) for d in digits)}.")
        answer = self.answer(rule, digits)
        return " ".join([shown, *self.steps(rule, digits), f"The answer is {NUMBER_WORDS[answer]}."])

    def sample_rule(self, rng: np.random.Generator) -> tuple:
        return self.variants[int(rng.integers(len(self.variants)))]

    def digit_tuples(self) -> list[tuple[int, ...]]:
        """Every digit combination a query can show (all equally likely)."""
        combos = itertools.product(range(10), repeat=self.images)
        return [c for c in combos if len(set(c)) == len(c)] if self.distinct_digits else list(combos)

    def image_only_ceiling(self) -> float:
        """Accuracy of the best guess of the answer from the query's digits alone (no instruction)."""
        best = []
        for digits in self.digit_tuples():
            counts = np.bincount([self._answer(rule, list(digits)) for rule in self.variants], minlength=10)
            best.append(counts.max() / len(self.variants))
        return float(np.mean(best))

    def text_only_ceiling(self) -> float:
        """Accuracy of the best guess of the answer from the instruction alone (no images)."""
        best = []
        combos = self.digit_tuples()
        for rule in self.variants:
            counts = np.bincount([self._answer(rule, list(digits)) for digits in combos], minlength=10)
            best.append(counts.max() / len(combos))
        return float(np.mean(best))


class Parity(Family):
    def _answer(self, rule, digits):
        if_even, if_odd = rule
        return if_even if digits[0] % 2 == 0 else if_odd

    def phrase(self, rule):
        return f"If this digit is even, the answer is {rule[0]}; otherwise it is {rule[1]}."

    def steps(self, rule, digits):
        kind = "even" if digits[0] % 2 == 0 else "odd"
        return [f"{digits[0]} is {kind}, so the answer is {self.answer(rule, digits)}."]


class Pick(Family):
    def _answer(self, rule, digits):
        which, plus = rule
        return (digits[ORDINALS.index(which)] + plus) % 10

    def phrase(self, rule):
        return f"Find the {rule[0]} digit" + (f" plus {rule[1]}." if rule[1] else ".")

    def steps(self, rule, digits):
        chosen = digits[ORDINALS.index(rule[0])]
        return [f"The {rule[0]} is {chosen}."] + ([f"{chosen} plus {rule[1]} is {self.answer(rule, digits)}."]
                                                 if rule[1] else [])


class Position(Family):
    def _answer(self, rule, digits):
        return digits[ORDINALS.index(rule[0])]

    def phrase(self, rule):
        return f"Find the {rule[0]} of the four digits."

    def steps(self, rule, digits):
        return [f"The {rule[0]} is {self.answer(rule, digits)}."]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Parity("parity", 1, tuple((a, b) for a in range(10) for b in range(10) if a != b),
           "If this digit is even, the answer is 3; otherwise it is 7. Find an image of the result."),
    Pick("pick", 2, tuple((which, plus) for which in ORDINALS[:2] for plus in (0, 1)),
         "Find the second digit plus 1. Write the result as a word."),
    Position("position", 4, tuple((which,) for which in ORDINALS),
             "Find the third of the four digits. Find an image of the result.", distinct_digits=True),
)}
