SELECT queue, promoted FROM {schema}.promote_due(%(max)s)
