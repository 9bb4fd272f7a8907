"""Adapters to AWS and Postgres: the only code that talks to Postgres, DynamoDB, SQS,
Secrets Manager and CloudFormation.

Each implements Protocols of :mod:`esl_sync.ports` with the values of
:mod:`esl_sync.records`; :mod:`esl_sync.runtime` builds them. Nothing here imports the
logic or the Clover and Hipoink clients.
"""
