"""The kube environments (``--env kind``, ``--env eks``): the stack on a real cluster.

``env`` is the Environment (faults, status, clients), ``deploy`` is ``up``/``down``,
``agents`` the in-cluster agents, ``commands`` their CLI; ``api`` is the only module
that imports ``kubernetes``.
"""
