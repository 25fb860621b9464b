"""JEDI's data management on this machine: no storage, so freezing and closing datasets just succeed
(without this JEDI leaves tasks in 'prepared')."""

from pandajedi.jediddm.GenDDMClient import GenDDMClient


class LocalDDMClient(GenDDMClient):
    def freezeDataset(self, *args, **kwargs):
        return self.SC_SUCCEEDED, True

    def closeDataset(self, *args, **kwargs):
        return self.SC_SUCCEEDED, True
