"""The Chaos Toolkit extension: vaultdr's faults as actions, its checks as probes.

``chaos discover vaultdr`` finds the activities in :mod:`vaultdr.chaos.actions`
and :mod:`vaultdr.chaos.probes`; :mod:`vaultdr.chaos.control` stops the drill's
instruments at the end of a run, rolls back any fault still in force and adds
the measurements to the journal. Experiments that use them are in ``drills/``.
"""
