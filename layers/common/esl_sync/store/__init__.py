"""Data access: the only code that talks to Postgres, DynamoDB, SQS and Secrets Manager.

Logic in ``esl_sync.sync`` depends on the protocols in :mod:`esl_sync.store.interfaces`;
the modules here implement them.
"""
