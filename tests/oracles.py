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


@dataclass
class InterruptingEmtMaker(EmtRelaxMaker):
    """EMT single points that stop the whole run (like Ctrl-C) on the call numbered
    ``INTERRUPT_AT`` (counted over the process in ``CALLS``)."""

    name: str = "interrupting EMT"
    steps: int = 1
    relax_cell: bool = False

    def run_ase(self, mol_or_struct, prev_dir=None):
        CALLS.append(len(mol_or_struct))
        if len(CALLS) == INTERRUPT_AT[0]:
            raise KeyboardInterrupt("simulated interruption of the run")
        return super().run_ase(mol_or_struct, prev_dir=prev_dir)


CALLS: list[int] = []
INTERRUPT_AT = [0]


@dataclass
class KillOnceEmtRelaxMaker(EmtRelaxMaker):
    """EMT relaxation whose process kills itself (SIGKILL) on its first call of a run
    in which the file named by ``$ALCAMPAIGN_TEST_KILL_FLAG`` does not exist yet."""

    name: str = "EMT relaxation that kills its worker once"

    def run_ase(self, mol_or_struct, prev_dir=None):
        import os
        import signal
        from pathlib import Path

        flag = os.environ.get("ALCAMPAIGN_TEST_KILL_FLAG")
        if flag and not Path(flag).exists():
            Path(flag).write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().run_ase(mol_or_struct, prev_dir=prev_dir)
