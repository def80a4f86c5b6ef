"""Every SQL function tenure runs, one file per concern.

The numbered files (``10_fairness.sql`` ... ``70_status.sql``) are applied in the order
of their names, as one text hashed as one unit (``sqlfiles.functions_sql``): editing any
of them re-applies them all. An unnumbered file is a part: one statement that the
numbered files name as ``{<its name>}`` where it runs, filled in when the text is
loaded (``finish_ended.sql``, the move of ended rows to ``finished_tasks``).
"""
