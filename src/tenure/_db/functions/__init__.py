"""Every SQL function tenure runs, one file per concern.

The numbered files (``10_fairness.sql`` ... ``70_status.sql``) are applied in the order
of their names, as one text hashed as one unit (``sqlfiles.functions_sql``): editing any
of them re-applies them all.
"""
