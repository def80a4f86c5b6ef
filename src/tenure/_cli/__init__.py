"""The ``tenure`` command line, one module per command group.

``main`` holds the group and the entry point (:func:`tenure._cli.main.run`, exposed
as :mod:`tenure.cli`); ``params`` what the commands take (durations, sizes, which
database); ``output`` how they print (tables that fit, ``--json``); the rest one
command or group each: ``worker``, ``db``, ``status``, ``tasks``, ``queues``,
``workers``, ``prune``, ``dashboard``. A command module imports ``params`` and
``output``, never ``main`` or another command's module, except that ``status``
borrows the workers table's columns from ``workers``. No module here knows SQL: the
commands read through :class:`tenure.client.Client` and its store.
"""
