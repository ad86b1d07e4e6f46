"""Billing by step for operators: the price book, monthly minimums and invoices (docs/billing.md).

Every rule lives in the database (db/functions/40_billing/); this package only calls
it and renders its answers.
"""
