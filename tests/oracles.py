"""Oracle Makers for tests, importable by path as ``oracles.<Name>``."""

from dataclasses import dataclass

from atomate2.ase.jobs import EmtRelaxMaker


@dataclass
class OddCellsFailEmtRelaxMaker(EmtRelaxMaker):
    """EMT relaxation that fails on every cell with an odd number of atoms."""

    name: str = "flaky EMT relaxation"

    def run_ase(self, mol_or_struct, prev_dir=None):
        if len(mol_or_struct) % 2:
            raise RuntimeError("simulated oracle failure (odd cell)")
        return super().run_ase(mol_or_struct, prev_dir=prev_dir)


@dataclass
class AlwaysFailMaker(EmtRelaxMaker):
    """An oracle that never answers."""

    name: str = "broken oracle"

    def run_ase(self, mol_or_struct, prev_dir=None):
        raise RuntimeError("simulated oracle failure")
