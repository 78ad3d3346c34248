"""A fake objective for registry tests: the Protocol's members, a declaration, no loss."""

from __future__ import annotations

from typing import ClassVar

from omniopd.objectives import Needs


class Declared:
    """Implements omniopd.objectives.Objective; `declaring` sets its `needs`."""

    needs: ClassVar[Needs] = Needs()

    def rows(self, example, tokenizer):
        return []

    def micro_loss(self, models, rows, s):
        raise AssertionError("a fake objective is never trained")

    def metrics(self, st, norm, beta):
        raise AssertionError("a fake objective is never trained")


def declaring(**needs) -> type[Declared]:
    """A fresh fake objective class declaring Needs(**needs)."""
    return type("Fake", (Declared,), {"needs": Needs(**needs)})
