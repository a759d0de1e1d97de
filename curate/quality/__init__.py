"""Helpers of the `quality` stage (curate/stages/quality.py), one concern per module.

markers.py   transcript / chat-template markers leaked into replies and prompt turns
pii.py       personal data: e-mail, phone, Chinese resident ID, bank card, IP address (find, redact)
tokens.py    token lengths against the training tokenizer (and its chat template), from a path or a train preset
lengths.py   length bias: how often the chosen reply is the longer one, per source and language

Each module has a cheap Polars prefilter (a regex that every true hit matches) and a precise Python check that
runs only on the rows the prefilter lets through, so the stage streams at Polars speed on clean data while the
checks themselves can use lookarounds, context and checksums that a Rust regex can't express.
"""
